"""Counters behind the Prometheus metrics, kept whether or not metrics are served (a few integers per
job that has run). Pure: the metrics module turns them into series; nothing here imports
prometheus_client. Timestamps are Unix seconds, durations seconds.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

# How late runs start: scheduling and spawning together, on a loaded box up to seconds.
START_DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def unix(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


@dataclass(slots=True)
class JobStats:
    runs: Counter[str] = field(default_factory=Counter)  # outcome -> runs finished since the daemon started
    last_start: float | None = None
    last_success: float | None = None
    last_duration: float | None = None


class RunStats:
    def __init__(self) -> None:
        self.jobs: dict[str, JobStats] = {}
        self.delay_counts = [0] * (len(START_DELAY_BUCKETS) + 1)  # per bucket, not cumulative; last = +Inf
        self.delay_sum = 0.0
        self.notifications: Counter[tuple[str, str]] = Counter()  # (notifier, outcome) -> count

    def _job(self, name: str) -> JobStats:
        stats = self.jobs.get(name)
        if stats is None:
            stats = self.jobs[name] = JobStats()
        return stats

    def started(self, job: str, started: str | None, scheduled: str | None) -> None:
        start = unix(started)
        self._job(job).last_start = start
        due = unix(scheduled)
        if start is not None and due is not None:
            delay = max(0.0, start - due)
            self.delay_counts[bisect_left(START_DELAY_BUCKETS, delay)] += 1
            self.delay_sum += delay

    def finished(self, job: str, outcome: str | None, ended: str | None, duration: float | None) -> None:
        stats = self._job(job)
        stats.runs[outcome or "unknown"] += 1
        stats.last_duration = duration
        if outcome == "success":
            stats.last_success = unix(ended)

    def notified(self, notifier: str, outcome: str) -> None:
        self.notifications[(notifier, outcome)] += 1

    def delay_histogram(self) -> list[tuple[float, int]]:
        """Cumulative buckets as Prometheus counts them: [(0.005, n), ..., (inf, total)]."""
        out, total = [], 0
        for bound, count in zip((*START_DELAY_BUCKETS, math.inf), self.delay_counts):
            total += count
            out.append((bound, total))
        return out
