"""The daemon's clocks: every wait of the daemon (event timeouts, sleeps, delayed starts) goes through one.

``GeventClock`` is the real one: wall and monotonic time from the kernel, waits on the gevent hub.
``SteppedClock`` is a fake with the same waits, for tests that run the whole daemon (scheduler loop,
saver, process supervisors, shutdown) on a clock they move by hand: a greenlet that waits on it wakes
when the test moves the clock past its deadline, or when what it waits for becomes ready. Both satisfy
``koku.core.clock.Clock``.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any, Callable

import gevent
import gevent.event

from koku.core.clock import RealClock, SettableWallClock, ready, shifted
from koku.daemon.clockwatch import ClockSetWatch


class GeventClock(RealClock):
    """Kernel time; waits yield to the gevent hub."""

    def __init__(self) -> None:
        super().__init__(gevent.sleep)

    def wait(self, waitable: Any, timeout: float | None) -> bool:
        if timeout is not None:
            timeout = max(0.0, timeout)
            # libev starts a timer from the loop's cached "now", which is as old as the loop's last
            # wake-up (after a long stretch of work on the hub, or in a fresh loop): without this the
            # wait ends early by that much.
            gevent.get_hub().loop.update_now()
        return bool(gevent.wait([waitable], timeout=timeout, count=1))

    def on_set(self, listener: Callable[[], None]) -> Callable[[], None] | None:
        """Through a timerfd (koku.daemon.clockwatch); None where the kernel cannot report it."""
        watch = ClockSetWatch(listener)
        return watch.close if watch.start() else None


class SteppedClock(SettableWallClock):
    """A clock that moves only when told to, and wakes the daemon's greenlets as it moves.

    ``advance(s)`` moves wall and monotonic time together and wakes every wait whose deadline it
    passes; ``jump(s)`` / ``set(when)`` move only the wall clock (an NTP step, a manual ``date``) and
    tell the ``on_set`` listeners, as the kernel's timerfd does for a real clock. ``next_deadline()`` and
    ``waiting(name)`` let a test step from one deadline to the next once the daemon is idle.
    """

    def __init__(self, start: datetime, monotonic: float = 1000.0):
        super().__init__(start, monotonic)
        self._seq = itertools.count()
        self.registered = 0  # waits begun so far; waiting(name, since=...) looks only at later ones
        # key -> (deadline in monotonic seconds, wake event, name of the waiting greenlet)
        self._waiters: dict[int, tuple[float, gevent.event.Event, str]] = {}

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def wait(self, waitable: Any, timeout: float | None) -> bool:
        if ready(waitable):
            return True
        if timeout is None:
            gevent.wait([waitable], count=1)
            return True
        if timeout <= 0:
            return False
        wake = gevent.event.Event()
        key = next(self._seq)
        self.registered = key + 1
        self._waiters[key] = (self._mono + timeout, wake, getattr(gevent.getcurrent(), "name", ""))

        def ready_now(_: Any) -> None:
            wake.set()

        waitable.rawlink(ready_now)
        try:
            wake.wait()
        finally:
            waitable.unlink(ready_now)
            self._waiters.pop(key, None)
        return ready(waitable)

    def sleep(self, seconds: float) -> None:
        self.wait(gevent.event.Event(), max(0.0, seconds))

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass (>= 0); waits that end meanwhile wake (when the caller next yields)."""
        if seconds < 0:
            raise ValueError("time does not run backwards; use jump() for a wall-clock step")
        self._now = shifted(self._now, seconds)
        self._mono += seconds
        for key, (deadline, wake, _name) in list(self._waiters.items()):
            if deadline <= self._mono:
                del self._waiters[key]  # gone at once, so waiting() sees only fresh waits
                wake.set()

    def jump(self, seconds: float) -> None:
        """Step the wall clock by ``seconds`` (either way); monotonic time does not move."""
        self.set(shifted(self._now, seconds))


    def next_deadline(self) -> float | None:
        """The earliest deadline (monotonic seconds) any greenlet waits for, or None."""
        return min((d for d, _, _ in self._waiters.values()), default=None)

    def waiting(self, name: str, since: int = 0) -> bool:
        """Whether the greenlet called ``name`` is waiting on this clock in a wait begun after the
        first ``since`` (see ``registered``). ``advance`` removes the waits it ends at once; a wait
        ended by its event (or by ``set``'s listeners) goes only when its greenlet runs again."""
        return any(n == name and key >= since for key, (_, _, n) in self._waiters.items())


def let_loop_run() -> None:
    """Let the loop serve everything pending (sockets, timers, other greenlets) before going on.

    Not a wait on time: it returns as soon as the loop has nothing else ready, on any clock. Long work
    on the hub (a burst of spawns, encoding 10,000 jobs) calls it between slices.
    """
    gevent.idle()


class Pacer:
    """Call ``pace()`` between the items of a long job on the hub: about every ``slice`` seconds (on the
    given clock) it lets the loop run, so timers, the socket and runs are served in between."""

    __slots__ = ("_mono", "_slice", "_until")

    def __init__(self, clock: Any, slice: float = 0.005):
        self._mono = clock.monotonic
        self._slice = slice
        self._until = self._mono() + slice

    def pace(self) -> None:
        if self._mono() >= self._until:
            let_loop_run()
            self._until = self._mono() + self._slice
