"""``[daemon] max_running``: at most that many runs at once across all jobs. Pure.

A run that may not start now waits here; waiting runs start in order of their scheduled time (a manual
run counts from when it was asked for), each as soon as both the daemon-wide limit and its own job's
``max_running`` allow. The runners own their records and decide about deadlines; this only counts and
orders. A retry between attempts holds no slot.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Callable, Protocol


class Admitted(Protocol):
    def can_start(self) -> bool:
        """Whether the job's own limit (overlap, max_running) allows one more run now."""


@dataclass(order=True)
class Waiter:
    order: float  # the slot's timestamp (seconds since the epoch), or when a manual run was asked for
    seq: int
    runner: Admitted = field(compare=False)
    start: Callable[[], None] = field(compare=False)  # called once admitted; it calls acquire()


class Admission:
    def __init__(self, limit: int | None = None):
        self.limit = limit
        self.running = 0
        self._waiting: list[Waiter] = []
        self._seq = 0
        self._pumping = False
        self._again = False

    def __len__(self) -> int:
        return len(self._waiting)

    def free(self) -> bool:
        return self.limit is None or self.running < self.limit

    def acquire(self) -> None:
        self.running += 1

    def release(self) -> None:
        """A run ended (or an attempt did): its slot goes to the first waiting run that may start."""
        self.running = max(0, self.running - 1)
        self.pump()

    def wait(self, order: float, runner: Admitted, start: Callable[[], None]) -> Waiter:
        self._seq += 1
        waiter = Waiter(order, self._seq, runner, start)
        bisect.insort(self._waiting, waiter)
        return waiter

    def drop(self, waiter: Waiter) -> bool:
        """Take ``waiter`` out of the queue (deadline passed, job removed); False if it was not waiting."""
        try:
            self._waiting.remove(waiter)
        except ValueError:
            return False
        return True

    def set_limit(self, limit: int | None) -> None:
        self.limit = limit
        self.pump()

    def pump(self) -> None:
        """Start waiting runs while there is room. Re-entrant calls (a run that ends at once, in a test's
        fake executor) only ask for another pass, so the queue is never walked while it changes."""
        if self._pumping:
            self._again = True
            return
        self._pumping = True
        try:
            self._again = True
            while self._again:
                self._again = False
                for waiter in list(self._waiting):
                    if not self.free():
                        break
                    if waiter in self._waiting and waiter.runner.can_start():
                        self._waiting.remove(waiter)
                        waiter.start()
        finally:
            self._pumping = False
