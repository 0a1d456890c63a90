"""Who a job runs as: ``user``, ``group``, ``nice``, ``umask``. Converters for the config, and the
lookup the daemon does before each run. Pure (stdlib pwd/grp; the daemon calls ``account`` off the hub,
as NSS may ask LDAP or sssd).

Rules (cronie's and systemd's, where they agree):
  * ``user`` needs a daemon running as root, unless it names the daemon's own user (then nothing
    changes). The child gets the user's uid, its primary gid (or ``group``'s) and the user's
    supplementary groups (``getgrouplist``) before exec, and HOME, USER, LOGNAME and SHELL from its
    passwd entry (the job's own ``env`` still wins); without ``dir`` it runs in that home.
  * ``group`` alone changes only the gid (root only, unless it is the daemon's own primary group).
  * ``nice`` is -20..19, as nice(1) counts it, relative to the daemon's own niceness; below 0 needs root.
  * ``umask`` is a string of octal digits ("027"), applied before exec.
``ku check`` judges as the user who runs it: run it as the daemon's user.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
from dataclasses import dataclass

from koku.errors import BadValue

_OCTAL = re.compile(r"0?[0-7]{3}|[0-7]{1,2}")


def _quoted(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _daemon_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def check_user(key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadValue(f'key "{key}" must be a user name, got {_quoted(value)}')
    try:
        pwd.getpwnam(value)
    except KeyError:
        raise BadValue(f'key "{key}": unknown user {_quoted(value)} (no passwd entry)') from None
    if os.geteuid() != 0 and value != _daemon_user():
        raise BadValue(f'key "{key}": running jobs as {_quoted(value)} needs a daemon running as root; this one '
                       f'runs as "{_daemon_user()}" (remove "user", or run koku as root)')
    return value


def check_group(key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadValue(f'key "{key}" must be a group name, got {_quoted(value)}')
    try:
        gid = grp.getgrnam(value).gr_gid
    except KeyError:
        raise BadValue(f'key "{key}": unknown group {_quoted(value)} (no group entry)') from None
    if os.geteuid() != 0 and gid != os.getegid():
        raise BadValue(f'key "{key}": running jobs with group {_quoted(value)} needs a daemon running as root')
    return value


def check_nice(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -20 <= value <= 19:
        raise BadValue(f'key "{key}" must be a whole number from -20 to 19, got {_quoted(value)}')
    if value < 0 and os.geteuid() != 0:
        raise BadValue(f'key "{key}": a negative nice ({value}) needs a daemon running as root')
    return value


def check_umask(key: str, value: object) -> int:
    if not isinstance(value, str) or not _OCTAL.fullmatch(value):
        hint = " (write it as a string: umask = \"027\")" if isinstance(value, int) else ""
        raise BadValue(f'key "{key}" must be octal digits like "027" or "0022", got {_quoted(value)}{hint}')
    return int(value, 8)


@dataclass(frozen=True)
class Account:
    """What a run switches to. ``uid``/``gid``/``groups`` None: keep the daemon's."""

    uid: int | None
    gid: int | None
    groups: tuple[int, ...] | None
    env: dict[str, str]  # HOME, USER, LOGNAME, SHELL from the passwd entry ({} without user)
    home: str | None
    home_is_dir: bool = False  # checked here, off the hub (a home on NFS may hang a stat)


def account(user: str | None, group: str | None) -> Account:
    """Look the run's user and group up now (they may have changed since the config was read).
    Raises LookupError with the reason for the run's record."""
    gid = None
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise LookupError(f'group "{group}" does not exist') from None
    if user is None:
        return Account(None, gid, None, {}, None)
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise LookupError(f'user "{user}" does not exist') from None
    env = {"HOME": entry.pw_dir, "USER": entry.pw_name, "LOGNAME": entry.pw_name, "SHELL": entry.pw_shell or "/bin/sh"}
    is_dir = os.path.isdir(entry.pw_dir)
    if os.geteuid() != 0:  # only the daemon's own user gets here (config check): nothing to switch
        return Account(None, gid, None, env, entry.pw_dir, is_dir)
    primary = gid if gid is not None else entry.pw_gid
    return Account(entry.pw_uid, primary, tuple(os.getgrouplist(entry.pw_name, primary)), env, entry.pw_dir, is_dir)
