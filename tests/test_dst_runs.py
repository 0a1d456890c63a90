"""Real runs across every 2026 DST change of five zones: the daemon's runs, not the preview (issue 15).

How time is faked, and why: the real daemon (``koku.daemon.lifecycle.Daemon``: config, pid lock,
socket, scheduler and saver greenlets, real ``/bin/sh`` children) runs in a subprocess on a
``SteppedClock`` (tests/stepped_daemon.py), the injectable clock every wait of the daemon goes
through. libfaketime was the other choice; it is not thread-safe, and gevent's threadpool (state
saves) reading the clock gave false jumps, and hours of schedule would take hours or a time-scaling
factor whose rounding shows up as late runs. With the stepped clock the daemon waits exactly as it
would, hours pass in milliseconds, and a run's recorded start is the fake-clock instant it started at.

What is compared: each run's ``KOKU_SCHEDULED_TIME`` (written by the child itself) and its start on
the daemon's clock (its record in state.json) against the README's rules, computed here
independently of koku's schedule code by a brute-force walk over UTC instants with zoneinfo:
- wildcard jobs run at every instant whose wall time matches (both passes of a repeated hour; walls
  in a gap do not exist, so they do not run);
- fixed-time jobs run at a matching wall time that is not repeated, or in the first pass of a
  repeated one, plus once at the first instant after a gap that swallowed any of their walls.
Every expected instant gets exactly one run started within a second of it, and nothing else runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

UTC = timezone.utc
DRIVER = Path(__file__).with_name("stepped_daemon.py")
ZONES = ["America/New_York", "Europe/London", "Europe/Berlin", "Australia/Lord_Howe", "America/Santiago"]
JOBS = {
    "h00": "0 * * * *",
    "h30": "30 * * * *",
    "m30": "*/30 * * * *",
    "m20h1": "*/20 1 * * *",
    "m15": "*/15 * * * *",
    "hourly": "@hourly",
    "h2": "0 */2 * * *",
    "m10h2": "*/10 2 * * *",
    "sec": "30 */15 * * * *",  # seconds field: second 30 of every 15th minute
    "f0030": "30 0 * * *",
    "f0130": "30 1 * * *",
    "f0145": "45 1 * * *",
    "f0200": "0 2 * * *",
    "f0215": "15 2 * * *",
    "f0230": "30 2 * * *",
    "f2330": "30 23 * * *",
    "fsec": "15 20 1 * * *",  # fixed time with seconds: 01:20:15
}


# ----------------------------------------------------------------- the rules, computed independently

def _field(text: str, lo: int, hi: int) -> set[int]:
    """The cron field syntax these jobs use: *, */n, n, a,b."""
    values: set[int] = set()
    for part in text.split(","):
        if part == "*":
            values.update(range(lo, hi + 1))
        elif part.startswith("*/"):
            values.update(range(lo, hi + 1, int(part[2:])))
        else:
            values.add(int(part))
    return values


def _parse(expr: str) -> tuple[set[int], set[int], set[int], bool]:
    fields = {"@hourly": "0 * * * *"}.get(expr, expr).split()
    if len(fields) == 5:
        fields = ["0"] + fields
    sec, minute, hour = fields[:3]
    wildcard = minute.startswith("*") or hour.startswith("*")  # the README's definition
    return _field(sec, 0, 59), _field(minute, 0, 59), _field(hour, 0, 23), wildcard


def _transitions(tz: ZoneInfo, start: datetime, end: datetime) -> list[tuple[datetime, timedelta, timedelta]]:
    """(instant, offset before, offset after) of each offset change in [start, end], to the minute."""
    found = []
    t = start.replace(second=0, microsecond=0)  # these zones change on whole minutes
    while t < end:
        a, b = t.astimezone(tz).utcoffset(), (t + timedelta(minutes=1)).astimezone(tz).utcoffset()
        if a != b:
            found.append((t + timedelta(minutes=1), a, b))
        t += timedelta(minutes=1)
    return found


def expected_runs(expr: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """Instants in (start, end) at which the README's rules run ``expr`` in ``zone``."""
    tz = ZoneInfo(zone)
    secs, mins, hours, wildcard = _parse(expr)
    runs: set[datetime] = set()
    minute = start.replace(second=0, microsecond=0)
    while minute < end:
        for s in secs:
            instant = minute + timedelta(seconds=s)
            if not start < instant < end:
                continue
            local = instant.astimezone(tz)
            if local.hour not in hours or local.minute not in mins:
                continue
            repeated = local.replace(fold=1 - local.fold).utcoffset() != local.utcoffset()
            if wildcard or not repeated or local.fold == 0:
                runs.add(instant)
        minute += timedelta(minutes=1)
    if not wildcard:
        for instant, before, after in _transitions(tz, start - timedelta(minutes=1), end):
            if after <= before or not start < instant < end:
                continue
            # the gap: walls from the old offset's reading of the change to the new one's
            wall = (instant + before).replace(tzinfo=None)
            stop = (instant + after).replace(tzinfo=None)
            while wall < stop:
                if wall.hour in hours and wall.minute in mins and wall.second in secs:
                    runs.add(instant)
                    break
                wall += timedelta(seconds=1)
    return sorted(runs)


def test_the_independent_rules_match_the_readme_examples():
    # README: `*/30 * * * *` in New York runs at 01:00 and 01:30 EDT, then at 01:00 and 01:30 EST;
    # `30 2 * * *` runs at 03:00 EDT on 2026-03-08; a fixed-time run in a repeat runs at the first only.
    ny = "America/New_York"
    fall = datetime(2026, 11, 1, 4, 59, tzinfo=UTC), datetime(2026, 11, 1, 7, 1, tzinfo=UTC)
    assert [t.strftime("%H:%M") for t in expected_runs("*/30 * * * *", ny, *fall)] == [
        "05:00", "05:30", "06:00", "06:30", "07:00"]
    assert [t.strftime("%H:%M") for t in expected_runs("30 1 * * *", ny, *fall)] == ["05:30"]
    spring = datetime(2026, 3, 8, 5, 0, tzinfo=UTC), datetime(2026, 3, 8, 9, 0, tzinfo=UTC)
    assert expected_runs("30 2 * * *", ny, *spring) == [datetime(2026, 3, 8, 7, 0, tzinfo=UTC)]
    assert [t.strftime("%H:%M") for t in expected_runs("*/30 2 * * *", ny, *spring)] == []


# ----------------------------------------------------------------- the daemon

def _windows() -> list[tuple[str, datetime, str]]:
    out = []
    year = datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    for zone in ZONES:
        tz = ZoneInfo(zone)
        # coarse scan for the year's changes, then to the minute
        t = year[0]
        while t < year[1]:
            nxt = t + timedelta(hours=6)
            if t.astimezone(tz).utcoffset() != nxt.astimezone(tz).utcoffset():
                (instant, before, after), = _transitions(tz, t, nxt)
                out.append((zone, instant, "fall-back" if after < before else "spring-forward"))
            t = nxt
    return out


WINDOWS = _windows()


def test_every_zone_has_both_changes_in_2026():
    kinds = {(zone, kind) for zone, _, kind in WINDOWS}
    assert kinds == {(z, k) for z in ZONES for k in ("fall-back", "spring-forward")}


def _config(zone: str, work: Path) -> str:
    lines = ["[daemon]", "history = 1000", ""]
    for name, cron in JOBS.items():
        lines += ["[[job]]", f'name = "{name}"', f'cron = "{cron}"', f'tz = "{zone}"', f'dir = "{work}"',
                  'command = \'printf "%s %s %s\\n" "$KOKU_JOB" "$KOKU_RUN_ID" "$KOKU_SCHEDULED_TIME" >> runs.txt\'',
                  ""]
    return "\n".join(lines)


@pytest.mark.parametrize("zone, change, kind", WINDOWS,
                         ids=[f"{z.split('/')[1]}-{k}" for z, _, k in WINDOWS])
def test_real_runs_across_dst_change_follow_the_readme_rules(tmp_path, zone, change, kind):
    # From 3 h before the change to 4 h after it (local hours 1 and 2 on both sides, in every zone);
    # 7 s past the minute, so that no run falls on either end.
    start = change - timedelta(hours=3) + timedelta(seconds=7)
    end = change + timedelta(hours=4) + timedelta(seconds=7)
    work = tmp_path / "work"
    work.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(_config(zone, work))
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOKU_")}
    env["HOME"] = str(tmp_path)
    proc = subprocess.run([sys.executable, str(DRIVER), str(config), str(state), start.isoformat(), end.isoformat()],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["result"] == 0 and summary["now"] == end.isoformat()

    children: dict[tuple[str, int], str] = {}
    for line in (work / "runs.txt").read_text().splitlines():
        job, run, scheduled = line.split(" ")
        assert (job, int(run)) not in children, f"run {job} {run} reported twice"
        children[(job, int(run))] = scheduled
    jobs = json.loads((state / "state.json").read_text())["jobs"]

    problems = []
    for name, cron in JOBS.items():
        want = expected_runs(cron, zone, start, end)
        records = jobs.get(name, {}).get("history", [])
        got = []
        for r in records:
            scheduled = datetime.fromisoformat(r["scheduled"])
            started = datetime.fromisoformat(r["started"])
            lag = (started - scheduled).total_seconds()
            if not 0 <= lag < 1:
                problems.append(f"{name}: run {r['run']} scheduled {r['scheduled']} started {r['started']}")
            if children.get((name, r["run"])) != r["scheduled"]:
                problems.append(f"{name}: run {r['run']} child saw KOKU_SCHEDULED_TIME="
                                f"{children.get((name, r['run']))!r}, record says {r['scheduled']}")
            if r["outcome"] != "success":
                problems.append(f"{name}: run {r['run']} {r['outcome']}: {r.get('description')}")
            got.append(scheduled)
        if sorted(got) != want:
            local = lambda ts: [t.astimezone(ZoneInfo(zone)).strftime("%H:%M:%S%z") for t in ts]  # noqa: E731
            missing = sorted(set(want) - set(got))
            extra = sorted(t for t in got if t not in want or got.count(t) > 1)
            problems.append(f"{name} ({cron}): missing {local(missing)}, extra or repeated {local(extra)}")
    assert not problems, f"{zone} {kind} at {change.isoformat()}:\n" + "\n".join(problems)
    assert len(children) == sum(len(j.get("history", [])) for j in jobs.values())
