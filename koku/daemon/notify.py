"""Delivery queues: one FIFO per job, worked by one greenlet per job while it has something to send.

Per job, so a job's events arrive in the order they happened (start before failure before recovery)
and one job's dead webhook cannot hold back another job's alerts. A failed attempt is retried after
1 s, 2 s, 4 s ... (``retries`` times), then given up and logged with the reason. The queues live as
long as the daemon, so a reload keeps what is undelivered (each delivery holds the notifier config it
was queued with). On shutdown what is pending gets a short grace, without further backoff waits.
A queue is bounded: a storm against a dead endpoint drops the oldest waiting entries, not memory.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable

import gevent
import gevent.event

from koku.core import logfmt
from koku.core.clock import Clock
from koku.errors import DeliveryError

BACKOFF = 1.0  # seconds before the first retry; doubles each time
BACKOFF_MAX = 60.0
QUEUE_MAX = 100  # deliveries waiting per job


@dataclass
class Delivery:
    job: str
    target: str  # notifier name, or "ping"
    kind: str  # the event ("failure", ...) or the ping ("start", "end")
    send: Callable[[], str]  # one attempt: the answer, or DeliveryError
    retries: int
    done: Callable[[bool, str], None]  # (delivered, answer or reason); called exactly once


class Dispatcher:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._queues: dict[str, deque[Delivery]] = {}
        self._workers: dict[str, gevent.Greenlet] = {}
        self._closing = False
        self._hurry = gevent.event.Event()  # set at shutdown: no more backoff waits
        self._idle = gevent.event.Event()
        self._idle.set()

    def pending(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def submit(self, delivery: Delivery) -> None:
        if self._closing:
            delivery.done(False, "not sent: the daemon is stopping")
            return
        queue = self._queues.setdefault(delivery.job, deque())
        if len(queue) >= QUEUE_MAX:
            # Keep the one being delivered (queue[0]); drop the oldest waiting one.
            dropped = queue[1]
            del queue[1]
            logfmt.warning("notification dropped: queue full", job=dropped.job, notifier=dropped.target,
                           event=dropped.kind, queued=QUEUE_MAX)
            dropped.done(False, f"dropped: {QUEUE_MAX} notifications were already waiting")
        queue.append(delivery)
        self._idle.clear()
        if delivery.job not in self._workers:
            self._start_worker(delivery.job)

    def _start_worker(self, job: str) -> None:
        worker = gevent.Greenlet(self._work, job)
        worker.name = f"notify:{job}"
        worker.link_exception(self._worker_died)
        self._workers[job] = worker
        worker.start()

    def _work(self, job: str) -> None:
        queue = self._queues[job]
        while queue:
            delivery = queue[0]
            self._deliver(delivery)
            if queue and queue[0] is delivery:
                queue.popleft()
        del self._queues[job]
        del self._workers[job]
        if not self._workers:
            self._idle.set()

    def _deliver(self, d: Delivery) -> None:
        reason = ""
        for attempt in range(d.retries + 1):
            try:
                answer = d.send()
            except DeliveryError as exc:
                reason = exc.reason
                if not exc.retry:
                    break
            except Exception as exc:  # a bug in a sender must not stop the queue
                reason = f"internal error: {exc!r}"
                break
            else:
                logfmt.info("notification delivered", job=d.job, notifier=d.target, event=d.kind, answer=answer,
                            attempts=attempt + 1)
                d.done(True, answer)
                return
            if attempt == d.retries or self._closing:
                break
            delay = min(BACKOFF * 2**attempt, BACKOFF_MAX)
            logfmt.warning("notification failed; will retry", job=d.job, notifier=d.target, event=d.kind,
                           reason=reason, attempt=attempt + 1, retry_in=delay)
            self.clock.wait(self._hurry, delay)
        logfmt.error("notification given up", job=d.job, notifier=d.target, event=d.kind, reason=reason)
        d.done(False, reason)

    def _worker_died(self, worker: gevent.Greenlet) -> None:
        job = worker.name.partition(":")[2]
        logfmt.error("notification worker died", job=job, reason=repr(worker.exception))
        self._workers.pop(job, None)
        queue = self._queues.get(job)
        if queue:
            failed = queue.popleft()  # the one it died on: retrying it would only kill the next worker
            failed.done(False, f"internal error: {worker.exception!r}")
        if queue:
            self._start_worker(job)
        else:
            self._queues.pop(job, None)
            if not self._workers:
                self._idle.set()

    def close(self, grace: float) -> None:
        """Stop taking new deliveries; give pending ones up to ``grace`` seconds, then drop the rest."""
        self._closing = True
        self._hurry.set()
        if self._workers:
            logfmt.info("delivering pending notifications", pending=self.pending(), grace=grace)
            self.clock.wait(self._idle, grace)
        for job, worker in list(self._workers.items()):
            worker.unlink(self._worker_died)
            worker.kill(block=False)
            self.clock.wait(worker, 1.0)
            for d in self._queues.pop(job, ()):
                logfmt.warning("notification not delivered: the daemon stopped", job=d.job, notifier=d.target,
                               event=d.kind)
                d.done(False, "not delivered: the daemon stopped")
        self._workers.clear()
