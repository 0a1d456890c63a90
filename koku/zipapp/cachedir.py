"""Where koku may keep files it will later load as code: extracted native builds and bytecode.

Loading code from a directory someone else can write is handing them the daemon, so every candidate is
checked: not a symlink, owned by us, not writable by others, not on a noexec mount. Stdlib only and
small: the zipapp's bytecode cache imports this before anything else.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping, NamedTuple

from koku.errors import BootstrapError, UnsafePathError

_ST_NOEXEC = getattr(os, "ST_NOEXEC", 8)


class CacheChoice(NamedTuple):
    path: Path
    source: str  # which rule proposed it, for messages: "$KOKU_CACHE_DIR", "/tmp", ...


def cache_candidates(env: Mapping[str, str] | None = None, uid: int | None = None) -> list[CacheChoice]:
    """Every cache dir koku may use, best first (see the module docs of ``select_cache_dir``)."""
    env = os.environ if env is None else env
    uid = os.getuid() if uid is None else uid
    found: list[CacheChoice] = []

    def add(path: str | Path | None, source: str) -> None:
        if not path or not os.path.isabs(path):
            return
        choice = CacheChoice(Path(os.path.normpath(path)), source)
        if all(c.path != choice.path for c in found):
            found.append(choice)

    koku_dir = env.get("KOKU_CACHE_DIR")
    add(os.path.abspath(os.path.expanduser(koku_dir)) if koku_dir else None, "$KOKU_CACHE_DIR")
    # systemd's CacheDirectory= may list several, separated by colons; the first is ours.
    add((env.get("CACHE_DIRECTORY") or "").split(":")[0], "$CACHE_DIRECTORY")
    xdg = env.get("XDG_CACHE_HOME")
    add(os.path.join(xdg, "koku") if xdg else None, "$XDG_CACHE_HOME")
    home = env.get("HOME")
    if not home:
        try:
            import pwd

            home = pwd.getpwuid(uid).pw_dir
        except (KeyError, ImportError):
            home = None
    add(os.path.join(home, ".cache", "koku") if home else None, "~/.cache")
    for base in (env.get("XDG_RUNTIME_DIR"), "/var/tmp", "/tmp"):
        add(os.path.join(base, f"koku-{uid}") if base else None, base or "")
    return found


def _noexec(path: str) -> bool:
    return bool(os.statvfs(path).f_flag & _ST_NOEXEC)


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path("/")


def check_cache_dir(path: Path, uid: int, create: bool) -> str | None:
    """Why ``path`` cannot hold native code (a reason), or None if it can.

    With ``create`` the directory is made (mode 0700, as are missing parents) when missing; without
    it, a missing directory is fine when it could be made. Refused: a symlink, a directory owned by
    another user or writable by others (someone could plant code the daemon loads); a directory on the
    way down from ``/`` that is not root's or ``uid``'s, or is writable by others (its owner could swap
    the cache dir for a symlink between this check and the daemon loading code from it; a root-owned
    sticky dir such as /tmp is fine), or a symlink there that is not root's or ``uid``'s; and any mount
    with noexec (the kernel will not map the extension modules there).
    """
    import stat

    from koku.core import safefs  # stdlib only: the walk the daemon's state dir gets too

    path = Path(os.path.normpath(path))
    try:
        if not os.path.lexists(path):
            ancestor = _existing_ancestor(path)
            if os.path.isdir(ancestor) and _noexec(str(ancestor)):
                return f"{ancestor} is on a noexec mount"
        try:
            # Through directory fds from / to the parent, never following a symlink someone else owns.
            parent_fd = safefs.open_dir(path.parent, uid, create=create, own_last=False)
        except FileNotFoundError:
            ancestor = _existing_ancestor(path)
            os.close(safefs.open_dir(ancestor, uid, create=False, own_last=False))
            return None if os.access(ancestor, os.W_OK | os.X_OK) else f"cannot create it in {ancestor}"
        try:
            if create:
                try:
                    os.mkdir(path.name, 0o700, dir_fd=parent_fd)
                except FileExistsError:
                    pass
            try:
                st = os.stat(path.name, dir_fd=parent_fd, follow_symlinks=False)
            except FileNotFoundError:
                return None if os.access(path.parent, os.W_OK | os.X_OK) else f"cannot create it in {path.parent}"
        finally:
            os.close(parent_fd)
        if stat.S_ISLNK(st.st_mode):
            return "it is a symlink"
        if not stat.S_ISDIR(st.st_mode):
            return "it is not a directory"
        if st.st_uid != uid:
            return f"it is owned by uid {st.st_uid}, not {uid}"
        if st.st_mode & 0o022:
            return f"it is writable by other users (mode {stat.S_IMODE(st.st_mode):04o})"
        if _noexec(str(path)):
            return "it is on a noexec mount"
        if not os.access(path, os.W_OK | os.X_OK):
            return "it is not writable"
    except UnsafePathError as exc:
        return str(exc)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def select_cache_dir(env: Mapping[str, str] | None = None, uid: int | None = None) -> Path:
    """The directory for extracted native code, created if needed.

    Order: ``$KOKU_CACHE_DIR``, systemd's ``$CACHE_DIRECTORY``, ``$XDG_CACHE_HOME/koku``,
    ``~/.cache/koku``, then ``koku-<uid>`` under ``$XDG_RUNTIME_DIR``, ``/var/tmp`` and ``/tmp``. The
    first one ``check_cache_dir`` accepts wins. Raises BootstrapError listing every refusal.
    """
    uid = os.getuid() if uid is None else uid
    refused: list[tuple[CacheChoice, str]] = []
    for choice in cache_candidates(env, uid):
        reason = check_cache_dir(choice.path, uid, create=True)
        if reason is None:
            if refused and refused[0][0].source == "$KOKU_CACHE_DIR":
                # Asked for by name: falling back without a word would hide that it is unsafe.
                asked, why = refused[0]
                print(f"koku: warning: KOKU_CACHE_DIR={asked.path} refused: {why}; using {choice.path}",
                      file=sys.stderr)
            return choice.path
        refused.append((choice, reason))
    lines = [f"  {c.path} ({c.source}): {reason}" for c, reason in refused]
    raise BootstrapError(
        "no usable directory to extract gevent's native code into; tried:\n"
        + "\n".join(lines)
        + "\nset KOKU_CACHE_DIR to a directory you own, on a mount without noexec"
    )
