"""The loop-lag probe: a greenlet that sleeps 10 ms at a time and records how late each sleep wakes.

Anything that holds the hub (parsing on it, a big encode, blocking file I/O, a burst of spawns) shows up
as a late wake-up. Off by default: the bench turns it on with ``KOKU_LAG_PROBE=1`` in the daemon's
environment and reads it through ``DaemonStatus``, which answers the figures since the previous read and
starts a new window (so the bench can bracket one load: read, apply the load, read again).
"""

from __future__ import annotations

import os
from typing import Any

from koku.core.clock import Clock

INTERVAL = 0.010  # seconds between wake-ups
MAX_SAMPLES = 200_000  # ~33 min of samples; older ones are dropped, so the probe cannot grow memory
ENV = "KOKU_LAG_PROBE"


def enabled() -> bool:
    return os.environ.get(ENV, "") not in ("", "0")


class LagProbe:
    def __init__(self, clock: Clock):
        self.clock = clock
        self._late: list[float] = []  # seconds each wake-up came after its due time

    def run(self) -> None:
        """The probe greenlet's body; never returns."""
        mono = self.clock.monotonic
        while True:
            due = mono() + INTERVAL
            self.clock.sleep(INTERVAL)
            late = mono() - due
            if len(self._late) >= MAX_SAMPLES:
                self._late.clear()
            self._late.append(max(0.0, late))

    def take(self) -> dict[str, Any]:
        """Figures since the last call (milliseconds), then start a new window."""
        late, self._late = sorted(self._late), []
        n = len(late)
        if not n:
            return {"samples": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}

        def pick(p: float) -> float:
            return round(late[min(n - 1, max(0, -(-n * p // 100) - 1))] * 1000, 2)

        return {"samples": n, "p50_ms": pick(50), "p99_ms": pick(99), "max_ms": round(late[-1] * 1000, 2)}
