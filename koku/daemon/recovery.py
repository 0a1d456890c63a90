"""After a crash: runs the last daemon left in flight are recorded as interrupted, and their process
groups, if still alive, are killed before anything is scheduled.

Killed, not adopted: a process that is not our child cannot be waited for, so its exit status and the
rest of its output are lost whatever we do, and an orphan left running breaks ``overlap = false``
(the next scheduled run starts beside it). Each group gets SIGTERM, then SIGKILL after ``kill_grace``,
as a timeout would. A group is found by the environment every run carries (``KOKU_JOB``,
``KOKU_RUN_ID``), not by the saved pid alone: the pid may not have reached the disk before the crash,
and a saved pid may since belong to someone else (reuse, a reboot), who must never be signalled.
"""

from __future__ import annotations

import os
import signal
from datetime import datetime

from koku.core import logfmt
from koku.core.clock import Clock
from koku.core import procinfo
from koku.core.model import JobMemory, RunRecord
from koku.core.runner import close_interrupted, parse_iso
from koku.daemon.process import group_alive, kill_group

START_SLACK = 2.0  # seconds a process may appear to start before its record (clock-tick rounding)
POLL = 0.05  # seconds between looks at whether the killed groups are gone


def find_groups(wanted: dict[tuple[str, int], datetime]) -> dict[tuple[str, int], set[int]]:
    """Process groups of live processes whose environment says they belong to run (job, run id),
    started no earlier than that run (``wanted`` maps each run to its recorded start). One /proc scan
    (koku.core.procinfo, the one reader of /proc)."""
    found: dict[tuple[str, int], set[int]] = {}
    if not wanted:
        return found
    boot = procinfo.boot_time()
    me = os.getpid()
    for pid, proc in (procinfo.scan() or {}).items():
        if pid == me or not proc.live:
            continue
        env = procinfo.environ(pid)
        if not env or b"KOKU_RUN_ID" not in env:
            continue  # gone, not ours to read, or not a run
        try:
            key = (env.get(b"KOKU_JOB", b"").decode(), int(env[b"KOKU_RUN_ID"]))
        except (UnicodeDecodeError, ValueError):
            continue
        started = wanted.get(key)
        if started is None:
            continue
        began = procinfo.started_at(pid, boot)
        if began is not None and began < started.timestamp() - START_SLACK:
            continue  # older than the run: a process that inherited the variables, not the run
        if proc.pgrp > 1:
            found.setdefault(key, set()).add(proc.pgrp)
    return found


def recover(memory: dict[str, JobMemory], clock: Clock, kill_grace: float, keep: int) -> None:
    """Record every run left in flight as interrupted, killing what is left of it. Blocks (in the
    calling greenlet) for at most ``kill_grace`` seconds while TERMed groups exit."""
    records: list[tuple[str, RunRecord]] = [(name, r) for name, mem in memory.items() for r in mem.in_flight]
    if not records:
        return
    wanted = {(name, r.run): parse_iso(r.started) or clock.now() for name, r in records}
    groups = find_groups(wanted)
    doomed = sorted({pgid for found in groups.values() for pgid in found})
    for pgid in doomed:
        kill_group(pgid, signal.SIGTERM)
    deadline = clock.monotonic() + kill_grace
    while any(group_alive(p) for p in doomed) and clock.monotonic() < deadline:
        clock.sleep(POLL)
    killed = {p for p in doomed if group_alive(p)}
    for pgid in killed:
        kill_group(pgid, signal.SIGKILL)
    now = clock.now()
    for name, record in records:
        found = sorted(groups.get((name, record.run), ()))
        if found:
            record.pid = record.pid if record.pid in found else found[0]
            how = "killed (SIGKILL after the grace)" if set(found) & killed else "terminated (SIGTERM)"
            what = ", ".join(str(p) for p in found)
            detail = f"; its process group {what} was still alive and was {how}"
        elif record.phase == "starting":
            detail = None
        elif record.pid is not None:
            detail = f"; its process group {record.pid} had ended"
        else:
            detail = ""
        description = ("interrupted: the daemon stopped while starting the run; whether it ran is unknown"
                       if detail is None else "interrupted: the daemon stopped during the run" + detail)
        close_interrupted(memory[name], record, description, now, keep)
        logfmt.warning("run interrupted by a daemon crash", job=name, run=record.run, pid=record.pid,
                       outcome=record.outcome, reason=description)
