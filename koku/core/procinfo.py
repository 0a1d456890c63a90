"""What /proc says about processes: the one reader of /proc/PID/stat for the daemon's containment
(koku.daemon.procgroup) and for ``ku daemon stop``.

Pure: reads files, never signals anything but signal 0 (an existence probe) and starts nothing.
Zombies are "gone" throughout: where PID 1 never reaps orphans (a shell as a container's init), dead
processes linger as zombies and would otherwise look alive forever.
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping, NamedTuple

_DEAD = (b"Z", b"X")


class Proc(NamedTuple):
    pid: int
    state: bytes  # b"R", b"S", b"Z", ...
    ppid: int
    pgrp: int
    session: int

    @property
    def live(self) -> bool:
        return self.state not in _DEAD


def _parse(pid: int, data: bytes) -> Proc | None:
    # The command name may contain spaces and parentheses; the fields start after the last ")".
    fields = data[data.rfind(b")") + 2 :].split(None, 5)
    if len(fields) < 5:
        return None
    return Proc(pid, fields[0], int(fields[1]), int(fields[2]), int(fields[3]))


def stat(pid: int) -> Proc | None:
    """The process ``pid``, or None if it does not exist (or /proc is not mounted)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return _parse(pid, f.read())
    except OSError:
        return None


def scan() -> dict[int, Proc] | None:
    """Every process on the machine by pid, in one pass over /proc; None where /proc is not available.

    Blocking file I/O over every process: the daemon runs it in gevent's threadpool.
    """
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    table: dict[int, Proc] = {}
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                proc = _parse(int(name), f.read())
        except OSError:
            continue  # exited while we looked
        if proc is not None:
            table[proc.pid] = proc
    return table


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    proc = stat(pid)
    return proc is None or proc.live  # no /proc: trust kill(0)


def live_member_exists(pgid: int) -> bool | None:
    """Whether process group ``pgid`` has a non-zombie member; None where /proc is not available."""
    table = scan()
    if table is None:
        return None
    return any(p.pgrp == pgid and p.live for p in table.values())


def descendants(table: Mapping[int, Proc], roots: Iterable[int]) -> set[int]:
    """Pids below ``roots`` in the parent tree of ``table`` (the roots themselves not included)."""
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def environ_has(pid: int, wanted: Mapping[bytes, bytes], absent: Iterable[bytes] = ()) -> bool:
    """Whether the environment ``pid`` was exec'd with has every ``wanted`` NAME=value and none of the
    ``absent`` names (False if it cannot be read: another user's process, or gone)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read()
    except OSError:
        return False
    entries = data.split(b"\0")
    if any(entry.startswith(name + b"=") for name in absent for entry in entries):
        return False
    present = set(entries)
    return all(name + b"=" + value in present for name, value in wanted.items())


def environ(pid: int) -> dict[bytes, bytes] | None:
    """The environment ``pid`` was exec'd with, or None if it cannot be read (gone, or another user's)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return dict(item.split(b"=", 1) for item in data.split(b"\0") if b"=" in item)


def boot_time() -> float | None:
    """When the machine booted (UNIX seconds), from /proc/stat; None without /proc."""
    try:
        with open("/proc/stat", "rb") as fh:
            for line in fh:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def started_at(pid: int, boot: float | None = None) -> float | None:
    """When ``pid`` started (UNIX seconds, to a clock tick), or None. ``boot``: boot_time(), if known."""
    boot = boot_time() if boot is None else boot
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    if boot is None or len(fields) < 20:
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat(5): starttime in ticks
