"""Resident memory and CPU of idle daemons (20 hourly jobs, and 10 to 10,000 jobs of mixed schedules),
then stability: RSS and open fds over 10,000 runs.

CPU is utime + stime of the daemon's own pid read from /proc before and after a window of one minute
(a full minute, so yacron's once-a-minute wake-up is counted exactly once), scaled to seconds per
minute. Every idle daemon is measured in the same window: CPU time is per process, and nothing is due.
yacron with the largest config needs a long start-up, so it gets its own window while the stability run
goes on beside it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from bench import daemons
from bench import procs
from bench.context import Ctx, Task
from bench.daemons import Daemon, Kind, Koku, Yacron
from bench.report import at_most_ratio, below
from bench.workload import idle_hourly, mixed, trivial, utc_now

IDLE = "Idle"
SCALE = "Scale"
STABILITY = "Stability"


def tasks(ctx: Ctx) -> list[Task]:
    """Gap tasks for --quick, where no config is big enough to need its own window."""
    plan = ctx.plan
    return [Task("idle and scale", 8 + plan.window, lambda: idle_scale(ctx)),
            Task("stability", 5 + (plan.stability_runs / plan.stability_jobs) * 1.1, lambda: stability(ctx))]


def _window(ctx: Ctx, ds: list[Daemon], seconds: float) -> dict[str, tuple[float, float]]:
    """{label: (CPU seconds per minute, RSS MB at the end)} over ``seconds`` for each running daemon."""
    before = {}
    for d in ds:
        try:
            before[d.label] = procs.cpu_seconds(d.pid)
        except OSError:
            pass
    time.sleep(seconds)
    out = {}
    for d in ds:
        try:
            cpu = procs.cpu_seconds(d.pid) - before[d.label]
            rss = procs.rss_mib(d.pid) * 1.048576
        except (OSError, KeyError):
            continue
        try:
            pss: float | None = procs.pss_mib(d.pid) * 1.048576
        except OSError:
            pss = None
        out[d.label] = (cpu * 60 / seconds, rss, pss)
    return out


def idle_scale_stability(ctx: Ctx) -> None:
    """The full run: the idle window, then stability beside yacron's own window for the largest config."""
    idle_scale(ctx, with_stability=True)


def idle_scale(ctx: Ctx, with_stability: bool = False) -> None:
    plan = ctx.plan
    now = utc_now()
    kinds = ctx.kinds()
    idle = {k: ctx.daemon(k, f"idle-{k.value}", idle_hourly(plan.idle_jobs, now)) for k in kinds}
    big = max(plan.sizes)
    # yacron with the largest config starts too slowly to share the window; it gets its own.
    big_yacron = ctx.daemon(Kind.YACRON, f"scale-yacron-{big}", mixed(big, now)) \
        if Kind.YACRON in kinds and big >= 10000 else None
    scale = {(k, n): ctx.daemon(k, f"scale-{k.value}-{n}", mixed(n, now)) for k in kinds for n in plan.sizes
             if not (k is Kind.YACRON and big_yacron is not None and n == big)}
    everyone = list(idle.values()) + list(scale.values())
    problems = daemons.start_all(everyone, 180)
    for label, problem in problems.items():
        ctx.log(f"{label}: {problem}")
    ready = [d for d in everyone if d.label not in problems]
    big_result: dict[str, Any] = {}
    big_thread = None
    if big_yacron is not None:
        big_thread = threading.Thread(target=_own_window, args=(ctx, big_yacron, big_result), daemon=True)
        big_yacron.start()
        big_thread.start()
    time.sleep(3)  # let start-up work settle
    ctx.log(f"idle window: {len(ready)} daemons for {plan.window:.0f}s")
    got = _window(ctx, ready, plan.window)
    ctx.stop(*everyone)

    def value(d: Daemon, i: int) -> float | None:
        return got[d.label][i] if d.label in got and len(got[d.label]) > i else None

    def why(ds: dict) -> dict[str, str]:
        out = {k.value: ctx.unavailable(k) for k in Kind if not ctx.tools.has(k)}
        out.update({d.kind.value: problems.get(d.label, "not measured") for d in ds.values() if d.label not in got})
        return out

    ctx.results.add("idle.rss", IDLE, f"{plan.idle_jobs} hourly jobs: RSS", "MB",
                    {k.value: value(d, 1) for k, d in idle.items()}, why(idle), "≤ 0.45× yacron", at_most_ratio(0.45))
    ctx.results.add("idle.pss", IDLE, f"{plan.idle_jobs} hourly jobs: PSS", "MB",
                    {k.value: value(d, 2) for k, d in idle.items()}, why(idle), "≤ 0.35× yacron", at_most_ratio(0.35))
    ctx.results.add("idle.cpu", IDLE, f"{plan.idle_jobs} hourly jobs: CPU, nothing due", "s/min",
                    {k.value: value(d, 0) for k, d in idle.items()}, why(idle), "< 0.05 s/min", below(0.05))
    for n in plan.sizes:
        ds = {k: d for (k, m), d in scale.items() if m == n}
        top = n >= 10000
        ctx.results.add(f"scale.rss.{n}", SCALE, f"{n:,} jobs: RSS", "MB",
                        {k.value: value(d, 1) for k, d in ds.items()}, why(ds),
                        "< 80 MB" if top else None, below(80) if top else None)
        ctx.results.add(f"scale.cpu.{n}", SCALE, f"{n:,} jobs: CPU, nothing due", "s/min",
                        {k.value: value(d, 0) for k, d in ds.items()}, why(ds),
                        "< 0.5 s/min" if top else None, below(0.5) if top else None)

    if with_stability:
        stability(ctx)
    if big_thread is not None and big_yacron is not None:
        big_thread.join(plan.big_yacron_cap + plan.window + 60)
        ctx.stop(big_yacron)
        if "cpu" in big_result:  # (cpu, rss, pss) from _window
            ctx.results.add(f"scale.rss.{big}", SCALE, f"{big:,} jobs: RSS", "MB", {"yacron": big_result["rss"]})
            ctx.results.add(f"scale.cpu.{big}", SCALE, f"{big:,} jobs: CPU, nothing due", "s/min",
                            {"yacron": big_result["cpu"]})
            ctx.results.series["yacron_big_startup_s"] = big_result.get("startup")
        else:
            reason = str(big_result.get("why", "not measured"))
            for what in ("rss", "cpu"):
                ctx.results.add(f"scale.{what}.{big}", SCALE, "", "", {}, {"yacron": reason})
    _scale_series(ctx)


def _own_window(ctx: Ctx, d: Daemon, out: dict[str, Any]) -> None:
    start = time.monotonic()
    if not d.ready(ctx.plan.big_yacron_cap):
        out["why"] = f"did not come up within {ctx.plan.big_yacron_cap:.0f}s (config parse), so not measured"
        return
    out["startup"] = round(time.monotonic() - start, 1)
    ctx.log(f"{d.label} up after {out['startup']}s; measuring its own window")
    time.sleep(3)
    got = _window(ctx, [d], ctx.plan.window)
    if d.label in got:
        out["cpu"], out["rss"] = got[d.label][:2]
    else:
        out["why"] = "exited during its window"


def _scale_series(ctx: Ctx) -> None:
    series: dict[str, dict[str, list]] = {}
    for what in ("rss", "cpu"):
        for n in ctx.plan.sizes:
            fig = ctx.results.get(f"scale.{what}.{n}")
            for k, v in (fig.values.items() if fig else ()):
                if v is not None:
                    series.setdefault(f"{what}", {}).setdefault(k, []).append([n, v])
    ctx.results.series["scale"] = series


def _sample(d: Daemon) -> tuple[float, int, float]:
    return procs.rss_mib(d.pid) * 1.048576, procs.open_fds(d.pid), procs.cpu_seconds(d.pid)


def _late_in_second() -> None:
    # Sample just before the next once-a-second burst, when the last one's runs are most likely over.
    now = time.time()
    time.sleep((0.9 - (now % 1.0)) % 1.0 or 1.0)


def _track(ctx: Ctx, d: Daemon, count, total: int, deadline: float, out: dict) -> None:
    """Sample RSS and fds at 10 %, 50 % and 100 % of ``total`` runs (``count()`` says how many so far).

    At each mark, fds are the fewest seen over three samples in a row: a sample can still catch a run
    holding its pipes open, which is not a leak.
    """
    marks = {"10": total // 10, "50": total // 2, "100": total}
    samples = []
    pending: dict[str, list[tuple[float, int]]] = {}
    while time.time() < deadline and procs.alive(d.pid):
        _late_in_second()
        try:
            rss, fds, cpu = _sample(d)
            done = count()
        except (OSError, ValueError):
            continue
        samples.append([round(time.time(), 1), done, round(rss, 2), fds])
        for mark, at in marks.items():
            if mark not in out and done >= at:
                pending.setdefault(mark, []).append((rss, fds, cpu, done))
                if len(pending[mark]) == 3 or mark == "100":
                    seen = pending.pop(mark)
                    out[mark] = (seen[0][0], min(s[1] for s in seen), seen[0][2], seen[0][3])
        if "100" in out:
            if pending:  # the run ended before a mark got its three samples
                out.update({m: (v[0][0], min(s[1] for s in v), v[0][2], v[0][3]) for m, v in pending.items()})
            break
        time.sleep(0.5)
    out["runs"] = samples[-1][1] if samples else 0
    ctx.results.series.setdefault("stability", {})[d.kind.value] = samples


def _drive_yacron(d: Yacron, jobs: int, total: int, deadline: float, sent: list[int]) -> None:
    """Start every job once a second through yacron's REST API until ``total`` runs were started."""
    tick = time.time()
    while sent[0] < total and time.time() < deadline:
        for j in range(jobs):
            try:
                if d.post(f"/jobs/t{j:03d}/start")[0] == 200:
                    sent[0] += 1
            except OSError:
                pass
        tick += 1
        time.sleep(max(0.0, tick - time.time()))


def stability(ctx: Ctx) -> None:
    plan = ctx.plan
    jobs, total = plan.stability_jobs, plan.stability_runs
    koku = ctx.daemon(Kind.KOKU, "stability-koku", trivial(jobs, "* * * * * *"))
    yac = ctx.daemon(Kind.YACRON, "stability-yacron", trivial(jobs, "0 0 1 1 *")) \
        if ctx.tools.has(Kind.YACRON) else None
    assert isinstance(koku, Koku) and (yac is None or isinstance(yac, Yacron))
    live: list[Daemon] = [d for d in (koku, yac) if d is not None]
    problems = daemons.start_all(live, 120)
    deadline = time.time() + total / jobs * 2 + 60
    outs: dict[str, dict] = {"koku": {}, "yacron": {}}
    sent = [0]
    threads = []
    if koku.label not in problems:
        threads.append(threading.Thread(target=_track, args=(ctx, koku, koku.runs, total, deadline, outs["koku"])))
    if yac is not None and yac.label not in problems:
        threads.append(threading.Thread(target=_drive_yacron, args=(yac, jobs, total, deadline, sent)))
        threads.append(threading.Thread(target=_track,
                                        args=(ctx, yac, lambda: sent[0], total, deadline, outs["yacron"])))
    ctx.log(f"stability: {total:,} runs of {jobs} jobs every second")
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if yac is not None and yac.label not in problems:
        procs.wait_until(lambda: yac.running_jobs() == 0, 30, 0.5)
    ctx.stop(koku, yac)
    why = {"cron": f"schedules by the minute: {total:,} runs of {jobs} jobs would take {total / jobs:.0f} min"}
    if yac is None:
        why["yacron"] = ctx.unavailable(Kind.YACRON)
    for d in live:
        if d.label in problems:
            why[d.kind.value] = problems[d.label]

    def at(mark: str, i: int) -> dict[str, float | None]:
        return {k: (o[mark][i] if mark in o else None) for k, o in outs.items()}

    def growth(i: int) -> dict[str, float | None]:
        return {k: (o["100"][i] - o["50"][i] if "100" in o and "50" in o else None) for k, o in outs.items()}

    for k, o in outs.items():
        if "100" not in o and k not in why:
            why[k] = f"only {o.get('runs', 0):,} of {total:,} runs before the deadline"
    label = f"{jobs} jobs every second"
    ctx.results.add("stab.runs", STABILITY, f"{label}: runs started", "runs",
                    {k: o.get("runs") for k, o in outs.items()}, why)
    for mark in ("10", "50", "100"):
        runs = total * int(mark) // 100
        ctx.results.add(f"stab.rss.{mark}", STABILITY, f"{label}: RSS after {runs:,} runs", "MB", at(mark, 0), why)
    ctx.results.add("stab.rss.growth", STABILITY, f"{label}: RSS growth {total // 2:,} → {total:,} runs", "MB growth",
                    growth(0), why, "< 2 MB (noise)", below(2.0))
    for mark in ("10", "100"):
        runs = total * int(mark) // 100
        ctx.results.add(f"stab.fds.{mark}", STABILITY, f"{label}: open fds after {runs:,} runs", "fds",
                        at(mark, 1), why)
    def cpu_per_1000() -> dict[str, float | None]:
        got: dict[str, float | None] = {}
        for k, o in outs.items():
            if "100" in o and "10" in o and o["100"][3] > o["10"][3]:
                got[k] = (o["100"][2] - o["10"][2]) / ((o["100"][3] - o["10"][3]) / 1000)
            else:
                got[k] = None
        return got

    ctx.results.add("stab.cpu.per1000", STABILITY, f"{label}: daemon CPU per 1,000 runs ({total // 10:,} → "
                    f"{total:,}; yacron's includes its HTTP start requests)", "s/1,000 runs", cpu_per_1000(), why,
                    "< yacron's", lambda v: None if v.get("koku") is None or v.get("yacron") is None
                    else v["koku"] < v["yacron"])
    ctx.results.add("stab.fds.growth", STABILITY, f"{label}: fd growth {total // 10:,} → {total:,} runs", "fds",
                    {k: (o["100"][1] - o["10"][1] if "100" in o and "10" in o else None) for k, o in outs.items()},
                    why, "≤ 0", lambda v: None if v["koku"] is None else v["koku"] <= 0)
