"""The benchmark keeps working: `bench/run.py --quick` produces every figure, and its pieces do their sums.

Targets are not asserted here (the benchmark reports them); only that each figure exists, koku's side
is measured, and yacron's and cron's are measured or say why not. The quick run waits for one minute
boundary (yacron and cron fire only there), so it takes up to about 90 s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import daemons, procs, report, workload  # noqa: E402
from bench.daemons import Job, Kind, Tools  # noqa: E402

EXPECTED = [
    "idle.rss", "idle.pss", "idle.cpu",
    "lat.second.p50", "lat.second.p99", "lat.second.missed", "lat.minute.median", "lat.minute.max",
    "lat.burst.last", "lat.burst.median",
    "scale.rss.10", "scale.cpu.10", "scale.check.10", "scale.status.10", "scale.json.10",
    "scale.rss.100", "scale.cpu.100", "scale.check.100", "scale.status.100", "scale.json.100",
    "control.rtt.p50", "control.rtt.p99", "control.rps", "control.size", "control.cli",
    "stab.runs", "stab.rss.10", "stab.rss.50", "stab.rss.100", "stab.rss.growth",
    "stab.fds.10", "stab.fds.100", "stab.fds.growth", "stab.cpu.per1000",
    # hub.py: koku alone (the loop-lag probe, seconds-first schedules)
    "hub.burst.last", "hub.burst.ping", "hub.burst.lost", "hub.lag.burst.p99", "hub.lag.burst.max",
    "hub.lag.idle.p99", "hub.lag.idle.max", "hub.lag.reload.p99", "hub.lag.reload.max", "hub.reload.took",
    "hub.lag.status.p99", "hub.lag.status.max", "hub.huge.ping", "hub.huge.rss",
    "hub.pyz.status", "hub.pyz.bare", "hub.pyz.over",
]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-out")
    tmp = Path(tempfile.mkdtemp(prefix="kbt-", dir="/tmp"))  # short: daemons' socket paths
    argv = [sys.executable, str(REPO / "bench/run.py"), "--quick", "--koku-python", sys.executable,
            "--out", str(out), "--tmp", str(tmp)]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=400, cwd=REPO)
        leftovers = procs.processes_under(str(tmp))
        for pid in leftovers:
            os.kill(pid, 9)
        leftover_dirs = list(tmp.iterdir())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return res, out, leftovers, leftover_dirs


@pytest.mark.slow  # uses bench/run.py --quick (over a minute); .ci/run keeps it
@pytest.mark.timeout(420)
def test_quick_run_writes_every_figure(quick):
    res, out, leftovers, leftover_dirs = quick
    log = f"\n--- bench/run.py stderr (tail) ---\n{res.stderr[-4000:]}"
    assert res.returncode == 0, log
    assert not leftovers, f"processes left behind: {leftovers}{log}"
    assert not leftover_dirs, f"temp dirs left behind: {leftover_dirs}{log}"
    data = json.loads((out / "results.json").read_text())
    figures = {f["key"]: f for f in data["figures"]}
    problems = [f"{k}: figure missing" for k in EXPECTED if k not in figures]
    available = data["meta"]["available"]
    for key in (k for k in EXPECTED if k in figures):
        fig = figures[key]
        if fig["values"]["koku"] is None:
            problems.append(f"{key}: koku not measured ({fig['why'].get('koku')})")
        for kind in ("yacron", "cron"):
            # Measured, or a reason is given (unavailable, or the measurement does not apply).
            if fig["values"][kind] is None and not fig["why"].get(kind):
                problems.append(f"{key}: {kind} neither measured nor explained")
        if fig["target"] and fig["met"] not in (True, False):
            problems.append(f"{key}: target {fig['target']} not judged")
    side_by_side = {"yacron": ("idle.rss", "idle.cpu", "lat.minute.median", "lat.burst.last", "scale.rss.100",
                               "scale.check.100", "control.rtt.p50", "control.rps", "stab.rss.growth"),
                    "cron": ("idle.rss", "idle.cpu", "lat.minute.median", "lat.burst.last")}
    for kind, keys in side_by_side.items():
        if available[kind]:
            problems += [f"{k}: {kind} not measured ({figures[k]['why'].get(kind)})" for k in keys
                         if k in figures and figures[k]["values"][kind] is None]
    if (figures.get("stab.runs", {}).get("values", {}).get("koku") or 0) < 100:
        problems.append("koku ran fewer than 100 runs in the stability run")
    if not data["series"].get("per_second_ms"):
        problems.append("no per-second latency samples")
    assert not problems, "\n".join(problems) + log


@pytest.mark.slow  # uses bench/run.py --quick (over a minute); .ci/run keeps it
def test_quick_run_prints_and_writes_the_table(quick):
    res, out, _, _ = quick
    md = (out / "results.md").read_text()
    for heading in ("## Machine and versions", "## Targets", "## Idle", "## Start latency", "## Scale",
                    "## Control channel", "## Stability", "## How it was measured"):
        assert heading in md
    assert "| measurement | koku | yacron | cron | koku / yacron | target | result |" in md
    assert "Load average" in md and "quick mode" in md
    for section in ("== Idle", "== Start latency", "== Scale", "== Control channel", "== Stability"):
        assert section in res.stdout


# ----- pieces -----------------------------------------------------------------------------------


@pytest.mark.parametrize("values, p, expected", [
    ([], 50, None),
    ([5.0], 99, 5.0),
    ([1, 2, 3, 4], 50, 2),
    (list(range(1, 101)), 99, 99),
    (list(range(1, 61)), 99, 60),  # 60 samples: p99 is the worst
])
def test_percentile_nearest_rank(values, p, expected):
    assert workload.percentile(values, p) == expected


def test_median():
    assert workload.median([3, 1, 2]) == 2
    assert workload.median([4, 1, 3, 2]) == 2.5
    assert workload.median([]) is None


def test_stamps_skip_torn_lines(tmp_path):
    path = tmp_path / "stamps.txt"
    path.write_text("s000 1700000000.002\ns001 17000\nb012 1700000001.5\ngarbage\n")
    assert daemons.read_stamps(path) == [("s000", 1700000000.002), ("s001", 17000.0), ("b012", 1700000001.5)]
    assert daemons.read_stamps(tmp_path / "none") == []


def test_stamp_command_writes_label_and_time(tmp_path):
    out = tmp_path / "stamps.txt"
    subprocess.run(["/bin/sh", "-c", daemons.stamp_command("j7", out)], check=True)
    ((label, when),) = daemons.read_stamps(out)
    assert label == "j7" and when > 1.6e9


def test_mixed_jobs_avoid_this_hour_and_the_next():
    from datetime import datetime, timezone

    now = datetime(2026, 3, 8, 23, 40, tzinfo=timezone.utc)
    jobs = workload.mixed(700, now)
    assert len({j.name for j in jobs}) == 700
    for job in jobs:
        hours = job.cron.split()[1]
        assert not {"23", "0"} & set(hours.split(",")), job.cron
    assert len({j.cron.split(" ", 2)[2] for j in jobs}) >= 5  # really a mix


def _configs(tmp_path: Path, jobs: list[Job]) -> dict[Kind, daemons.Daemon]:
    tools = Tools(ku=["ku"], yacron=["yacron"], cron="/usr/sbin/cron")
    out = {}
    for kind in Kind:
        d = daemons.make(kind, tools, tmp_path, kind.value, jobs)
        d.write_config()
        out[kind] = d
    return out


def test_equivalent_configs(tmp_path):
    jobs = [Job("a", "*/5 * * * *", "date +'a %s.%N' >> /tmp/x"), *workload.trivial(120, "0 3 * * *")]
    ds = _configs(tmp_path, jobs)
    toml = ds[Kind.KOKU].config.read_text()
    assert toml.count("[[job]]") == 121 and 'tz = "UTC"' in toml
    main = ds[Kind.YACRON].config.read_text()
    assert "unix://" in main and main.count("parts/jobs") == 3  # 50-job include files
    parts = sorted((ds[Kind.YACRON].root / "parts").iterdir())
    assert sum(p.read_text().count("- name:") for p in parts) == 121
    crontab = (ds[Kind.CRON].root / "crontab").read_text().splitlines()
    assert len([line for line in crontab if " root " in line]) == 121
    # crontab(5) turns a bare % into a newline: the stamp's must be escaped, and its redirection kept.
    assert r"date +'a \%s.\%N' >> /tmp/x ; } >/dev/null 2>&1" in crontab[2]


def test_results_merge_and_judge_targets():
    r = report.Results()
    r.add("x", "Scale", "check", "s", {"koku": 4.0}, {"cron": "no check"}, "< 3 s", report.below(3.0))
    assert r.get("x").met is False
    r.add("x", "Scale", "check", "s", {"yacron": 8.0})
    fig = r.get("x")
    assert fig.values == {"koku": 4.0, "yacron": 8.0, "cron": None}
    assert fig.ratio == 0.5 and fig.met is False
    r.add("m", "Idle", "RSS", "MB", {"koku": 20.0, "yacron": 50.0}, target="≤ ½ of yacron",
          check=report.at_most_ratio(0.5))
    assert r.get("m").met is True
    md = report.markdown(r, None)
    assert "**Missed:** Scale / check: koku 4.00 s, target < 3 s" in md
    assert "| check (s) | 4.00 | 8.00 | — | 0.50× | < 3 s | MISSED |" in md
    assert "- cron: no check" in md
    assert "MISSED" in report.text_table(r)


def test_cpu_rss_and_fds_of_a_child_that_uses_known_amounts():
    """The bench's /proc readers against a child that holds 64 MiB, burns ~0.5 s of CPU and opens 20 files."""
    code = ("import os, sys, time\n"
            "block = bytearray(64 * 1024 * 1024)\n"
            "for i in range(0, len(block), 4096): block[i] = 1\n"
            "end = time.process_time() + 0.5\n"
            "while time.process_time() < end: pass\n"
            "files = [open(os.devnull) for _ in range(20)]\n"
            "print('ready', flush=True); sys.stdin.read()\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        assert 64 <= procs.rss_mib(child.pid) < 64 + 40
        assert 0.45 <= procs.cpu_seconds(child.pid) < 5
        assert 20 + 3 <= procs.open_fds(child.pid) < 20 + 3 + 10
    finally:
        child.stdin.close()
        child.wait(10)
    with pytest.raises(OSError):
        procs.rss_mib(child.pid)  # reaped: gone from /proc


def test_koku_delays_from_its_log():
    from bench.latency import koku_delays

    log = "\n".join([
        'time=2026-11-28T12:55:55.002Z level=info msg="state change" job=sec000 state=idle->running reason="schedule run 1"',
        'time=2026-11-28T12:55:55.016Z level=info msg="run started" job=sec000 run=1 pid=26573 trigger=schedule scheduled=2026-11-28T12:55:55+00:00',
        'time=2026-11-28T12:55:55.500Z level=info msg="run started" job=sec000 run=2 pid=26574 trigger=manual scheduled=',
        'not a log line',
        'time=2026-11-28T12:56:00.031Z level=info msg="state change" job=m state=idle->running reason="schedule run 7"',
        'time=2026-11-28T12:56:00.040Z level=info msg="run started" job=m run=7 pid=1 trigger=schedule scheduled=2026-11-28T12:56:00+00:00',
    ])
    late, spawn = koku_delays(log)
    assert [round(x) for x in late] == [2, 31]
    assert [round(x) for x in spawn] == [14, 9]


@pytest.mark.slow  # uses bench/run.py --quick (over a minute); .ci/run keeps it
def test_render_rewrites_the_report_from_saved_results(quick):
    res, out, _, _ = quick
    (out / "results.md").write_text("stale")
    again = subprocess.run([sys.executable, str(REPO / "bench/run.py"), "--render", "--out", str(out),
                            "--koku-python", sys.executable], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    md = (out / "results.md").read_text()
    assert md.startswith("# koku benchmark results") and "## Stability" in md
