"""Process groups and run containment: the one place that signals a run's processes.

A *cage* holds one run's processes; the daemon's *containment* makes cages and, at stop, kills what
is left of every run. Three kinds, best first (``KOKU_CONTAINMENT`` = auto | cgroup | subreaper |
group forces one; auto takes the first that works):

- ``cgroup``: a cgroup v2 child per run (koku.daemon.cgroup). Nothing the run starts can leave it.
- ``subreaper``: the daemon is a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so a descendant that
  setsid()s away and loses its parent is re-parented to the daemon instead of init. A run's processes
  are its process group, everything below its leader or its group in the parent tree, and orphans
  re-parented to the daemon whose environment names the run (KOKU_JOB, KOKU_RUN_ID; not the run's
  notifier commands, which carry them too, with KOKU_NOTIFIER), plus whatever was found that way before. Only the daemon's descendants are ever signalled (a pid seen once may
  have been reused since). A process that both escapes and clears its environment is caught only
  at daemon stop, which kills every descendant of the daemon.
- ``group``: the process group only (ProcessRun's default outside the daemon).

ESRCH means "already gone" everywhere. Scans of /proc run in gevent's threadpool, never on the hub.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from typing import Any, Iterator

from koku.core import logfmt, procinfo
from koku.core.clock import Clock
from koku.daemon import offhub
from koku.errors import CgroupUnavailable

# Loaded at import, i.e. at daemon start-up: a ctypes.py planted later cannot be picked up.
_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_CHILD_SUBREAPER = 36

KINDS = ("auto", "cgroup", "subreaper", "group")


def _check_pgid(pgid: int) -> None:
    # killpg(0) and killpg(1) would hit the daemon's own group or everything: never let a bad record do that.
    if pgid <= 1:
        raise ValueError(f"refusing to signal process group {pgid}")


def kill_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``. False if the group is gone (ESRCH) or no longer ours
    (EPERM: the id was reused by another user's process). Raises ValueError for pgid <= 1."""
    _check_pgid(pgid)
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def kill_pid(pid: int, sig: int) -> bool:
    """Send ``sig`` to one process; False if it is gone. Raises ValueError for pid <= 1."""
    if pid <= 1 or pid == os.getpid():
        raise ValueError(f"refusing to signal pid {pid}")
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` still has a live (non-zombie) member we may signal."""
    if not kill_group(pgid, 0):
        return False
    live = procinfo.live_member_exists(pgid)
    return True if live is None else live


def set_child_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux 3.4+); False if refused."""
    try:
        return _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except AttributeError:  # no prctl: not Linux
        return False


class Cage:
    """The ``group`` kind: one run's process group. Subclasses widen what belongs to the run."""

    kind = "group"

    def __init__(self) -> None:
        self.leader: int | None = None

    @contextlib.contextmanager
    def spawning(self) -> Iterator[None]:
        """Around the fork: the cgroup kind makes the child start inside the run's cgroup."""
        yield

    def started(self, pid: int) -> None:
        """The leader is ``pid`` (its own session and group); called before the hub runs again."""
        self.leader = pid

    def signal(self, sig: int) -> None:
        """Send ``sig`` to everything of the run that is still alive."""
        if self.leader is not None:
            kill_group(self.leader, sig)

    def alive(self) -> bool:
        """Whether anything of the run is alive. May wait on the threadpool (never blocks the hub)."""
        return self.leader is not None and offhub.in_thread(group_alive, self.leader)

    def release(self) -> dict[str, int] | None:
        """The run is over: free what the cage holds; resource figures where the kind has them."""
        return None


class SubreaperCage(Cage):
    kind = "subreaper"

    def __init__(self, containment: "SubreaperContainment", job: str, run: int) -> None:
        super().__init__()
        self._containment = containment
        self._env = {b"KOKU_JOB": job.encode(), b"KOKU_RUN_ID": str(run).encode()}
        self._seen: set[int] = set()

    def started(self, pid: int) -> None:
        super().started(pid)
        self._containment.leaders.add(pid)

    def _members(self) -> list[int]:
        """Live pids of the run (blocking: /proc). Remembers escapees for the next look."""
        me = os.getpid()
        table = procinfo.scan()
        if table is None or self.leader is None:
            return []
        mine = procinfo.descendants(table, (me,))
        leaders = self._containment.leaders
        roots = {p for p in mine if table[p].pgrp == self.leader or p in self._seen or p == self.leader}
        roots |= {p for p in mine if table[p].ppid == me and p not in leaders and p not in roots
                  and procinfo.environ_has(p, self._env, absent=(b"KOKU_NOTIFIER",))}
        members = (roots | procinfo.descendants(table, roots)) & mine
        self._seen = {p for p in members if table[p].live}
        return sorted(self._seen)

    def signal(self, sig: int) -> None:
        super().signal(sig)
        for pid in offhub.in_thread(self._members):
            kill_pid(pid, sig)
        self._containment.reap_orphans()

    def alive(self) -> bool:
        if self.leader is None:
            return False
        self._containment.reap_orphans()
        return bool(offhub.in_thread(self._members)) or offhub.in_thread(group_alive, self.leader)

    def release(self) -> dict[str, int] | None:
        self._containment.leaders.discard(self.leader)  # type: ignore[arg-type]
        return None


class Containment:
    """The ``group`` kind for the whole daemon."""

    kind = "group"

    def describe(self) -> dict[str, Any]:
        return {"containment": self.kind}

    def cage(self, job: str, run: int) -> Cage:
        return Cage()

    def stop(self, clock: Clock, grace: float) -> None:
        """Daemon stop, after every run has ended: kill what runs left behind (TERM, ``grace``
        seconds, KILL) and free the containment."""


class SubreaperContainment(Containment):
    kind = "subreaper"

    def __init__(self) -> None:
        self.leaders: set[int] = set()  # pids whose exit status a ProcessRun's child watcher awaits

    def cage(self, job: str, run: int) -> Cage:
        return SubreaperCage(self, job, run)

    def reap_orphans(self) -> None:
        """Reap zombies re-parented to the daemon, by pid (never waitpid(-1)): run leaders are left
        to their child watchers. On the hub, with no switch between the check and the wait, so a
        leader spawned meanwhile cannot be taken for an orphan."""
        me = os.getpid()
        table = offhub.in_thread(procinfo.scan) or {}
        for proc in table.values():
            if proc.ppid == me and not proc.live and proc.pid not in self.leaders:
                try:
                    os.waitpid(proc.pid, os.WNOHANG)
                except ChildProcessError:
                    pass  # gevent's loop reaped it first

    def _descendants(self) -> list[int]:
        table = procinfo.scan() or {}
        return sorted(p for p in procinfo.descendants(table, (os.getpid(),)) if table[p].live)

    def stop(self, clock: Clock, grace: float) -> None:
        left = offhub.in_thread(self._descendants)
        if not left:
            return
        logfmt.info("killing processes runs left behind", pids=" ".join(map(str, left)), grace=grace)
        for pid in left:
            kill_pid(pid, signal.SIGTERM)
        deadline = clock.monotonic() + grace
        while clock.monotonic() < deadline:
            self.reap_orphans()
            if not offhub.in_thread(self._descendants):
                return
            clock.sleep(0.05)
        deadline = clock.monotonic() + 2.0
        while (left := offhub.in_thread(self._descendants)) and clock.monotonic() < deadline:
            for pid in left:  # again each time: one may have forked before its KILL
                kill_pid(pid, signal.SIGKILL)
            clock.sleep(0.02)
            self.reap_orphans()


def setup(mode: str) -> Containment:
    """The daemon's containment for ``mode`` (one of KINDS). A kind that cannot be had is logged, with
    the reason, and the next one is used. The subreaper bit is set in every kind but ``group``, so
    that what a run leaves behind is reaped by the daemon, not by an init that may never reap."""
    if mode not in KINDS:
        logfmt.warning("unknown KOKU_CONTAINMENT; using auto", value=mode, reason=f"expected one of {', '.join(KINDS)}")
        mode = "auto"
    if mode == "group":
        return Containment()
    subreaper = set_child_subreaper()
    if mode in ("auto", "cgroup"):
        from koku.daemon.cgroup import CgroupContainment

        try:
            return CgroupContainment.create()
        except CgroupUnavailable as exc:
            log = logfmt.warning if mode == "cgroup" else logfmt.info
            log("no cgroup per run; falling back", reason=str(exc))
    if subreaper:
        return SubreaperContainment()
    logfmt.warning("no child subreaper; runs are contained by their process group only",
                   reason=os.strerror(ctypes.get_errno()))
    return Containment()
