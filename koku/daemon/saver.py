"""Writing state.json: coalesced, off the hub, retried on a full disk, and waited for where it matters.

Every change a runner reports bumps a sequence number; the ``saver`` greenlet writes whatever has
changed (one write covers a burst: 200 jobs due at once make one file, not 200) and remembers the
highest sequence number it has put on disk. ``wait_durable()`` blocks a run's greenlet until the
changes made before the call are on disk: the executor calls it between recording a run as
"starting" and spawning the child.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import gevent
import gevent.event

from koku.core import logfmt
from koku.core.model import JobMemory
from koku.core.state import StateStore
from koku.daemon.clock import Pacer

SAVE_RETRY = 5.0  # seconds between attempts to write state after a failure (full disk)
DURABLE_WAIT = 30.0  # seconds a run waits for its record to reach the disk before it starts anyway


class StateSaver:
    def __init__(self, store: StateStore, memory: Callable[[], dict[str, JobMemory]], clock: Any):
        self.store = store
        self.clock = clock  # a daemon clock (daemon/clock.py): every wait goes through it
        self._memory = memory
        self._dirty = gevent.event.Event()
        self._dirty_jobs: set[str] | None = set()  # None: everything must be written again
        self._changes = 0  # bumped by every change
        self._saved = 0  # the value of _changes that the last successful write covered
        self._written = gevent.event.Event()  # set (and replaced) after every write attempt
        self._exit = False
        self._retry = gevent.event.Event()
        self.failing = False  # the last write failed (full disk, read-only file system)

    def changed(self, name: str | None = None) -> None:
        """Something worth saving happened to job ``name`` (None: to everything)."""
        if name is None:
            self._dirty_jobs = None
        elif self._dirty_jobs is not None:
            self._dirty_jobs.add(name)
        self._changes += 1
        self._dirty.set()

    def wait_durable(self, timeout: float = DURABLE_WAIT) -> bool:
        """Block the calling greenlet until every change made so far is on disk. False when it cannot
        be (the disk is failing, or ``timeout`` seconds passed): the caller goes ahead regardless, since
        a run that does not happen is worse than a run whose record may be lost."""
        target = self._changes
        while self._saved < target:
            if self.failing or self._exit:
                return False
            if not self.clock.wait(self._written, timeout):
                return False
        return True

    def loop(self) -> None:
        """The ``saver`` greenlet's body."""
        while True:
            self._dirty.wait()
            if self._exit:
                return  # shutdown writes the final state itself, once this loop is out of the way
            self._dirty.clear()
            try:
                self.save()
                if self.failing:
                    logfmt.info("state written again", path=str(self.store.path))
                self.failing = False
            except OSError as exc:
                if not self.failing:
                    logfmt.error("cannot write state; will retry", path=str(self.store.path),
                                 reason=exc.strerror or str(exc))
                self.failing = True
                self._wake_waiters()
                self.clock.wait(self._retry, SAVE_RETRY)  # set by shutdown, which must not wait this out
                self._dirty.set()

    def save(self, in_thread: bool = True) -> None:
        """Write state.json now. Raises OSError (e.g. ENOSPC); nothing is lost: the next write has it."""
        dirty, self._dirty_jobs = self._dirty_jobs, set()
        covers = self._changes
        try:
            # Each changed job is encoded on the hub (in slices: a reload may change 10,000); joining the
            # pieces (megabytes at 100,000 jobs), writing, fsync and rename happen in the threadpool.
            pace = Pacer(self.clock).pace if in_thread else None
            parts = self.store.fragments(self._memory(), {"daemon_pid": os.getpid()}, dirty, pace)
            if in_thread:
                # write + fsync + rename off the hub: a slow disk must not delay a run that is due. The
                # error comes back as a value: gevent prints a traceback for a task that raises.
                error = gevent.get_hub().threadpool.apply(_write, (self.store, parts))
                if error is not None:
                    raise error
            else:
                self.store.write(self.store.join(parts))
        except OSError:
            self._dirty_jobs = None  # we do not know what made it to disk: write everything next time
            raise
        self._saved = max(self._saved, covers)
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        written, self._written = self._written, gevent.event.Event()
        written.set()

    def stop(self, saver: gevent.Greenlet | None, timeout: float) -> None:
        """Let the loop finish the write in progress and end. Joined, not killed: a killed saver leaves
        its threadpool write running, and that write would race the final one."""
        self._exit = True
        self._retry.set()
        self._dirty.set()
        if saver is not None:
            self.clock.wait(saver, timeout)
            if not saver.dead:
                logfmt.warning("state saver still writing at shutdown; final save goes ahead")
                saver.kill(block=False)


def _write(store: StateStore, parts: tuple[str, ...]) -> OSError | None:
    try:
        store.write(store.join(parts))
    except OSError as exc:
        return exc
    return None
