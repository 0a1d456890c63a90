"""One heap of timers for the whole daemon, and the loop step that fires what is due. Pure.

The daemon holds no sleeping greenlet or timer per job: each job keeps at most one entry here (its next
run, and a timed pause's end), so 10,000 idle jobs cost one heap. ``tick()`` fires what is due and says
how long to sleep; the daemon's scheduler greenlet sleeps that long (at most ``MAX_SLEEP``) or until
woken, then ticks again. The daemon also wakes it the moment the kernel reports that the wall clock
was set (a timerfd, koku.daemon.clockwatch); re-reading the clock after each bounded sleep is the
fallback that notices jumps and suspend/resume anyway.

Jumps: each tick compares how far the wall clock moved with how far the monotonic clock moved.
- Forward (NTP step, resume from suspend, date set ahead): entries whose time fell in the gap are all
  due now and each fires once; a job computes its next run from *now*, so a job whose many runs fell in
  the gap runs once, not once per missed instant.
- Backward: ``on_step_back(seconds)`` is called before anything fires, and each job applies cronie's
  rule (``JobRunner.clock_stepped_back``): wildcard jobs carry on from the new wall time, fixed-time
  jobs keep their next run so that no slot runs twice; a step of more than ``BACKWARD_KEEP`` is the
  clock being set, and every job starts afresh from the new time.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from koku.core.clock import Clock, shifted

MAX_SLEEP = 60.0  # seconds; the longest the loop sleeps before re-reading the clock
# Linux lets a poll/epoll timeout fire late by 0.1% of its length (up to 100 ms) for ordinary tasks, so
# a 60 s wait for a run due at a minute boundary ended ~60 ms late. Long waits stop this much short;
# the second, short wait that follows has next to no slack.
EARLY_FRACTION = 0.002
JUMP_TOLERANCE = 2.0  # seconds of wall/monotonic disagreement that count as a jump
BACKWARD_KEEP = 3 * 3600.0  # seconds; a step back further than this is the clock being set


@dataclass(order=True, slots=True)
class Timer:
    when: datetime
    seq: int
    callback: Callable[[], None] = field(compare=False)
    label: str = field(compare=False, default="")
    cancelled: bool = field(compare=False, default=False)

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    def __init__(
        self,
        clock: Clock,
        on_error: Callable[[Timer, BaseException], None] | None = None,
        on_jump: Callable[[float], None] | None = None,
        on_step_back: Callable[[float], None] | None = None,
        on_earlier: Callable[[], None] | None = None,
    ):
        self.clock = clock
        self._heap: list[Timer] = []
        self._seq = itertools.count()
        self._on_error = on_error
        self._on_jump = on_jump
        self._on_step_back = on_step_back
        # Called when a timer added from outside the loop (a retry, a timed pause, a queue deadline) is
        # due before the instant the loop sleeps towards: the loop must wake and sleep less.
        self._on_earlier = on_earlier
        self._last_wall: datetime | None = None
        self._last_mono = 0.0

    def add(self, when: datetime, callback: Callable[[], None], label: str = "") -> Timer:
        # Heap order must be the order of instants: two datetimes of one zone compare by wall time,
        # ignoring fold, so a repeated hour's second pass would sort with its first.
        timer = Timer(when.astimezone(timezone.utc), next(self._seq), callback, label)
        heapq.heappush(self._heap, timer)
        if self._on_earlier is not None and self._heap[0] is timer:
            self._on_earlier()
        return timer

    def purge(self) -> None:
        """Drop cancelled timers now rather than when they reach the top of the heap: a reload from
        100,000 jobs to 1 leaves 100,000 of them, each holding its job's runner alive."""
        self._heap = [t for t in self._heap if not t.cancelled]
        heapq.heapify(self._heap)

    def next_due(self) -> datetime | None:
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0].when if self._heap else None

    def _check_jump(self, now: datetime) -> None:
        mono = self.clock.monotonic()
        if self._last_wall is not None:
            expected = shifted(self._last_wall, mono - self._last_mono)
            jump = (now - expected).total_seconds()
            if abs(jump) > JUMP_TOLERANCE:
                if self._on_jump:
                    self._on_jump(jump)
                if jump < 0 and self._on_step_back:
                    self._on_step_back(-jump)
        self._last_wall, self._last_mono = now, mono

    def tick(self, budget: float | None = None) -> float:
        """Fire every timer that is due and return seconds until the next one (at most MAX_SLEEP).

        With ``budget`` (seconds), stop firing once that much monotonic time has gone and return 0 while
        due timers remain: the caller lets its event loop serve other work, then ticks again. (1,000 jobs
        due at once cost ~0.7 s of next-run computing in one tick.)
        """
        now = self.clock.now()
        self._check_jump(now)
        until = None if budget is None else self.clock.monotonic() + budget
        # Timers added by callbacks for an instant <= now fire in this same tick; a job's next run is
        # always strictly after now, so this cannot spin.
        while True:
            when = self.next_due()
            if when is None or when > now:
                break
            if until is not None and self.clock.monotonic() >= until:
                return 0.0
            timer = heapq.heappop(self._heap)
            try:
                timer.callback()
            except Exception as exc:  # one bad job must not stop the scheduler
                if self._on_error:
                    self._on_error(timer, exc)
                else:
                    raise
        when = self.next_due()
        if when is None:
            return MAX_SLEEP
        wait = max(0.0, min(MAX_SLEEP, (when - self.clock.now()).total_seconds()))
        return wait - wait * EARLY_FRACTION if wait > 1.0 else wait
