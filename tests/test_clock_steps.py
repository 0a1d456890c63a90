"""A wall clock stepped backward (issue 11, item 4): cronie's rule, noticed at once.

- Wildcard jobs keep running on the new wall clock; fixed-time jobs are held back so that no slot runs
  twice; a step of more than 3 h is the clock being set, and every job starts afresh (policy tests on
  the fake clock: tests/test_runner.py, test_clock_step_back_*).
- The real daemon on a SteppedClock (tests/stepped_daemon.py) hears of the step from the clock at once
  (as a timerfd tells the real daemon), not at the end of its current wait.
- The real daemon under libfaketime (Debian's ``faketime``), whose clock the test steps back 2 h by
  rewriting the offset file: an every-second job keeps running; a fixed-time slot does not run twice.
- The timerfd itself: armed with TFD_TIMER_CANCEL_ON_SET, quiet until the clock is set. Setting the
  real clock to see it fire would step the clock of a shared machine, so that part is not run here.
"""

from __future__ import annotations

import glob
import json
import os
import select
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import KU, wait_for

UTC = timezone.utc
DRIVER = Path(__file__).with_name("stepped_daemon.py")
LIBFAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
                        + glob.glob("/usr/lib/faketime/libfaketime.so.1")), None)


@pytest.mark.fast
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux's")
def test_clock_watch_arms_a_timerfd_that_only_a_clock_set_wakes():
    from koku.daemon.clockwatch import NEVER, ClockSetWatch

    heard: list[int] = []
    watch = ClockSetWatch(lambda: heard.append(1))
    assert watch.start() is True
    try:
        fd = watch.fd
        assert fd is not None
        # armed for an instant that never comes (absolute, so only a set clock or that date fires it)
        left = watch.armed_for()
        assert left is not None and abs(left - (NEVER - time.time())) < 60
        assert select.select([fd], [], [], 0.05)[0] == []  # not readable: nothing to wake the hub for
        with pytest.raises(BlockingIOError):
            os.read(fd, 8)
        assert heard == []
    finally:
        watch.close()
    assert watch.fd is None
    with pytest.raises(OSError):
        os.fstat(fd)  # closed: a stopped daemon leaves no descriptor behind


@pytest.mark.e2e
def test_stepped_daemon_hears_a_step_back_at_once_and_follows_cronies_rule(tmp_path):
    start = datetime(2026, 5, 1, 12, 0, 0, 500000, tzinfo=UTC)
    jump_at = datetime(2026, 5, 1, 12, 6, 3, tzinfo=UTC)
    end = datetime(2026, 5, 1, 12, 7, 3, tzinfo=UTC)  # wall time after the step back of 10 min
    work = tmp_path / "work"
    work.mkdir()
    jobs = {"tens": "*/10 * * * * *", "minutely": "* * * * *", "fixed": "5 12 * * *"}
    lines = []
    for name, cron in jobs.items():
        lines += ["[[job]]", f'name = "{name}"', f'cron = "{cron}"', 'tz = "UTC"', f'dir = "{work}"',
                  'command = \'echo "$KOKU_JOB $KOKU_SCHEDULED_TIME" >> runs.txt\'', ""]
    config = tmp_path / "config.toml"
    config.write_text("\n".join(lines))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOKU_")}
    env["HOME"] = str(tmp_path)
    proc = subprocess.run([sys.executable, str(DRIVER), str(config), str(tmp_path / "state"), start.isoformat(),
                           end.isoformat(), jump_at.isoformat(), "-600"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs: dict[str, list[str]] = {name: [] for name in jobs}
    for line in (work / "runs.txt").read_text().splitlines():
        name, scheduled = line.split()
        runs[name].append(scheduled[11:19])
    seconds = lambda a, b, step: [  # noqa: E731  wall times a..b inclusive, every `step` seconds
        (datetime(2026, 5, 1, *a) + timedelta(seconds=s)).strftime("%H:%M:%S")
        for s in range(0, int((datetime(2026, 5, 1, *b) - datetime(2026, 5, 1, *a)).total_seconds()) + 1, step)]
    # wildcard: both timelines, the second starting right after the step (11:56:03)
    assert sorted(runs["tens"]) == sorted(seconds((12, 0, 10), (12, 6, 0), 10) + seconds((11, 56, 10), (12, 7, 0), 10))
    assert runs["minutely"] == seconds((12, 1, 0), (12, 6, 0), 60) + seconds((11, 57, 0), (12, 7, 0), 60)
    # fixed-time: 12:05 ran before the step, and the new wall clock passed 12:05 again
    assert runs["fixed"] == ["12:05:00"]
    # heard at the instant of the step, not at the end of the scheduler's wait
    jumped = [line for line in proc.stderr.splitlines() if 'msg="wall clock jumped"' in line]
    assert len(jumped) == 1 and "seconds=-600" in jumped[0] and "now=2026-05-01T11:56:03+00:00" in jumped[0], jumped


def _write_offset(path: Path, seconds: float) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{seconds:+.3f}\n")
    os.replace(tmp, path)  # libfaketime rereads the file on every clock read: never let it see half


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.skipif(LIBFAKETIME is None, reason="libfaketime not installed (Debian: apt-get install faketime)")
def test_libfaketime_step_back_2h_every_second_job_keeps_running_and_no_fixed_slot_runs_twice(kenv):
    """The real ``ku daemon run`` with libfaketime preloaded (wall clock only: monotonic is not faked,
    as on a real machine). The offset file is rewritten to step the clock: back 2 h, then forward
    again to just before the fixed-time slot that already ran, so the wall clock passes that slot a
    second time without the test waiting two hours."""
    offset_file = kenv.root / "faketime.offset"
    _write_offset(offset_file, 0)
    slot = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=6)
    kenv.write_config(
        f"""
[[job]]
name = "tick"
cron = "* * * * * *"
overlap = true  # a loaded machine may take over a second to run echo: count every run, not skips
command = 'echo "$KOKU_SCHEDULED_TIME" >> {kenv.work}/tick.txt'
tz = "UTC"

[[job]]
name = "fixed"
cron = "{slot.second} {slot.minute} {slot.hour} * * *"
command = 'echo "$KOKU_SCHEDULED_TIME" >> {kenv.work}/fixed.txt'
tz = "UTC"
""")
    env = dict(kenv.env, LD_PRELOAD=LIBFAKETIME, FAKETIME_TIMESTAMP_FILE=str(offset_file), FAKETIME_NO_CACHE="1",
               FAKETIME_DONT_FAKE_MONOTONIC="1")
    log = open(kenv.root / "daemon.log", "wb")
    daemon = subprocess.Popen(KU + ["daemon", "run"], env=env, stdout=log, stderr=log, cwd=kenv.work)
    kenv.daemon_pids.add(daemon.pid)
    try:
        fixed = kenv.work / "fixed.txt"
        tick = kenv.work / "tick.txt"
        wait_for(fixed.exists, timeout=20, what="the fixed-time run")
        assert fixed.read_text().split() == [slot.isoformat()]
        ticks_before = len(tick.read_text().split())

        _write_offset(offset_file, -7200)  # the clock is stepped back 2 h
        stepped_at = datetime.now(UTC)
        wait_for(lambda: any(t < slot.isoformat() for t in tick.read_text().split()[ticks_before:]),
                 timeout=5, what="an every-second run on the new wall clock")
        time.sleep(5)
        after = [datetime.fromisoformat(t) for t in tick.read_text().split()[ticks_before:]]
        new_timeline = [t for t in after if t < slot]
        # every second of the new timeline ran, from right after the step, each once
        assert len(new_timeline) >= 3, after
        assert len(set(new_timeline)) == len(new_timeline)
        assert new_timeline[0] - (stepped_at - timedelta(hours=2)) < timedelta(seconds=2.5), (new_timeline[0], stepped_at)
        gaps = {(b - a).total_seconds() for a, b in zip(new_timeline, new_timeline[1:])}
        assert gaps == {1.0}, new_timeline

        # Forward again to 3 s before the slot: the wall clock reaches the slot a second time.
        real_now = datetime.now(UTC)
        _write_offset(offset_file, (slot - timedelta(seconds=3) - real_now).total_seconds())
        time.sleep(6)
        assert fixed.read_text().split() == [slot.isoformat()]  # not twice
        last = datetime.fromisoformat(tick.read_text().split()[-1])
        assert last > slot  # and the every-second job is running past the slot
        res = kenv.ku("history", "fixed", "--json")
        assert res.returncode == 0, res.stderr
        assert [r["scheduled"] for r in json.loads(res.stdout)] == [slot.isoformat()]
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        log.close()
    clock_lines = [line for line in (kenv.root / "daemon.log").read_text().splitlines() if "clock" in line]
    steps_back = [float(line.split(" seconds=")[1].split()[0]) for line in clock_lines if 'msg="clock stepped back' in line]
    assert any(abs(s - 7200) < 5 for s in steps_back), clock_lines
