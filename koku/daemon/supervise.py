"""The daemon's own greenlets: each one named, stored, and linked to a failure callback, so none dies in
silence; the long-lived loops are restarted a second after they die. Waits go through the daemon's
Clock, so a fake clock drives delayed starts too (gevent.spawn_later would not)."""

from __future__ import annotations

from typing import Any, Callable

import gevent

from koku.core import logfmt
from koku.core.clock import Clock

RESTART_AFTER = 1.0  # seconds: a loop that dies at once must not spin


class Greenlets:
    def __init__(self, clock: Clock, stopping: Callable[[], bool]):
        self.clock = clock
        self.stopping = stopping
        self._running: dict[str, gevent.Greenlet] = {}
        self._loops: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]] = {}

    def spawn(self, name: str, func: Callable[..., Any], *args: Any, restart: bool = False) -> None:
        """Start ``func(*args)`` as greenlet ``name``; with ``restart``, start it again whenever it dies."""
        if restart:
            self._loops[name] = (func, args)
        g = gevent.Greenlet(func, *args)
        g.name = name
        g.link_exception(self._died)
        self._running[name] = g
        g.start()

    def spawn_after(self, name: str, seconds: float, func: Callable[..., Any], *args: Any) -> None:
        """``func(*args)`` after ``seconds`` on the daemon's clock, in a greenlet of its own."""
        def later() -> None:
            self.clock.sleep(seconds)
            func(*args)

        self.spawn(name, later)

    def get(self, name: str) -> gevent.Greenlet | None:
        return self._running.get(name)

    def pop(self, name: str) -> gevent.Greenlet | None:
        """Take greenlet ``name`` out of supervision (shutdown stops it in its own order); None if absent."""
        self._loops.pop(name, None)
        g = self._running.pop(name, None)
        if g is not None:
            g.unlink(self._died)
        return g

    def kill(self, name: str) -> None:
        g = self.pop(name)
        if g is not None:
            g.kill()

    def _died(self, g: gevent.Greenlet) -> None:
        if g.name not in self._loops:
            logfmt.error("greenlet died", greenlet=g.name, reason=repr(g.exception))
            return
        logfmt.error(f"greenlet died; restarting it in {RESTART_AFTER:g}s", greenlet=g.name, reason=repr(g.exception))
        if not self.stopping():
            self.spawn_after(f"restart-{g.name}", RESTART_AFTER, self._restart, g.name)

    def _restart(self, name: str) -> None:
        loop = self._loops.get(name)
        if loop is not None and not self.stopping():
            self.spawn(name, loop[0], *loop[1], restart=True)
