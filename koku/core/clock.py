"""Time through one injectable object.

Wall time (aware UTC datetimes) is for schedules; monotonic seconds are for timeouts, grace periods and
backoff. Nothing else in koku reads the time or waits with a timeout (``time.time()``, ``datetime.now()``,
``sleep``, ``Event.wait(timeout)``, ``join(timeout)``; tests/test_clock_use.py checks the source): every
one goes through a ``Clock``. This module defines the protocol and the gevent-free clocks: ``RealClock``
for the client, ``FakeClock`` for the policy tests. The daemon's clocks, which wait on gevent events,
live in ``koku.daemon.clock`` (``GeventClock``; ``SteppedClock``, a fake that drives the whole daemon).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Protocol


def shifted(instant: datetime, seconds: float) -> datetime:
    """``instant`` moved by ``seconds`` (may be negative), as an aware UTC datetime.

    The one place the daemon adds a duration to an instant. ``datetime + timedelta`` on a zone-local
    datetime keeps the wall time and drops ``fold``: 01:00 EST (the second pass of a fall-back hour)
    plus 0 s comes out as 01:00 EDT, an hour early. In UTC there is no fold to lose.
    Raises ValueError for a naive ``instant``.
    """
    if instant.utcoffset() is None:
        raise ValueError(f"shifted needs an aware datetime, got {instant!r}")
    return instant.astimezone(timezone.utc) + timedelta(seconds=seconds)


class Clock(Protocol):
    def now(self) -> datetime:
        """Current wall time, timezone-aware, in UTC."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps."""

    def sleep(self, seconds: float) -> None:
        """Block (cooperatively, in the daemon) for ``seconds``."""

    def wait(self, waitable: Any, timeout: float | None) -> bool:
        """Block until ``waitable`` (an event, or in the daemon a greenlet or AsyncResult) is ready, or
        ``timeout`` seconds pass on this clock (``None``: no limit). True if it is ready."""

    def on_set(self, listener: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``listener()`` whenever the wall clock is set (stepped), as soon as it is. Returns a
        function that stops this, or None when this clock cannot tell (then a step is noticed only by
        comparing wall and monotonic time)."""


def ready(waitable: Any) -> bool:
    """Whether an event (threading or gevent), greenlet or AsyncResult is set / finished."""
    check = getattr(waitable, "ready", None) or waitable.is_set
    return bool(check())


class RealClock:
    def __init__(self, sleep: Callable[[float], None] = time.sleep):
        self._sleep = sleep

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        self._sleep(max(0.0, seconds))

    def wait(self, waitable: Any, timeout: float | None) -> bool:
        """Events (threading or gevent) and greenlets; cooperative when they are gevent's."""
        limit = None if timeout is None else max(0.0, timeout)
        wait = getattr(waitable, "wait", None)
        if wait is None:
            waitable.join(limit)  # a greenlet
        else:
            wait(limit)
        return ready(waitable)

    def on_set(self, listener: Callable[[], None]) -> Callable[[], None] | None:
        return None  # the client never needs to know


class SettableWallClock:
    """What the fake clocks share: a wall clock a test sets (a jump) and the listeners that hear of it.
    Subclasses keep ``_now`` (aware UTC) and ``_mono`` (monotonic seconds)."""

    def __init__(self, start: datetime, monotonic: float):
        if start.tzinfo is None:
            raise ValueError(f"{type(self).__name__} needs an aware datetime")
        self._now = start.astimezone(timezone.utc)
        self._mono = monotonic
        self._set_listeners: list[Callable[[], None]] = []

    def set(self, when: datetime) -> None:
        """Set the wall clock (a jump); monotonic time does not move. Listeners hear of it."""
        self._now = when.astimezone(timezone.utc)
        for listener in list(self._set_listeners):
            listener()

    def on_set(self, listener: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``listener`` whenever the wall clock is set (as the kernel's timerfd does for a real one)."""
        self._set_listeners.append(listener)
        return lambda: self._set_listeners.remove(listener)


class FakeClock(SettableWallClock):
    """A clock that moves only when told to.

    ``advance`` moves wall and monotonic time together; ``jump`` moves only the wall clock, as an NTP
    step or a manual ``date`` change does. ``sleep`` advances both, so code that sleeps runs instantly;
    ``wait`` on something not ready does the same for the whole timeout (nothing else can run meanwhile).
    """

    def __init__(self, start: datetime, monotonic: float = 1000.0):
        super().__init__(start, monotonic)
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(max(0.0, seconds))

    def wait(self, waitable: Any, timeout: float | None) -> bool:
        if ready(waitable) or timeout is None:
            return ready(waitable)
        self.sleep(timeout)
        return ready(waitable)

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds

    def jump(self, seconds: float) -> None:
        self.set(self._now + timedelta(seconds=seconds))

