"""Config checks and the control channel: ``ku check`` vs ``yacron -v``, ``ku status``, and status round
trips and throughput on each daemon's Unix socket (koku's JSON-lines protocol, yacron's ``GET /status``).
"""

from __future__ import annotations

import socket
import threading
import time
from functools import partial
from pathlib import Path
from typing import Callable

from bench import daemons
from bench import procs
from bench.context import Ctx, Task
from bench.daemons import Daemon, Koku, Kind, Yacron
from bench.report import Results, below
from bench.workload import median, mixed, percentile, utc_now

SCALE = "Scale"
CONTROL = "Control channel"


def tasks(ctx: Ctx) -> list[Task]:
    """The gap tasks of this module, with rough durations on a quiet 2-core machine (seconds)."""
    plan = ctx.plan
    reps = plan.check_reps
    out = []
    for n in plan.sizes:
        out.append(Task(f"ku check {n}", 1 + reps * (0.3 + n * 0.0004), partial(check_koku, ctx, n)))
    for n in plan.sizes:
        if ctx.tools.has(Kind.YACRON):
            out.append(Task(f"yacron -v {n}", 1 + _yacron_reps(ctx, n) * (0.5 + n * 0.003),
                            partial(check_yacron, ctx, n)))
    if ctx.tools.has(Kind.YACRON) and not plan.quick:
        out.append(Task("yacron -v one file", 8, lambda: check_yacron_one_file(ctx, 1000)))
    for n in plan.sizes:
        out.append(Task(f"ku status {n}", 2 + n * 0.0006 + plan.cli_samples * (0.15 + n * 0.00008),
                        partial(status_cli, ctx, n)))
    n = plan.control_jobs
    out.append(Task(f"control koku {n}", 3 + plan.throughput_seconds + n * 0.0015 + plan.rtt_samples * n * 0.00002,
                    partial(control, ctx, Kind.KOKU, n)))
    if ctx.tools.has(Kind.YACRON):
        out.append(Task(f"control yacron {n}", 3 + plan.throughput_seconds + n * 0.005
                        + _yacron_rtts(plan) * n * 0.0007, partial(control, ctx, Kind.YACRON, n)))
    return out


def _yacron_rtts(plan) -> int:
    # yacron computes every job's next run per request (0.6 s at 1,000 jobs): fewer samples fit a gap.
    return max(1, plan.rtt_samples * 2 // 5)


def _yacron_reps(ctx: Ctx, n: int) -> int:
    return 1 if n >= 10000 else ctx.plan.check_reps


def _timed(ctx: Ctx, argv: list[str], d: Daemon, reps: int, timeout: float) -> tuple[float | None, str]:
    times = []
    for _ in range(reps):
        took, code, err = procs.timed_run(argv, d.env, d.root, timeout)
        if code != 0:
            return None, f"exit {code}: {err.strip()[-200:]}"
        times.append(took)
    return median(times), ""


def check_koku(ctx: Ctx, n: int) -> None:
    d = ctx.daemon(Kind.KOKU, f"check-koku-{n}", mixed(n, utc_now()))
    assert isinstance(d, Koku)
    d.write_config()
    value, problem = _timed(ctx, ctx.tools.ku + ["check", "--config", str(d.config)], d, ctx.plan.check_reps, 120)
    _check_figure(ctx, n, {"koku": value}, {"koku": problem} if problem else {})
    ctx.stop(d)


def check_yacron(ctx: Ctx, n: int) -> None:
    d = ctx.daemon(Kind.YACRON, f"check-yacron-{n}", mixed(n, utc_now()))
    assert isinstance(d, Yacron) and ctx.tools.yacron is not None
    d.write_config()
    cap = ctx.plan.big_yacron_cap
    value, problem = _timed(ctx, ctx.tools.yacron + ["-c", str(d.config), "-v"], d, _yacron_reps(ctx, n), cap)
    _check_figure(ctx, n, {"yacron": value}, {"yacron": problem} if problem else {})
    ctx.stop(d)


def check_yacron_one_file(ctx: Ctx, n: int) -> None:
    """yacron's parse time when the same jobs sit in one file instead of 50-job includes."""
    d = ctx.daemon(Kind.YACRON, f"check-yacron-onefile-{n}", mixed(n, utc_now()))
    assert isinstance(d, Yacron) and ctx.tools.yacron is not None
    d.write_config()
    lines = [f"web:\n  listen:\n    - unix://{d.socket}\ndefaults:\n  utc: true\njobs:"]
    for part in sorted((d.root / "parts").iterdir()):
        lines.append(part.read_text().split("jobs:\n", 1)[1].rstrip("\n"))
    d.config.write_text("\n".join(lines) + "\n")
    value, problem = _timed(ctx, ctx.tools.yacron + ["-c", str(d.config), "-v"], d, 1, ctx.plan.big_yacron_cap)
    ctx.results.series["yacron_one_file_check_s"] = {"jobs": n, "one_file": value, "problem": problem}
    ctx.stop(d)


ONE_FILE_NOTE = "`yacron -v` with the same "


def one_file_note(results: Results) -> None:
    """The note comparing yacron's one-file parse with the split config (both measured by then)."""
    got = results.series.get("yacron_one_file_check_s")
    if not got:
        return
    n, value = got["jobs"], got.get("one_file")
    split = results.get(f"scale.check.{n}")
    split_s = split.values.get("yacron") if split else None
    if value is not None:
        note = (f"yacron's config is given as a main file that includes files of {daemons.YACRON_CHUNK} jobs: "
                f"{ONE_FILE_NOTE}{n:,} jobs in one YAML file took {value:.1f} s"
                + (f" (vs {split_s:.1f} s split)" if split_s else "")
                + ": the same jobs parse slower in one file, as strictyaml's time per file grows faster than "
                  "its length, so yacron is given small files.")
    else:
        note = f"{ONE_FILE_NOTE}{n:,} jobs in one YAML file: {got.get('problem')}"
    results.notes = [x for x in results.notes if ONE_FILE_NOTE not in x] + [note]


def _check_figure(ctx: Ctx, n: int, values: dict, why: dict) -> None:
    big = n == max(ctx.plan.sizes) and n >= 10000
    ctx.results.add(f"scale.check.{n}", SCALE, f"{n:,} jobs: config check (ku check / yacron -v)", "s", values,
                    dict(why, cron="no config check"), "< 3 s" if big else None, below(3.0) if big else None)


def status_cli(ctx: Ctx, n: int) -> None:
    """Wall time of the ``ku status`` command against a daemon with ``n`` jobs."""
    d = ctx.daemon(Kind.KOKU, f"status-koku-{n}", mixed(n, utc_now()))
    d.start()
    why = {"yacron": "no status command (its REST API is compared under Control channel)",
           "cron": "no status command"}
    value = as_json = None
    jwhy = dict(why)
    if d.ready(120):
        value, problem = _timed(ctx, ctx.tools.ku + ["status"], d, ctx.plan.cli_samples, 60)
        if problem:
            why["koku"] = problem
        as_json, problem = _timed(ctx, ctx.tools.ku + ["status", "--json"], d, ctx.plan.cli_samples, 60)
        if problem:
            jwhy["koku"] = problem
    else:
        why["koku"] = jwhy["koku"] = f"daemon not ready: {d.log_tail()}"
    ctx.stop(d)
    big = n >= 10000
    ctx.results.add(f"scale.status.{n}", SCALE, f"{n:,} jobs: `ku status` command", "ms",
                    {"koku": None if value is None else value * 1000}, why,
                    "< 200 ms" if big else None, below(200) if big else None)
    ctx.results.add(f"scale.json.{n}", SCALE, f"{n:,} jobs: `ku status --json` command", "ms",
                    {"koku": None if as_json is None else as_json * 1000}, jwhy,
                    "< 150 ms" if big else None, below(150) if big else None)


def koku_status_raw(path: Path) -> int:
    """One ``"Status"`` round trip on a fresh connection; returns the answer's size in bytes."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        sock.sendall(b'"Status"\n')
        buf = bytearray()
        while not buf.endswith(b"\n"):
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("closed mid-answer")
            buf += chunk
    return len(buf)


def yacron_status_raw(path: Path) -> int:
    status, body = daemons.http_unix(path, "GET", "/status")
    if status != 200:
        raise ConnectionError(f"HTTP {status}")
    return len(body)


def round_trips(call: Callable[[], int], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        out.append((time.perf_counter() - start) * 1000)
    return out


def throughput(call: Callable[[], int], clients: int, seconds: float) -> tuple[float, int]:
    """Completed requests per second from ``clients`` threads for ``seconds``; and how many failed."""
    done = [0] * clients
    failed = [0] * clients
    start = time.monotonic()
    stop_at = start + seconds

    def client(i: int) -> None:
        while time.monotonic() < stop_at:
            try:
                call()
                done[i] += 1
            except OSError:
                failed[i] += 1
                time.sleep(0.01)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    return sum(done) / (time.monotonic() - start), sum(failed)


def control(ctx: Ctx, kind: Kind, n: int) -> None:
    """Status round trips and throughput of one daemon with ``n`` jobs."""
    plan = ctx.plan
    d = ctx.daemon(kind, f"control-{kind.value}-{n}", mixed(n, utc_now()))
    assert isinstance(d, (Koku, Yacron))
    problems = daemons.start_all([d], 120)
    why = {"cron": "no control channel"}
    values: dict[str, dict[str, float | None]] = {"p50": {}, "p99": {}, "rps": {}, "size": {}}
    if d.label in problems:
        why[kind.value] = problems[d.label]
    else:
        if kind is Kind.KOKU:
            call: Callable[[], int] = lambda: koku_status_raw(d.socket)  # noqa: E731
            samples = plan.rtt_samples
        else:
            call = lambda: yacron_status_raw(d.socket)  # noqa: E731
            samples = _yacron_rtts(plan)
        values["size"][kind.value] = call() / 1e3  # also warms up: first answers build caches
        rtts = round_trips(call, samples)
        values["p50"][kind.value], values["p99"][kind.value] = percentile(rtts, 50), percentile(rtts, 99)
        ctx.results.series.setdefault("status_rtt_ms", {})[kind.value] = rtts
        rate, failed = throughput(call, plan.clients, plan.throughput_seconds)
        values["rps"][kind.value] = rate
        if failed:
            ctx.results.notes.append(f"{kind.value}: {failed} of the concurrent status requests failed")
    ctx.stop(d)
    if not ctx.tools.has(Kind.YACRON):
        why["yacron"] = ctx.unavailable(Kind.YACRON)
    k, y = plan.rtt_samples, _yacron_rtts(plan)
    ctx.results.add("control.rtt.p50", CONTROL, f"{n:,} jobs: status round trip, p50 (koku {k}, yacron {y} samples)",
                    "ms", values["p50"], why)
    ctx.results.add("control.rtt.p99", CONTROL, f"{n:,} jobs: status round trip, p99 (koku {k}, yacron {y} samples)",
                    "ms", values["p99"], why)
    ctx.results.add("control.rps", CONTROL, f"{n:,} jobs: status requests/s, {plan.clients} concurrent clients",
                    "req/s", values["rps"], why)
    ctx.results.add("control.size", CONTROL, f"{n:,} jobs: status answer size", "KB", values["size"], why)

def finalize(ctx: Ctx) -> None:
    """Figures built from others: ``ku status`` at the control size next to the round trips; the note on
    yacron's one-file config."""
    one_file_note(ctx.results)
    n = ctx.plan.control_jobs
    cli = ctx.results.get(f"scale.status.{n}")
    if cli is not None:
        ctx.results.add("control.cli", CONTROL, f"{n:,} jobs: `ku status` command (start-up included)", "ms",
                        {"koku": cli.values["koku"]}, dict(cli.why, yacron="no status command"))
