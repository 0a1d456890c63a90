"""Who is waiting for which run: `ku run --wait` (the Wait request) parks here until the run ends.

The daemon reports every finished run to ``finished()``; the control side only ever calls ``until_finished()``.
One owner for the waiters, so neither side reaches into the other's dicts.
"""

from __future__ import annotations

import gevent.event

from koku.core.model import RunRecord


class RunWaiters:
    def __init__(self) -> None:
        self._waiting: dict[tuple[str, int], gevent.event.AsyncResult] = {}

    def until_finished(self, name: str, run: int) -> RunRecord:
        """Block this greenlet until run ``run`` of job ``name`` ends; returns its record."""
        waiter = self._waiting.setdefault((name, run), gevent.event.AsyncResult())
        return waiter.get()

    def finished(self, name: str, record: RunRecord) -> None:
        waiter = self._waiting.pop((name, record.run), None)
        if waiter is not None:
            waiter.set(record)
