"""Files a root daemon opens in its state dir, opened so that nobody else can redirect them.

Every path under the state dir may be a symlink, a FIFO or someone else's. So:
- the directory is reached by walking from ``/`` one component at a time through directory fds; each
  directory on the way must be owned by root or by us and writable by nobody else (ssh's StrictModes;
  a root-owned sticky directory such as ``/tmp`` may be world-writable), and a symlink on the way is
  followed only if it is owned by root or by us (it lives in a directory already checked);
- the state dir itself and its subdirectories must be ours and are made 0700 (``logs/``);
- files are opened relative to those directory fds with ``O_NOFOLLOW`` (a planted symlink fails with
  ELOOP instead of redirecting a write) and ``O_NONBLOCK`` (a FIFO would block the opener forever),
  then must be regular files.
Pure stdlib: no gevent. Every refusal raises ``UnsafePathError`` naming the path and the fix; an
unusable file raises ``OSError`` naming it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

from koku.errors import UnsafePathError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_SYMLINKS = 40


def _who(uid: int) -> str:
    return "root" if uid == 0 else f"root or uid {uid}"


def _check_parent(path: str, st: os.stat_result, uid: int) -> None:
    if st.st_uid not in (0, uid):
        raise UnsafePathError(
            f"{path} is owned by uid {st.st_uid}, not {_who(uid)}: whoever owns it can swap what koku "
            f"opens below it; fix: chown root {path}, or use another directory")
    sticky_root = st.st_uid == 0 and st.st_mode & stat.S_ISVTX
    if st.st_mode & 0o022 and not sticky_root:
        mode = stat.S_IMODE(st.st_mode)
        who = {0o022: "group and others", 0o020: "its group", 0o002: "others"}[mode & 0o022]
        raise UnsafePathError(f"{path} is writable by {who} (mode {mode:04o}): they can swap what koku opens "
                              f"below it; fix: chmod go-w {path}")


def _check_own(path: str, st: os.stat_result, uid: int) -> None:
    if st.st_uid != uid:
        raise UnsafePathError(
            f"{path} is owned by uid {st.st_uid}, not {uid} (the daemon's user); "
            f"fix: chown {uid} {path}, or remove it and let koku create it")
    if st.st_mode & 0o022:
        raise UnsafePathError(
            f"{path} is writable by other users (mode {stat.S_IMODE(st.st_mode):04o}); fix: chmod 700 {path}")


def open_dir(path: Path | str, uid: int | None = None, create: bool = True, own_last: bool = True) -> int:
    """An fd of the directory ``path`` (absolute), made (0700; missing parents 0755) if needed,
    after checking every directory from ``/`` down. The last one must be owned by ``uid`` (default:
    our euid), or with ``own_last=False`` pass the parents' rule. Raises UnsafePathError, or OSError
    (FileNotFoundError without ``create``) when it cannot be made or opened."""
    uid = os.geteuid() if uid is None else uid
    path = os.fspath(path)
    if not os.path.isabs(path):
        raise UnsafePathError(f"{path}: not an absolute path")
    for _hop in range(_MAX_SYMLINKS):
        target = _walk(os.path.normpath(path), uid, create, own_last)
        if isinstance(target, int):
            return target
        path = target  # a trusted symlink on the way: walk its target again from /
    raise UnsafePathError(f"{path}: too many symlinks")


def _walk(path: str, uid: int, create: bool, own_last: bool) -> int | str:
    """The checked fd of ``path``, or the path to walk instead when a component is a symlink."""
    names = [p for p in path.split("/") if p]
    fd = os.open("/", _DIR_FLAGS)
    here = "/"
    try:
        _check_parent(here, os.fstat(fd), uid)
        for i, name in enumerate(names):
            child = os.path.join(here, name)
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if not create:
                    raise
                # Parents as mkdir -p makes them (a socket_group must be able to walk through to the
                # socket), never writable by others whatever the umask; the directory itself 0700.
                os.mkdir(name, 0o700 if i + 1 == len(names) and own_last else 0o755, dir_fd=fd)
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                # It lives in a directory already checked; only its owner could have made it there
                # (or, in a sticky dir such as /tmp, anyone: hence the owner check, as fs.protected_symlinks).
                if st.st_uid not in (0, uid):
                    raise UnsafePathError(
                        f"{child} is a symlink owned by uid {st.st_uid}, not {_who(uid)}; "
                        f"fix: replace it with a directory, or use another directory")
                link = os.readlink(name, dir_fd=fd)
                os.close(fd)
                return os.path.normpath(os.path.join(here, link, *names[i + 1:]))
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafePathError(f"{child} is not a directory; fix: remove it, or use another directory")
            new = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd, here = new, child
            st = os.fstat(fd)  # what we hold, not what the name meant a moment ago
            (_check_parent if i + 1 < len(names) or not own_last else _check_own)(here, st, uid)
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_subdir(dir_fd: int, name: str, where: str, mode: int = 0o700) -> int:
    """The fd of subdirectory ``name`` of ``dir_fd`` (made with ``mode`` if missing; an existing one of
    ours gets ``mode`` too: logs/ used to be 0777). Raises UnsafePathError for a symlink, a non-directory
    or someone else's."""
    path = os.path.join(where, name)
    try:
        os.mkdir(name, mode, dir_fd=dir_fd)
    except FileExistsError:
        pass
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePathError(f"{path} is a symlink or not a directory; fix: remove it") from None
        raise
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            _check_own(path, st, os.geteuid())
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_file(dir_fd: int, name: str, flags: int, mode: int = 0o600, where: str = "") -> int:
    """``os.open(name, flags)`` relative to ``dir_fd``, never through a symlink, never blocking on a
    FIFO; the result is a regular file or OSError (ELOOP: a symlink; EINVAL: not a regular file)."""
    path = os.path.join(where, name) if where else name
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "is a symlink; refusing to follow it", path) from None
        if exc.filename is None:
            exc.filename = path
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file; refusing to use it", path)
        if flags & (os.O_WRONLY | os.O_RDWR) and (st.st_nlink > 1 or st.st_uid != os.geteuid()):
            # A hard link planted while the directory was open to others would let us write elsewhere.
            raise OSError(errno.EPERM, f"has {st.st_nlink} links and owner uid {st.st_uid}; refusing to write it", path)
        # Regular files ignore O_NONBLOCK; clear it anyway so the fd behaves as any other.
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_file(dir_fd: int, name: str, where: str = "") -> bytes:
    """The whole of regular file ``name`` under ``dir_fd`` (see ``open_file``). Raises OSError."""
    fd = open_file(dir_fd, name, os.O_RDONLY, where=where)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def exists(dir_fd: int, name: str) -> bool:
    """Whether ``name`` exists under ``dir_fd`` (a dangling symlink counts: it is something)."""
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def still_ours(path: Path | str, identity: tuple[int, int] | None) -> bool | None:
    """Whether ``path`` is still the file we made (``identity`` = its (st_dev, st_ino) then): True, False
    if something else is there now, None if nothing is. Never follows a symlink: another tool may have
    replaced our socket or pid file with one, and what it points at is not ours to judge."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == identity
