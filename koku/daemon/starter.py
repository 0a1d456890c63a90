"""Start runs one at a time, letting the hub serve everything else between two spawns.

When 1,000 jobs fall due in the same second the scheduler hands them all over in one tick. Spawning
each in its own greenlet at once queued 1,000 callbacks ahead of the socket, the timers and every other
due run: a Ping waited 6 s and an every-second job lost six runs. Here the runner's start only queues the
run (the scheduler's tick stays short and on time); the ``starter`` greenlet spawns them in order and
after each one waits until the loop has nothing else pending (``let_loop_run``), so a request, a timer or
a child's output is handled within one spawn's time (about a millisecond).

Order is earliest deadline first: a scheduled run's deadline is its job's next scheduled run, the moment
after which a late start costs a run (overlap = false skips it). So an every-second job keeps running
every second while 1,000 daily jobs wait their turn behind it; @reboot and catch-up runs go first. Equal
deadlines keep their order. A manual run (``ku run``: someone is waiting for it) is not queued at all.

It wraps the real executor and is what the runners see as ``Context.executor``.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any

import gevent
import gevent.event

from koku.core import logfmt
from koku.core.model import Outcome, RunRecord, RunResult
from koku.core.runner import JobRunner
from koku.daemon.clock import let_loop_run


class StartQueue:
    def __init__(self, executor: Any, clock: Any):
        self.executor = executor
        self.clock = clock
        self._queue: list[tuple[float, int, JobRunner, RunRecord]] = []  # a heap
        self._seq = itertools.count()
        self._wake = gevent.event.Event()

    def start(self, runner: JobRunner, record: RunRecord) -> None:
        if record.trigger == "manual":
            # Someone is waiting, and RunFollow reads the run's output stream as soon as this returns:
            # one spawn, at once, as before.
            self.executor.start(runner, record)
            return
        nxt = runner.next_scheduled
        deadline = nxt.timestamp() if record.trigger == "schedule" and nxt is not None else 0.0
        heapq.heappush(self._queue, (deadline, next(self._seq), runner, record))
        self._wake.set()

    def loop(self) -> None:
        """The ``starter`` greenlet's body: spawn queued runs, yielding to the loop after each."""
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._queue:
                _, _, runner, record = heapq.heappop(self._queue)
                try:
                    self.executor.start(runner, record)
                except Exception as exc:  # noqa: BLE001 - one bad start must not strand the rest
                    logfmt.error("could not hand a run to the executor", job=runner.cfg.name, run=record.run,
                                 reason=repr(exc))
                    self._finish(runner, record, Outcome.ERROR, f"internal error: {exc!r}")
                let_loop_run()

    def queued(self) -> int:
        return len(self._queue)

    def cancel_queued(self) -> None:
        """Daemon shutdown: runs not spawned yet end as cancelled instead of starting now."""
        while self._queue:
            _, _, runner, record = heapq.heappop(self._queue)
            self._finish(runner, record, Outcome.CANCELLED, "cancelled: the daemon stopped before it started")

    def cancel(self, runner: JobRunner, run: int, grace: float, reason: str = "daemon shutdown") -> bool:
        """The executor's cancel; a run still queued ends as cancelled without being started."""
        for item in self._queue:
            if item[2] is runner and item[3].run == run:
                self._queue.remove(item)
                heapq.heapify(self._queue)
                self._finish(runner, item[3], Outcome.CANCELLED, f"cancelled before it started ({reason})")
                return True
        return self.executor.cancel(runner, run, grace, reason)

    def running(self) -> list[gevent.Greenlet]:
        return self.executor.running()
    def _finish(self, runner: JobRunner, record: RunRecord, outcome: Outcome, description: str) -> None:
        runner.finish_run(record, RunResult(outcome=outcome, description=description, exit_code=None, signal=None,
                                            pid=None, started_mono=None, ended_mono=self.clock.monotonic(), tail=()))
