"""The jobs each measurement gives all daemons, and the small statistics the results use."""

from __future__ import annotations

import math
from datetime import datetime, timezone

from bench.daemons import Job, stamp_command


def idle_hourly(n: int, now: datetime) -> list[Job]:
    """``n`` hourly jobs whose minutes lie 10-49 minutes ahead: none is due for the next 10 minutes."""
    return [Job(f"idle{i:02d}", f"{(now.minute + 10 + i % 40) % 60} * * * *", "true") for i in range(n)]


def mixed(n: int, now: datetime) -> list[Job]:
    """``n`` jobs of varied schedules (daily, weekdays, monthly, twice a day, quarter-hourly within an
    hour, weekly, yearly), none in this UTC hour or the next, so nothing is due while they are measured."""
    hours = [h for h in range(24) if h not in (now.hour, (now.hour + 1) % 24)]
    jobs = []
    for i in range(n):
        h, h2 = hours[(i * 7) % len(hours)], hours[(i * 7 + 5) % len(hours)]
        m, d = (i * 13) % 60, 1 + i % 28
        cron = [f"{m} {h} * * *", f"{m} {h} * * 1-5", f"{m} {h} {d} * *", f"{m} {h},{h2} * * *",
                f"*/15 {h} * * *", f"{m} {h} * * 0", f"{m} {h} 1 1 *"][i % 7]
        jobs.append(Job(f"job{i:05d}", cron, "true"))
    return jobs


def stamping(n: int, cron: str, out, prefix: str = "s") -> list[Job]:
    """``n`` jobs on ``cron`` that each append their name and start time to ``out``."""
    return [Job(f"{prefix}{i:03d}", cron, stamp_command(f"{prefix}{i:03d}", out)) for i in range(n)]


def trivial(n: int, cron: str, prefix: str = "t") -> list[Job]:
    return [Job(f"{prefix}{i:03d}", cron, "true") for i in range(n)]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
