"""What every phase shares: the tools, the plan (full or quick), the results, and the daemons alive now.

Every daemon a phase creates is registered here, so an error or Ctrl-C anywhere still stops each one by
its pid (``stop_all``).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench import daemons
from bench.daemons import Daemon, Job, Kind, Tools
from bench.report import Results


@dataclass(frozen=True)
class Plan:
    quick: bool
    sizes: tuple[int, ...]  # job counts for the scale figures
    control_jobs: int  # jobs in the daemons whose status round trip is compared
    idle_jobs: int  # hourly jobs for the idle memory/CPU figures
    window: float  # seconds over which idle CPU is read
    single_boundaries: int  # minute boundaries sampled with one job per daemon
    burst: int  # jobs due at the same instant
    stability_jobs: int  # jobs every second in the stability run
    stability_runs: int
    throughput_seconds: float
    clients: int  # concurrent status clients
    rtt_samples: int
    cli_samples: int
    check_reps: int
    big_yacron_cap: float  # seconds yacron may take to start with the largest config
    big_burst: int = 1000  # jobs due in the same second (hub.py)
    lag_jobs: int = 10000  # jobs in the daemon whose loop lag is read during reloads and Status
    huge_jobs: int = 100000  # jobs in the daemon timed from start until Ping


FULL = Plan(quick=False, sizes=(10, 100, 1000, 10000), control_jobs=1000, idle_jobs=20, window=60.0,
            single_boundaries=3, burst=200, stability_jobs=50, stability_runs=10000, throughput_seconds=5.0,
            clients=20, rtt_samples=50, cli_samples=7, check_reps=3, big_yacron_cap=240.0)
QUICK = Plan(quick=True, sizes=(10, 100), control_jobs=100, idle_jobs=20, window=3.0, single_boundaries=1,
             burst=10, stability_jobs=10, stability_runs=100, throughput_seconds=1.0, clients=20,
             rtt_samples=5, cli_samples=2, check_reps=1, big_yacron_cap=60.0, big_burst=50,
             lag_jobs=500, huge_jobs=2000)


class Ctx:
    def __init__(self, tools: Tools, plan: Plan, results: Results, root: Path):
        self.tools = tools
        self.plan = plan
        self.results = results
        self.root = root
        self.started = time.monotonic()
        self._live: list[Daemon] = []
        self._lock = threading.Lock()
        self._count = 0
        self.load_seen = 0.0  # highest 1-minute load average at any log line

    def log(self, message: str) -> None:
        self.load_seen = max(self.load_seen, os.getloadavg()[0])
        print(f"[{time.monotonic() - self.started:6.1f}s] {message}", file=sys.stderr, flush=True)

    def kinds(self) -> list[Kind]:
        return [k for k in Kind if self.tools.has(k)]

    def daemon(self, kind: Kind, label: str, jobs: list[Job] | Callable[[Path], list[Job]]) -> Daemon:
        """A new (not yet started) daemon of ``kind``; ``jobs`` may be a function of its stamps file."""
        with self._lock:
            self._count += 1
            label = f"{label}-{self._count}"
        d = daemons.make(kind, self.tools, self.root, label, [])
        d.jobs = jobs(d.stamps) if callable(jobs) else jobs
        with self._lock:
            self._live.append(d)
        return d

    def stop(self, *ds: Daemon | None) -> None:
        for d in ds:
            if d is None:
                continue
            d.stop()
            with self._lock:
                if d in self._live:
                    self._live.remove(d)

    def stop_all(self) -> None:
        for d in list(self._live):
            try:
                self.stop(d)
            except Exception as exc:  # keep stopping the others
                self.log(f"could not stop {d.label}: {exc!r}")

    def unavailable(self, kind: Kind) -> str:
        return self.tools.why.get(kind.value, "unavailable")


@dataclass
class Task:
    name: str
    estimate: float  # seconds on a quiet machine
    run: Callable[[], None]


class Gaps:
    """Runs measurement tasks in the time between minute boundaries, never across one.

    A boundary is when the latency daemons fire; a task that might still be running then is held back
    and tried in a later gap (or after the last boundary).
    """

    SLACK = 1.5  # a busy machine runs slower than the estimates; raised when a task overruns
    MAX_SLACK = 4.0
    MARGIN = 6.0  # seconds kept quiet before a boundary

    def __init__(self, ctx: Ctx, tasks: list[Task]):
        self.ctx = ctx
        self.pending = deque(tasks)
        self.took: dict[str, float] = {}
        self.slack = self.SLACK

    def _run(self, task: Task) -> None:
        self.ctx.log(f"task {task.name}")
        start = time.monotonic()
        try:
            task.run()
        except Exception as exc:  # one failed measurement must not lose the others
            self.ctx.results.notes.append(f"task {task.name} failed: {exc!r}")
            self.ctx.log(f"task {task.name} failed: {exc!r}")
        took = time.monotonic() - start
        self.took[task.name] = round(took, 1)
        # Judge the rest by how slow this machine is today.
        self.slack = min(self.MAX_SLACK, max(self.slack, 1.2 * took / max(task.estimate, 0.1)))

    def fill_until(self, deadline: float) -> None:
        """Run pending tasks that fit before ``deadline`` (epoch seconds), in order, skipping big ones."""
        while True:
            room = deadline - time.time() - self.MARGIN
            task = next((t for t in self.pending if t.estimate * self.slack <= room), None)
            if task is None:
                return
            self.pending.remove(task)
            self._run(task)

    def drain(self) -> None:
        while self.pending:
            self._run(self.pending.popleft())
