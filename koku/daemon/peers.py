"""Who is on the other end of a control-socket connection, and may they talk to a root daemon.

The kernel's word only: ``SO_PEERCRED`` (pid, uid, gid at connect time) and ``SO_PEERGROUPS`` (the
peer's supplementary groups at connect time, Linux 4.13+), else the ``Groups:`` line of
``/proc/<pid>/status``. ``/etc/group`` is not consulted: a group granted another way (``setgroups``,
``newgrp``, NSS sources, an ``sg`` shell) counts, and a listed member who dropped the group does not.
"""

from __future__ import annotations

import errno
import os
import socket as stdsocket
import struct
from typing import Any, NamedTuple

SO_PEERGROUPS = getattr(stdsocket, "SO_PEERGROUPS", 59)  # Linux; Python does not export it everywhere
NGROUPS_MAX = 65536


class Peer(NamedTuple):
    pid: int
    uid: int
    gid: int


def peer_of(conn: Any) -> Peer | None:
    """The connecting process's credentials, or None if the kernel will not say."""
    try:
        raw = conn.getsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return Peer(*struct.unpack("3i", raw))


def peer_groups(conn: Any, peer: Peer) -> set[int]:
    """The peer's supplementary group ids (empty if they cannot be learnt)."""
    size = 64
    while size <= NGROUPS_MAX:
        try:
            raw = conn.getsockopt(stdsocket.SOL_SOCKET, SO_PEERGROUPS, size * 4)
        except OSError as exc:
            if exc.errno == errno.ERANGE:
                size *= 32
                continue
            break  # ENOPROTOOPT: an older kernel; ask /proc
        return set(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
    return _proc_groups(peer)


def _proc_groups(peer: Peer) -> set[int]:
    # A pid is only a name: the peer may have exited and the pid been reused, so the file counts only
    # if it still describes a process with the peer's uid. procfs reads do not touch a disk.
    if peer.pid <= 0:
        return set()
    try:
        with open(f"/proc/{peer.pid}/status", encoding="ascii", errors="replace") as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
    except OSError:
        return set()
    try:
        uids = [int(x) for x in fields.get("Uid", "").split()]
        groups = {int(x) for x in fields.get("Groups", "").split()}
    except ValueError:
        return set()
    return groups if peer.uid in uids[:1] else set()


def peer_allowed(conn: Any, peer: Peer | None, gid: int | None) -> bool:
    """When the daemon runs as root, only root and members of group ``gid`` may talk to it."""
    if os.geteuid() != 0:
        return True  # the socket's 0600 mode already limits it to our own user (and root)
    if peer is None:
        return False
    if peer.uid == 0:
        return True
    if gid is None:
        return False
    return peer.gid == gid or gid in peer_groups(conn, peer)
