#!/usr/bin/env python3
"""koku's benchmark against yacron and Debian's cron, on this machine, in one run.

    python3 bench/run.py            # full run (about 12 minutes); writes bench/results.md and results.png
    python3 bench/run.py --quick    # a few seconds per measurement, small job counts; no chart

It creates its own venvs under bench/.work/ (koku from this checkout plus matplotlib; yacron apart) and,
as root, installs Debian's cron with apt-get if it is missing. Targets are reported, never asserted:
the exit code is 0 whenever the results were written.
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

sys.dont_write_bytecode = True  # no __pycache__ in bench/
# Run as a script, bench/ is on sys.path but its parent is not; the modules import each other as bench.*.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import control, env, hub, latency, load, procs, report  # noqa: E402
from bench.context import FULL, QUICK, Ctx, Gaps  # noqa: E402
from bench.daemons import YACRON_CHUNK  # noqa: E402
from bench.workload import utc_now  # noqa: E402

HERE = Path(__file__).resolve().parent

METHOD = [
    "Each daemon runs as a child of the benchmark in its own temp directory: koku as `ku daemon run` in a temp "
    "HOME with XDG_* set; yacron as `yacron -c` with its REST API on a Unix socket; Debian's cron as `cron -f` "
    "in a private mount namespace with its own /etc/crontab, /etc/cron.d, spool and /run. All schedules are UTC. "
    "Every process is stopped by its pid at the end.",
    "RSS is VmRSS from /proc/PID/status (MB = 10^6 bytes). CPU is utime+stime of the daemon's own pid over "
    "one window for all idle daemons at once (60 s in a full run, so yacron's once-a-minute wake-up is counted "
    "exactly once), as seconds per minute. Idle configs: 20 hourly jobs, none due for 10 minutes; scale "
    "configs: daily, weekday, monthly, twice-daily, quarter-hourly-within-an-hour, weekly and yearly jobs, "
    "none due in the current or next hour.",
    "Start latency: each job runs `date +'NAME %s.%N' >> file` and the latency is that time minus the "
    "scheduled instant, so it includes starting the shell and `date` (a few ms). yacron and cron fire only "
    "on minute boundaries, so the side-by-side figures are taken there: one job per daemon at the same "
    "boundaries, then the burst for each daemon at a boundary of its own. koku's 60+ sample figures come "
    "from a seconds-first 6-field schedule (every second).",
    f"yacron's config is a main YAML file with its `web:` socket and an `include:` list of files of "
    f"{YACRON_CHUNK} jobs each (yacron re-reads its whole config every minute). `ku check` and `yacron -v` "
    "(validate and exit) are the config checks compared.",
    "Control channel: round trips of koku's `\"Status\"` request and yacron's `GET /status` (Accept: "
    "application/json) on their Unix sockets, a new connection each, from a Python client; throughput from "
    "20 client threads for a few seconds. `ku status` is the whole command, interpreter start-up included.",
    "Stability: koku runs 50 jobs every second (`true`); yacron cannot schedule by the second, so the same 50 "
    "jobs are started once a second through its `POST /jobs/NAME/start`. RSS is sampled between the "
    "once-a-second bursts; growth is taken from the halfway point, after koku's per-job history (100 runs) "
    "is full. Debian's cron is left out: it schedules by the minute.",
    "Other measurements run between minute boundaries and are held back when they might overlap one.",
]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few seconds per measurement, 10 and 100 jobs")
    p.add_argument("--out", help="where results.md/.json/.png go (default: bench/, or bench/.work/quick with --quick)")
    p.add_argument("--work", default=str(HERE / ".work"), help="venvs and caches (default: bench/.work)")
    p.add_argument("--koku-python", help="a Python with koku installed (default: a venv under --work)")
    p.add_argument("--no-yacron", action="store_true", help="measure without yacron")
    p.add_argument("--no-cron", action="store_true", help="measure without Debian's cron")
    p.add_argument("--no-install", action="store_true", help="do not apt-get install cron when it is missing")
    p.add_argument("--chart", action="store_true", help="draw results.png in --quick mode too")
    p.add_argument("--render", action="store_true",
                   help="only write results.md (and the chart) again from results.json in --out")
    p.add_argument("--only", help="run only the gap tasks whose names start with these (comma-separated), "
                                   "e.g. 'burst,loop lag'; no latency, idle or stability phases")
    p.add_argument("--tmp", default="/tmp", help="parent of the daemons' temp dir (short: socket paths < 108 bytes)")
    return p.parse_args(argv)


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def _chart(python: Path, out: Path, log) -> str | None:
    res = subprocess.run([str(python), str(HERE / "chart.py"), str(out / "results.json"), str(out / "results.png")],
                         capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        log(f"chart not drawn: {res.stderr.strip().splitlines()[-1:] if res.stderr else res.returncode}")
        return None
    return "results.png"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    plan = QUICK if args.quick else FULL
    out = Path(args.out or (Path(args.work) / "quick" if args.quick else HERE)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    if args.render:
        return render(out, work, args, log)

    # SIGTERM must still run the cleanup below: every daemon is stopped by pid there.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = report.Results()
    load_start = _load()
    try:
        tools, python = env.tools(work, args.koku_python, not args.no_yacron, not args.no_cron,
                                  not args.quick and not args.no_install, log)
    except env.SetupError as exc:
        print(f"bench: cannot set up koku: {exc}", file=sys.stderr)
        return 2
    # Unix socket paths must stay under 108 bytes, so the daemons live in a short temp dir.
    root = Path(tempfile.mkdtemp(prefix="kb-", dir=args.tmp))
    ctx = Ctx(tools, plan, results, root)
    ctx.started = started
    for kind, why in tools.why.items():
        log(f"{kind}: {why}")
    results.meta.update(date=utc_now().strftime("%Y-%m-%d %H:%M UTC"), mode="quick" if plan.quick else "full",
                        command="python3 bench/run.py" + (" --quick" if plan.quick else ""),
                        machine=env.machine(), versions=env.versions(tools, python))
    gaps = Gaps(ctx, control.tasks(ctx) + hub.tasks(ctx) + (load.tasks(ctx) if plan.quick else []))
    if args.only:
        wanted = tuple(w.strip() for w in args.only.split(","))
        gaps.pending = type(gaps.pending)(t for t in gaps.pending if t.name.startswith(wanted))
    try:
        if not args.only:
            latency.run(ctx, gaps)
        gaps.drain()
        if not plan.quick and not args.only:
            load.idle_scale_stability(ctx)
        control.finalize(ctx)
    finally:
        ctx.stop_all()
        procs.kill_leftovers(str(root))
        shutil.rmtree(root, ignore_errors=True)
    results.meta.update(duration_s=round(time.monotonic() - started, 1),
                        load=f"{load_start} at the start, {_load()} at the end",
                        load_peak=f"{ctx.load_seen:.2f}",
                        available={"koku": True, "yacron": tools.yacron is not None, "cron": tools.cron is not None},
                        task_seconds=gaps.took)
    results.notes[:0] = METHOD
    results.save(out / "results.json")
    _write(results, python, out, not plan.quick or args.chart, log)
    return 0


def _write(results: report.Results, python: Path | None, out: Path, chart: bool, log) -> None:
    drawn = _chart(python, out, log) if chart and python else None
    (out / "results.md").write_text(report.markdown(results, drawn))
    print(report.text_table(results))
    log(f"wrote {out / 'results.md'}" + (f" and {out / drawn}" if drawn else ""))


def render(out: Path, work: Path, args: argparse.Namespace, log) -> int:
    """Write results.md and results.png again from a saved results.json, measuring nothing."""
    results = report.Results.load(out / "results.json")
    control.one_file_note(results)
    results.save(out / "results.json")
    python = Path(args.koku_python) if args.koku_python else work / "venv-koku/bin/python"
    _write(results, python if python.exists() else None, out, results.meta.get("mode") == "full" or args.chart, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
