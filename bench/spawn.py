#!/usr/bin/env python3
"""Spawn cost of koku's ProcessRun, and a real daemon's CPU per 1,000 runs.

    python3 bench/spawn.py                 # 200 sequential runs of `true` through ProcessRun
    python3 bench/spawn.py --cgroup        # the same, each run in a cgroup of its own (root, cgroup2)
    python3 bench/spawn.py --daemon        # also: a real daemon, 50 every-second jobs, CPU per 1,000 runs
    python3 bench/spawn.py --burst 200     # also: a real daemon, 200 jobs due at the same second

Figures: wall ms per run (spawn, reap, output pipe closed) and this process's own CPU ms per run (the
children's CPU is not counted), median of 3 rounds; the daemon's utime+stime from /proc/PID/stat over
the window in which it started 1,000 runs. Run it from the venv the figures are for.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def spawn_loop(count: int, cgroup: bool = False) -> tuple[float, float]:
    import gevent

    from koku.core.clock import RealClock
    from koku.core.joblog import JobLog
    from koku.daemon.cgroup import CgroupContainment
    from koku.daemon.process import ProcessRun
    from koku.daemon.procgroup import Containment

    clock = RealClock(gevent.sleep)
    containment = CgroupContainment.create() if cgroup else Containment()
    runs = iter(range(1, 1_000_000))
    with tempfile.TemporaryDirectory() as tmp:
        log = JobLog(Path(tmp) / "spawn.log", max_bytes=10_000_000, keep=1)
        env = {"PATH": "/usr/bin:/bin"}

        def one() -> None:
            run = ProcessRun("true", shell="/bin/sh", cwd=tmp, env=env, log=log, timeout=None,
                             kill_grace=1.0, clock=clock, cage=containment.cage("spawn", next(runs)))
            run.start()
            run.wait()

        one()  # gevent's child watcher and the hub start on first use
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(count):
            one()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        log.close()
    containment.stop(clock, 0.0)
    return wall / count * 1000, cpu / count * 1000


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemon_cpu_per_1000(jobs: int = 50) -> float:
    ku = Path(sys.executable).parent / "ku"
    root = Path(tempfile.mkdtemp(prefix="ku-spawn-", dir="/tmp"))
    home = root / "home"
    config = home / ".config/koku/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("".join(f'[[job]]\nname = "j{i}"\ncron = "* * * * * *"\ncommand = "true"\n\n'
                              for i in range(jobs)))
    daemon = subprocess.Popen([str(ku), "daemon", "run"], env=_daemon_env(home), cwd=root, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    log = home / ".local/state/koku/logs"
    try:
        time.sleep(3)  # start-up and the first bursts
        runs0, cpu0 = _count_runs(log), _cpu_seconds(daemon.pid)
        while _count_runs(log) - runs0 < 1000:
            time.sleep(0.25)
        runs, cpu = _count_runs(log) - runs0, _cpu_seconds(daemon.pid) - cpu0
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        shutil.rmtree(root, ignore_errors=True)
    return cpu / runs * 1000


def _daemon_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOKU_", "XDG_"))}
    if "KOKU_CONTAINMENT" in os.environ:
        env["KOKU_CONTAINMENT"] = os.environ["KOKU_CONTAINMENT"]
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_STATE_HOME=str(home / ".local/state"),
               XDG_CACHE_HOME=str(home / ".cache"))
    return env


def burst(jobs: int) -> tuple[float, float]:
    """(first, last) start of ``jobs`` runs due at the same second, in seconds after that second: the
    time each job's `date` ran, so it includes starting the shell and date."""
    ku = Path(sys.executable).parent / "ku"
    root = Path(tempfile.mkdtemp(prefix="ku-burst-", dir="/tmp"))
    home, out = root / "home", root / "out"
    out.mkdir()
    config = home / ".config/koku/config.toml"
    config.parent.mkdir(parents=True)
    due = int(time.time()) + 8  # start-up on a loaded box takes a few seconds
    config.write_text("".join(f'[[job]]\nname = "b{i}"\ncron = "{due % 60} * * * * *"\n'
                              f'command = "date +%s.%N > {out}/b{i}"\n\n' for i in range(jobs)))
    daemon = subprocess.Popen([str(ku), "daemon", "run"], env=_daemon_env(home), cwd=root,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = due + 30
        while len(list(out.iterdir())) < jobs and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(0.2)
        starts = sorted(float(p.read_text()) - due for p in out.iterdir() if p.read_text().strip())
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        shutil.rmtree(root, ignore_errors=True)
    if len(starts) < jobs:
        raise SystemExit(f"only {len(starts)} of {jobs} runs started within 30 s")
    return starts[0], starts[-1]


def _count_runs(log_dir: Path) -> int:
    total = 0
    for path in log_dir.glob("j*.log"):
        try:
            total += path.read_bytes().count(b" started: ")
        except OSError:
            pass
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--daemon", action="store_true")
    parser.add_argument("--cgroup", action="store_true")
    parser.add_argument("--burst", type=int, default=0, metavar="JOBS")
    parser.add_argument("--no-loop", action="store_true", help="skip the in-process spawn loop")
    args = parser.parse_args()
    containment = os.environ.get("KOKU_CONTAINMENT", "auto")
    if args.burst:
        first, last = burst(args.burst)
        print(f"{args.burst} jobs due at once (KOKU_CONTAINMENT={containment}): first started +{first * 1000:.0f} ms, "
              f"last +{last * 1000:.0f} ms")
    if args.no_loop:
        return 0
    rounds = sorted(spawn_loop(args.count, args.cgroup) for _ in range(3))
    wall, cpu = rounds[1]
    kind = "in a cgroup each" if args.cgroup else "process group only"
    print(f"ProcessRun of `true` ({kind}), {args.count} in a row: {wall:.2f} ms wall, {cpu:.2f} ms CPU per run "
          f"(median of 3; all: {', '.join(f'{w:.2f}/{c:.2f}' for w, c in rounds)})")
    if args.daemon:
        print(f"daemon CPU per 1,000 runs (50 every-second jobs, KOKU_CONTAINMENT={os.environ.get('KOKU_CONTAINMENT', 'auto')}): "
              f"{daemon_cpu_per_1000():.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
