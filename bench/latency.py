"""Start latency: how long after its scheduled instant a job's command starts.

Each job appends ``name <epoch>`` (``date +%s.%N``) when it starts. yacron and cron schedule by the
minute, so the side-by-side figures come from minute boundaries: one job per daemon at the same
boundaries, then 200 jobs due at once, each daemon at a boundary of its own so they do not compete for
the two cores. koku alone also runs one job every second (seconds-first 6-field cron) for 60+ samples.
Other measurements run between boundaries (``Gaps``), never across one.
"""

from __future__ import annotations

import math
import re
import time
from datetime import datetime

from bench import daemons
from bench.context import Ctx, Gaps
from bench.daemons import Daemon, Kind
from bench.report import below
from bench.workload import median, percentile, stamping

SECTION = "Start latency"
EVERY_MINUTE = "* * * * *"
EVERY_SECOND = "* * * * * *"


def next_boundary(after: float) -> float:
    return (math.floor(after / 60) + 1) * 60.0


def sleep_until(when: float) -> None:
    while (left := when - time.time()) > 0:
        time.sleep(min(left, 1.0))


def offsets(d: Daemon, boundary: float) -> list[float]:
    """Start times, relative to ``boundary``, of the runs that belong to it (seconds)."""
    return sorted(t - boundary for _, t in daemons.read_stamps(d.stamps) if boundary - 5 <= t < boundary + 55)


def wait_for_runs(d: Daemon, boundary: float, n: int, timeout: float) -> list[float]:
    deadline = boundary + timeout
    while True:
        found = offsets(d, boundary)
        if len(found) >= n or time.time() >= deadline:
            return found
        time.sleep(0.1)


def _start(ctx: Ctx, ds: list[Daemon | None]) -> list[Daemon]:
    live = [d for d in ds if d is not None]
    for label, problem in daemons.start_all(live, 120).items():
        ctx.results.notes.append(f"{label}: {problem}")
        ctx.log(f"{label}: {problem}")
    return [d for d in live if d.proc is not None and d.proc.running()]


def run(ctx: Ctx, gaps: Gaps) -> None:
    plan = ctx.plan
    single = {k: ctx.daemon(k, f"single-{k.value}", lambda out: stamping(1, EVERY_MINUTE, out, "single"))
              for k in ctx.kinds()}

    def burst_daemon(kind: Kind) -> Daemon | None:
        if not ctx.tools.has(kind):
            return None
        return ctx.daemon(kind, f"burst-{kind.value}", lambda out: stamping(plan.burst, EVERY_MINUTE, out, "b"))

    per_second = ctx.daemon(Kind.KOKU, "per-second", lambda out: stamping(1, EVERY_SECOND, out, "sec"))
    samples: dict[str, list[float]] = {k.value: [] for k in Kind}
    bursts: dict[str, list[float]] = {}
    why: dict[str, str] = {k.value: ctx.unavailable(k) for k in Kind if not ctx.tools.has(k)}

    live = _start(ctx, list(single.values()))
    for k, d in single.items():
        if d not in live:
            why[k.value] = f"did not start ({d.log_tail()})"
    quick_bursts: list[Daemon] = []
    if plan.quick:  # one boundary for everything: the figures only need to exist
        quick_bursts = _start(ctx, [burst_daemon(k) for k in Kind])
    boundary = next_boundary(time.time() + 8)
    sec_start = None
    for i in range(plan.single_boundaries):
        if i == 0:
            if plan.quick:
                sec_start = _start_per_second(ctx, per_second)
            gaps.fill_until(boundary)
        ctx.log(f"minute boundary {time.strftime('%H:%M:%S', time.gmtime(boundary))}: single jobs")
        sleep_until(boundary)
        for k, d in single.items():
            if d in live:
                got = wait_for_runs(d, boundary, 1, 15)
                if got:
                    samples[k.value].append(got[0])
        for d in quick_bursts:
            bursts[d.kind.value] = wait_for_runs(d, boundary, plan.burst, 30)
        if i == 0 and not plan.quick:
            sec_start = _start_per_second(ctx, per_second)
        boundary += 60
    sec_stop = time.time()
    ctx.stop(per_second, *single.values(), *quick_bursts)
    if not plan.quick:
        for kind in Kind:
            burst = burst_daemon(kind)
            if burst is None or not _start(ctx, [burst]):
                why.setdefault(kind.value, "did not start")
                continue
            gaps.fill_until(boundary)
            at = time.strftime("%H:%M:%S", time.gmtime(boundary))
            ctx.log(f"minute boundary {at}: {plan.burst} {kind.value} jobs")
            sleep_until(boundary)
            bursts[kind.value] = wait_for_runs(burst, boundary, plan.burst, 45)
            ctx.stop(burst)
            boundary += 60
    _per_second_figures(ctx, per_second, sec_start, sec_stop)
    _minute_figures(ctx, samples, bursts, why)
    _koku_log_figures(ctx, per_second, single.get(Kind.KOKU))


def _start_per_second(ctx: Ctx, d: Daemon) -> float | None:
    return time.time() if _start(ctx, [d]) else None


def _per_second_figures(ctx: Ctx, d: Daemon, start: float | None, stop: float) -> None:
    not_minutely = {"yacron": "schedules by the minute only", "cron": "schedules by the minute only"}
    values: list[float] = []
    expected = 0
    if start is not None:
        # Only whole seconds strictly inside the run: the first and last may be cut by start/stop.
        first, last = math.ceil(start) + 1, math.floor(stop) - 1
        stamps = [t for _, t in daemons.read_stamps(d.stamps) if first - 0.5 <= t < last + 0.5]
        values = [(t - round(t)) * 1000 if t - math.floor(t) > 0.9 else (t - math.floor(t)) * 1000 for t in stamps]
        expected = max(0, last - first + 1)
        ctx.results.series["per_second_ms"] = values
    n = len(values)
    why = dict(not_minutely, koku=f"no runs recorded ({d.log_tail()})") if not values else not_minutely
    ctx.results.add("lat.second.p50", SECTION, f"one job every second: p50 of {n} runs", "ms",
                    {"koku": percentile(values, 50)}, why)
    ctx.results.add("lat.second.p99", SECTION, f"one job every second: p99 of {n} runs", "ms",
                    {"koku": percentile(values, 99)}, why, "< 20 ms (≥ 60 runs)",
                    lambda v: None if v["koku"] is None else (v["koku"] < 20 and n >= 60))
    ctx.results.add("lat.second.missed", SECTION, f"one job every second: seconds without a run (of {expected})",
                    "runs", {"koku": None if start is None else max(0, expected - n)}, why)


def _minute_figures(ctx: Ctx, samples: dict[str, list[float]], bursts: dict[str, list[float]],
                    why: dict[str, str]) -> None:
    plan = ctx.plan
    ms = {k: [s * 1000 for s in v] for k, v in samples.items()}
    ctx.results.series["minute_single_ms"] = ms
    n = max((len(v) for v in ms.values()), default=0)
    missing = dict(why)
    for k, v in ms.items():
        if not v and k not in missing:
            missing[k] = "no run recorded at the boundary"
    ctx.results.add("lat.minute.median", SECTION, f"one job at a minute boundary: median of {n}", "ms",
                    {k: median(v) for k, v in ms.items()}, missing)
    ctx.results.add("lat.minute.max", SECTION, f"one job at a minute boundary: worst of {n}", "ms",
                    {k: max(v) if v else None for k, v in ms.items()}, missing, "< 20 ms", below(20))
    ctx.results.series["burst_s"] = bursts
    last: dict[str, float | None] = {}
    mid: dict[str, float | None] = {}
    bwhy = dict(why)
    for k in ("koku", "yacron", "cron"):
        got = bursts.get(k)
        if got is None:
            bwhy.setdefault(k, "not measured")
        elif len(got) < plan.burst:
            bwhy[k] = f"only {len(got)} of {plan.burst} jobs started within 45 s"
        else:
            last[k] = got[-1]
        middle = median(got or [])
        mid[k] = None if middle is None else middle * 1000
    ctx.results.add("lat.burst.last", SECTION, f"{plan.burst} jobs due at once: until the last started", "s",
                    last, bwhy, "< 0.3 s", below(0.3))
    ctx.results.add("lat.burst.median", SECTION, f"{plan.burst} jobs due at once: median start", "ms", mid, bwhy)


LOG_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def koku_delays(log_text: str) -> tuple[list[float], list[float]]:
    """From koku's logfmt daemon log: (timer fired after the scheduled instant, scheduled run's state
    change to its child being spawned), in ms, one pair per scheduled run. Lines it cannot read are
    skipped, so a change in koku's log format loses this breakdown, not the benchmark."""
    woke: dict[tuple[str, str], datetime] = {}
    late, spawn = [], []
    for line in log_text.splitlines():
        fields = {k: v.strip('"') for k, v in LOG_FIELD.findall(line)}
        try:
            when = datetime.fromisoformat(fields["time"].replace("Z", "+00:00"))
            if fields.get("msg") == "state change" and fields.get("reason", "").startswith("schedule run "):
                woke[(fields["job"], fields["reason"].rsplit(" ", 1)[1])] = when
            elif fields.get("msg") == "run started" and fields.get("trigger") == "schedule":
                t_woke = woke.pop((fields["job"], fields["run"]))
                scheduled = datetime.fromisoformat(fields["scheduled"])
                late.append((t_woke - scheduled).total_seconds() * 1000)
                spawn.append((when - t_woke).total_seconds() * 1000)
        except (KeyError, ValueError):
            continue
    return late, spawn


def _koku_log_figures(ctx: Ctx, per_second: Daemon, single: Daemon | None) -> None:
    """Where koku's start latency goes, from its own log (millisecond timestamps)."""
    why = {"yacron": "read from koku's own log", "cron": "read from koku's own log"}

    def read(d: Daemon | None) -> tuple[list[float], list[float]]:
        try:
            return koku_delays(d.log.read_text(errors="replace")) if d else ([], [])
        except OSError:
            return [], []

    sec_late, sec_spawn = read(per_second)
    min_late, min_spawn = read(single)
    ctx.results.add("lat.koku.wake.second", SECTION, f"koku's log: timer fired after the instant, every second, p50 "
                    f"of {len(sec_late)}", "ms", {"koku": median(sec_late)}, why)
    ctx.results.add("lat.koku.wake.minute", SECTION, f"koku's log: timer fired after the instant, minute boundary, "
                    f"worst of {len(min_late)}", "ms", {"koku": max(min_late) if min_late else None}, why)
    ctx.results.add("lat.koku.spawn", SECTION, f"koku's log: timer fired → child spawned, p50 of "
                    f"{len(sec_spawn + min_spawn)}", "ms", {"koku": median(sec_spawn + min_spawn)}, why)
