"""Forgetting jobs removed from the config: after ``[daemon] forget_removed_after`` their state, history
and log files are deleted and the memory is given back.

A job that leaves the config (by a reload, or by not being there when the daemon starts) is stamped
``removed`` in its saved state, so the retention runs across restarts. A job added back before then
keeps everything. One with a run still in flight is forgotten once that run has ended.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Callable

import gevent

from koku.core import logfmt
from koku.core.clock import Clock, shifted
from koku.core.model import JobMemory
from koku.core.runner import iso, parse_iso


def log_files(log_dir: Path, names: set[str]) -> list[Path]:
    """The job logs (``name.log`` and rotated ``name.log.N``) of ``names`` in ``log_dir``. Matched
    against the directory's entries, never joined from a name: a name read from state.json may be
    anything, and must not reach outside the directory. The daemon's own log is never one of them."""
    found = []
    try:
        entries = os.listdir(log_dir)
    except OSError:
        return found  # no log dir (deleted by hand): nothing to delete
    for entry in entries:
        base, dot, rest = entry.partition(".log")
        if not dot or base not in names or entry == "daemon.log":
            continue
        if rest == "" or (rest[:1] == "." and rest[1:].isdigit()):
            found.append(log_dir / entry)
    return found


def _delete(paths: list[Path]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


class Forgetting:
    def __init__(self, memory: Callable[[], dict[str, JobMemory]], log_dir: Path, clock: Clock,
                 changed: Callable[[str | None], None]):
        self._memory = memory
        self.log_dir = log_dir
        self.clock = clock
        self._changed = changed
        self._removed: dict[str, datetime] = {}  # name -> when it left the config (UTC)

    def scan(self, configured: set[str]) -> None:
        """At start: every job in state.json but not in the config is removed (since its stamp, or now)."""
        now = self.clock.now()
        for name, mem in self._memory().items():
            if name in configured:
                self.present(name, mem)
            else:
                self.removed(name, mem, parse_iso(mem.removed) or now)

    def removed(self, name: str, mem: JobMemory, when: datetime | None = None) -> None:
        when = when or self.clock.now()
        if mem.removed is None:
            mem.removed = iso(when)
            self._changed(name)
        self._removed[name] = when

    def present(self, name: str, mem: JobMemory) -> None:
        self._removed.pop(name, None)
        if mem.removed is not None:
            mem.removed = None
            self._changed(name)

    def forget_due(self, retention: float, busy: set[str]) -> list[str]:
        """Forget every removed job whose retention (seconds) has passed, except those in ``busy`` (a run
        in flight). File deletion runs in the threadpool. Returns the names forgotten."""
        if not self._removed:
            return []
        try:
            cutoff = shifted(self.clock.now(), -retention)
        except OverflowError:  # a retention of centuries: nothing is ever due
            return []
        due = {name for name, when in self._removed.items() if when <= cutoff and name not in busy}
        if not due:
            return []
        memory = self._memory()
        for name in due:
            self._removed.pop(name, None)
            memory.pop(name, None)
        self._changed(next(iter(due)))  # a save drops every job no longer in memory
        # Both never raise (gevent prints a traceback for a threadpool task that does).
        files = gevent.get_hub().threadpool.apply(log_files, (self.log_dir, due))
        gevent.get_hub().threadpool.apply(_delete, (files,))
        logfmt.info("forgot jobs removed from the config", jobs=len(due), after=retention,
                    names=",".join(sorted(due)[:10]) + (",..." if len(due) > 10 else ""))
        return sorted(due)
