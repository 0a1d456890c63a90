"""Never stall the hub (issue 11): what koku does while it is busy, koku alone.

- 1,000 jobs due in the same second, beside one job every second and a client sending Ping every 10 ms:
  when the last one started, the slowest Ping, every-second runs lost, the loop lag during the burst;
- 10,000 jobs: the loop lag while idle, during reloads and during Status requests;
- 100,000 jobs: from the daemon's start until it answers Ping, and its RSS once every job is scheduled;
- ``ku status`` run from koku.pyz (20 jobs) minus a bare ``python -c pass``, both in an empty venv of the
  interpreter koku runs on.

The loop lag comes from koku's own probe (``KOKU_LAG_PROBE=1``): a greenlet in the daemon that sleeps
10 ms at a time and records how late it wakes; ``DaemonStatus`` answers the figures since the last read,
so each load is bracketed by two reads. yacron and cron have no such probe, and schedule by the minute.
"""

from __future__ import annotations

import math
import socket
import statistics
import subprocess
import threading
import time
from pathlib import Path

from bench import procs
from bench.context import Ctx, Task
from bench.daemons import Job, Kind, Koku, read_stamps, stamp_command
from bench.latency import LOG_FIELD
from bench.report import below
from bench.workload import idle_hourly, mixed, utc_now

SECTION = "Hub"
REPO = Path(__file__).resolve().parent.parent
KOKU_ONLY = {"yacron": "no loop-lag probe; schedules by the minute", "cron": "no loop-lag probe; schedules by the minute"}
NO_SOCKET = {"yacron": "not measured (koku only)", "cron": "no control channel"}
MIB = 1.048576  # MB per MiB


def tasks(ctx: Ctx) -> list[Task]:
    p = ctx.plan
    return [Task("burst and ping", 14 + p.big_burst * 0.004, lambda: burst(ctx)),
            Task(f"loop lag {p.lag_jobs}", 8 + p.lag_jobs * 0.0025, lambda: lag(ctx)),
            Task(f"start {p.huge_jobs}", 6 + p.huge_jobs * 0.00015, lambda: huge(ctx)),
            Task("pyz status", 14 + p.cli_samples * 0.6, lambda: pyz_status(ctx))]


def _koku(ctx: Ctx, label: str, jobs, probe: bool = True) -> Koku:
    d = ctx.daemon(Kind.KOKU, label, jobs)
    assert isinstance(d, Koku)
    if probe:
        d.env["KOKU_LAG_PROBE"] = "1"
    return d


def _lag(d: Koku) -> dict:
    return d.request("DaemonStatus")["DaemonStatus"].get("loop_lag") or {}


def _ping(path: Path, timeout: float = 10.0) -> float:
    """One Ping on a fresh connection; seconds for the round trip (connect included)."""
    start = time.perf_counter()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(b'"Ping"\n')
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
    return time.perf_counter() - start


def _add_lag(ctx: Ctx, key: str, what: str, got: dict, targets: bool, problem: str = "") -> None:
    n = got.get("samples", 0)
    why = dict(KOKU_ONLY, koku=problem or "probe answered nothing") if not n else KOKU_ONLY
    ctx.results.add(f"hub.lag.{key}.p99", SECTION, f"loop lag, {what}: p99 of {n} wake-ups", "ms",
                    {"koku": got.get("p99_ms")}, why, "< 20 ms" if targets else None, below(20) if targets else None)
    ctx.results.add(f"hub.lag.{key}.max", SECTION, f"loop lag, {what}: max", "ms",
                    {"koku": got.get("max_ms")}, why, "< 100 ms" if targets else None,
                    below(100) if targets else None)


def _scheduled_starts(log_text: str, job: str) -> set[str]:
    out = set()
    for line in log_text.splitlines():
        if "run started" not in line:
            continue
        fields = {k: v.strip('"') for k, v in LOG_FIELD.findall(line)}
        if fields.get("job") == job and fields.get("scheduled"):
            out.add(fields["scheduled"])
    return out


def burst(ctx: Ctx) -> None:
    """``big_burst`` jobs due in one second, one job every second beside them, Ping every 10 ms."""
    n = ctx.plan.big_burst
    at = math.ceil(time.time()) + 8 + n // 250  # start-up of the daemon first
    t = time.gmtime(at)
    cron = f"{t.tm_sec} {t.tm_min} {t.tm_hour} * * *"

    def jobs(out: Path) -> list[Job]:
        return ([Job(f"b{i:04d}", cron, stamp_command(f"b{i:04d}", out)) for i in range(n)]
                + [Job("sec", "* * * * * *", stamp_command("sec", out))])

    d = _koku(ctx, "hub-burst", jobs)
    d.start()
    label = f"{n:,} jobs due at once"
    why = dict(KOKU_ONLY)
    if not d.ready(60) or time.time() > at - 1.5:
        why["koku"] = f"daemon not ready in time: {d.log_tail()}"
        ctx.stop(d)
        for key in ("last", "ping", "lost"):
            ctx.results.add(f"hub.burst.{key}", SECTION, "", "", {}, why)
        return
    pings: list[tuple[float, float]] = []  # (sent at, round trip s)
    stop = threading.Event()

    def pinger() -> None:
        while not stop.is_set():
            sent = time.time()
            try:
                pings.append((sent, _ping(d.socket)))
            except OSError:
                pings.append((sent, float("inf")))
            time.sleep(0.01)

    while time.time() < at - 1.0:
        time.sleep(0.05)
    _lag(d)  # a new window starts here
    thread = threading.Thread(target=pinger, daemon=True)
    thread.start()
    deadline = at + 30
    starts: list[float] = []
    while time.time() < deadline:
        starts = [s - at for name, s in _stamps(d) if name.startswith("b")]
        if len(starts) >= n and time.time() > at + 4:
            break
        time.sleep(0.1)
    lag = _lag(d)
    stop.set()
    thread.join(20)
    end = time.time()
    ctx.stop(d)
    last = max(starts) if len(starts) >= n else None
    if last is None:
        why["koku"] = f"only {len(starts)} of {n} started within 30 s"
    window = [rtt for sent, rtt in pings if at - 0.5 <= sent <= at + (last or 30) + 0.5]
    expected = {time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(s)) for s in range(at - 1, int(end) - 1)}
    try:
        got = _scheduled_starts(d.log.read_text(errors="replace"), "sec")
    except OSError:
        got = set()
    lost = len(expected - got)
    ctx.results.add("hub.burst.last", SECTION, f"{label}: until the last started", "s", {"koku": last}, why,
                    "< 1.5 s", below(1.5))
    ctx.results.add("hub.burst.ping", SECTION, f"{label}: slowest of {len(window)} Pings (one every 10 ms)", "ms",
                    {"koku": max(window) * 1000 if window else None}, why, "< 50 ms", below(50))
    ctx.results.add("hub.burst.lost", SECTION, f"{label}: every-second runs lost (of {len(expected)})", "runs",
                    {"koku": lost}, why, "0", lambda v: None if v["koku"] is None else v["koku"] == 0)
    _add_lag(ctx, "burst", label, lag, False)


def _stamps(d: Koku) -> list[tuple[str, float]]:
    return read_stamps(d.stamps)


def _rewrite(d: Koku, jobs: list[Job], version: int) -> None:
    """The same jobs with 1% of their commands changed, so a reload has work to apply."""
    d.jobs = [Job(j.name, j.cron, f"{j.command} # v{version}") if i % 100 == 0 else j for i, j in enumerate(jobs)]
    d.write_config()


def lag(ctx: Ctx) -> None:
    n = ctx.plan.lag_jobs
    jobs = mixed(n, utc_now())
    d = _koku(ctx, f"hub-lag-{n}", jobs)
    d.start()
    label = f"{n:,} jobs"
    if not d.ready(120):
        problem = f"daemon not ready: {d.log_tail()}"
        ctx.stop(d)
        for key in ("idle", "reload", "status"):
            _add_lag(ctx, key, label, {}, key != "idle", problem)
        return
    procs.wait_until(lambda: d.request("DaemonStatus")["DaemonStatus"]["jobs"] == n, 60, 0.2)
    time.sleep(2)  # start-up work (memory trim, first state write) settles
    _lag(d)
    time.sleep(3)
    _add_lag(ctx, "idle", f"{label}, idle", _lag(d), False)
    took = []
    for version in range(1, 4):
        _rewrite(d, jobs, version)
        start = time.perf_counter()
        answer = d.request("Reload", 60)
        took.append(time.perf_counter() - start)
        if "Ok" not in answer:
            ctx.results.notes.append(f"hub: reload {version} answered {str(answer)[:200]}")
    _add_lag(ctx, "reload", f"{label}, during 3 reloads", _lag(d), True)
    ctx.results.add("hub.reload.took", SECTION, f"{label}: Reload request answered, median of 3", "s",
                    {"koku": statistics.median(took)}, NO_SOCKET)
    for _ in range(10):
        d.request("Status", 60)
    _add_lag(ctx, "status", f"{label}, during 10 Status requests", _lag(d), True)
    ctx.stop(d)


def huge(ctx: Ctx) -> None:
    n = ctx.plan.huge_jobs
    d = _koku(ctx, f"hub-start-{n}", mixed(n, utc_now()), probe=False)
    d.write_config()
    d.write_config = lambda: None  # written above, before the clock starts
    why = dict(NO_SOCKET)
    start = time.perf_counter()
    d.start()
    until = None
    deadline = start + 120
    while time.perf_counter() < deadline and d.proc is not None and d.proc.running():
        try:
            _ping(d.socket, 5.0)
            until = time.perf_counter() - start
            break
        except OSError:
            time.sleep(0.02)
    rss = None
    if until is None:
        why["koku"] = f"no Ping answer within 120 s: {d.log_tail()}"
    elif procs.wait_until(lambda: d.request("DaemonStatus", 60)["DaemonStatus"]["jobs"] == n, 120, 0.5):
        time.sleep(3)
        rss = procs.rss_mib(d.pid) * MIB
    ctx.stop(d)
    ctx.results.add("hub.huge.ping", SECTION, f"{n:,} jobs: daemon start until it answers Ping", "s",
                    {"koku": until}, why, "< 3 s", below(3.0))
    ctx.results.add("hub.huge.rss", SECTION, f"{n:,} jobs: RSS with every job scheduled", "MB",
                    {"koku": rss}, why, "< 180 MiB (188.7 MB)", below(180 * MIB))


def _bare_python(ctx: Ctx) -> tuple[str, str]:
    """(koku's base interpreter, the python of a new empty venv of it): the pyz runs where nothing else
    is installed, as on a server, and no site-packages .pth file loads anything at start-up."""
    python = ctx.tools.ku[0] if ctx.tools.ku[0].endswith("python") else str(Path(ctx.tools.ku[0]).parent / "python")
    out = subprocess.run([python, "-c", "import sys; print(sys._base_executable)"], capture_output=True, text=True,
                         timeout=30)
    base = out.stdout.strip() or python
    venv = ctx.root / "bare-venv"
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], capture_output=True, timeout=120)
    bare = venv / "bin" / "python"
    return base, str(bare) if bare.exists() else base


def pyz_status(ctx: Ctx) -> None:
    """``python koku.pyz status`` against a daemon with 20 jobs, minus ``python -c pass``, medians."""
    samples = max(5, ctx.plan.cli_samples * 3)
    why = {"yacron": "no status command", "cron": "no status command"}
    base, python = _bare_python(ctx)
    pyz = ctx.root / "koku.pyz"
    build = subprocess.run([base, str(REPO / "build_zipapp.py"), "--current", "--wheels", str(REPO / "build" / "wheels"),
                            "--output", str(pyz)],
                           capture_output=True, text=True, timeout=300, cwd=REPO)
    d = _koku(ctx, "hub-pyz", idle_hourly(ctx.plan.idle_jobs, utc_now()), probe=False)
    if build.returncode != 0:
        why["koku"] = f"build_zipapp.py --current failed: {build.stderr.strip()[-200:]}"
    else:
        d.start()
        if not d.ready(60):
            why["koku"] = f"daemon not ready: {d.log_tail()}"
    pyz_ms = bare_ms = None
    if "koku" not in why:
        runs: dict[str, list[float]] = {"pyz": [], "bare": []}
        argv = {"pyz": [python, str(pyz), "status"], "bare": [python, "-c", "pass"]}
        for i in range(samples + 2):  # the first two warm the caches (bytecode, native) and are dropped
            for kind in ("pyz", "bare"):
                took, code, err = procs.timed_run(argv[kind], d.env, d.root, 60)
                if code != 0:
                    why["koku"] = f"{kind} exit {code}: {err.strip()[-200:]}"
                elif i >= 2:
                    runs[kind].append(took * 1000)
        if "koku" not in why:
            pyz_ms, bare_ms = statistics.median(runs["pyz"]), statistics.median(runs["bare"])
    ctx.stop(d)
    ctx.results.add("hub.pyz.status", SECTION, f"`ku status` from koku.pyz, {ctx.plan.idle_jobs} jobs, median of "
                    f"{samples}", "ms", {"koku": pyz_ms}, why)
    ctx.results.add("hub.pyz.bare", SECTION, f"bare `python -c pass`, same interpreter, median of {samples}", "ms",
                    {"koku": bare_ms}, why)
    ctx.results.add("hub.pyz.over", SECTION, "`ku status` from koku.pyz minus bare python", "ms",
                    {"koku": None if pyz_ms is None or bare_ms is None else pyz_ms - bare_ms}, why,
                    "< +25 ms", below(25))
