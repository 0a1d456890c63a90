"""One daemon per state dir, with a lock nobody can delete, and the pid file the daemon owns.

The lock is an abstract Unix socket (Linux) named after the state dir's real path: it lives in the
kernel, not in the file system, so deleting ``daemon.pid``, ``daemon.sock`` or the whole state dir (as
muzan's stop does, or an over-eager cleanup) cannot let a second daemon start beside the first. The
kernel drops it when the daemon dies, however it dies. The lock socket listens, so a daemon refused at
start learns who holds it from SO_PEERCRED (pid and uid), even when ``daemon.pid`` is gone.

``daemon.pid`` is informative only. It is written under a temporary name and renamed into place (never
through a link planted at the path), its inode is remembered, and it is removed at exit only if it is
still the file this daemon wrote.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import struct
from pathlib import Path

from koku.core import safefs
from koku.errors import AlreadyRunning, KokuError


def lock_name(root: Path) -> bytes:
    """The abstract socket name for state dir ``root`` (its real path: a symlink to it is the same dir)."""
    digest = hashlib.sha256(os.fsencode(os.path.realpath(root))).hexdigest()[:40]
    return b"\0koku-state-" + digest.encode()


def holder(name: bytes) -> tuple[int, int] | None:
    """(pid, uid) of the process that holds lock ``name``, if it can be asked."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(name)
        raw = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    finally:
        probe.close()
    pid, uid, _gid = struct.unpack("3i", raw)
    return pid, uid


class Singleton:
    def __init__(self, root: Path, pid_file: Path):
        self.root = root
        self.pid_file = pid_file
        self._sock: socket.socket | None = None
        self._pid_inode: tuple[int, int] | None = None

    def acquire(self) -> None:
        """Take the lock. Raises AlreadyRunning (naming the holder) or KokuError."""
        name = lock_name(self.root)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(name)
            sock.listen(8)
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise KokuError(f"cannot take the lock for {self.root}: {exc.strerror}") from None
            found = holder(name)
            if found is not None and found[1] != os.geteuid():
                raise KokuError(f"the lock for {self.root} is held by pid {found[0]} of uid {found[1]}, not by a "
                                f"koku daemon of this user; stop that process") from None
            raise AlreadyRunning(found[0] if found else read_pid(self.pid_file), self.root) from None
        self._sock = sock

    def write_pid(self) -> None:
        """(Re)write daemon.pid. Raises OSError (a full disk): the caller logs and retries."""
        tmp = self.pid_file.with_name(f".{self.pid_file.name}.{os.getpid()}")
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            _unlink_quietly(tmp)
            raise
        os.close(fd)
        try:
            os.replace(tmp, self.pid_file)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        self._pid_inode = (st.st_dev, st.st_ino)

    def pid_file_ours(self) -> bool | None:
        """True if daemon.pid is the file we wrote, False if something else is there, None if it is gone."""
        return safefs.still_ours(self.pid_file, self._pid_inode)

    def release(self) -> None:
        if self.pid_file_ours():
            _unlink_quietly(self.pid_file)
        self._pid_inode = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
