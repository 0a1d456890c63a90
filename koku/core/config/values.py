"""Value converters for config keys: each takes (key, raw TOML value), returns the value or raises _Bad.

Also the tables of which keys exist where (``JOB_FIELDS``, ``DAEMON_FIELDS``) and the message helpers that
quote a value as written and suggest the closest spelling. Pure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from functools import partial
from typing import Any, Callable

from koku.core import notifyconf
from koku.core.config import identity
from koku.core.config.model import NAME_MAX, CatchUp, FrozenEnv, JitterMode, OnError
from koku.core.durations import parse_duration
from koku.core.schedule import ScheduleError, resolve_zone
from koku.errors import BadValue
from koku.core.convert import boolean as _boolean, integer as _integer, show as _show, string as _string, suggest as _suggest  # noqa: F401 (checker uses them)


_Bad = BadValue  # short name: raised by every converter below


def _duration(key: str, value: object, positive: bool = False) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        raise _Bad(f'key "{key}" must not be negative, got {_show(value)}')
    try:
        seconds = parse_duration(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds):
        raise _Bad(f'key "{key}" must be a duration like "90s", "30m", "1h30m" or "2d" (a bare number is '
                   f"seconds), got {_show(value)}")
    if positive and seconds <= 0:
        raise _Bad(f'key "{key}" must be longer than 0 seconds, got {_show(value)}')
    return seconds


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(value: object) -> int:
    """Bytes from an int or a string like "512KiB", "10MB", "4096". Raises ValueError naming the value."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f'must be a number of bytes or a size like "512KiB" or "10MB" (units B, KB, MB, GB, '
                         f"KiB, MiB, GiB), got {_show(value)}")
    return int(round(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]))


def _size(key: str, value: object) -> int:
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise _Bad(f'key "{key}" {exc}') from None
    if size < 1:
        raise _Bad(f'key "{key}" must be at least 1 byte, got {_show(value)}')
    return size


_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _name(key: str, value: object) -> str:
    name = _string(key, value, blank_ok=True)
    if not name:
        raise _Bad(f'key "{key}" must not be empty')
    if name in (".", ".."):
        raise _Bad(f'key "{key}" must not be "." or ".." (it names the job\'s log file), got {_show(name)}')
    if len(name) > NAME_MAX:
        raise _Bad(f'key "{key}" must be at most {NAME_MAX} characters, got {len(name)} characters')
    if not _NAME.fullmatch(name):
        raise _Bad(f'key "{key}" may only contain letters, digits, "_", "." and "-" (it names the job\'s '
                   f"log file), got {_show(name)}")
    return name


def _on_error(key: str, value: object) -> OnError:
    text = _string(key, value)
    if text not in OnError._value2member_map_:
        raise _Bad(f'key "{key}" must be one of "continue", "backoff" or "stop", got {_show(value)}'
                   + _suggest(text, OnError._value2member_map_))
    return OnError(text)


def _zone(key: str, value: object) -> str:
    text = _string(key, value)
    try:
        resolve_zone(text)
    except ScheduleError as exc:
        raise _Bad(f'key "{key}": {exc}') from None
    return text


def _env(key: str, value: object) -> FrozenEnv:
    if not isinstance(value, dict):
        raise _Bad(f'key "{key}" must be a table of strings like {{ PATH = "/usr/bin" }}, got {_show(value)}')
    tails = []
    for var, text in value.items():
        # os.execve rejects these; catching them here beats a failed run at 3 a.m.
        if not var or "=" in var or "\0" in var:
            tails.append(f'key "{key}": {_show(var)} is not a valid variable name')
        elif not isinstance(text, str):
            tails.append(f'key "{key}.{var}" must be a string, got {_show(text)}')
        elif "\0" in text:
            tails.append(f'key "{key}.{var}" must not contain a NUL character')
    if tails:
        raise _Bad(*tails)
    return FrozenEnv(value)


def _catch_up(key: str, value: object) -> CatchUp:
    if isinstance(value, bool):
        return CatchUp.ONCE if value else CatchUp.SKIP
    if not isinstance(value, str) or value not in CatchUp._value2member_map_:
        raise _Bad(f'key "{key}" must be "skip", "once" or "all" (true means "once", false "skip"), got '
                   f"{_show(value)}" + (_suggest(value, CatchUp._value2member_map_) if isinstance(value, str) else ""))
    return CatchUp(value)


def _jitter_mode(key: str, value: object) -> JitterMode:
    if not isinstance(value, str) or value not in JitterMode._value2member_map_:
        raise _Bad(f'key "{key}" must be "random" or "hash", got {_show(value)}')
    return JitterMode(value)


_Converter = Callable[[str, Any], Any]

JOB_FIELDS: dict[str, _Converter] = {
    "name": _name, "cron": _string, "command": _string, "dir": _string, "on_error": _on_error,
    "overlap": _boolean, "timeout": partial(_duration, positive=True), "env": _env, "tz": _zone,
    "jitter": _duration, "max_failures": partial(_integer, minimum=1), "catch_up": _catch_up,
    "catch_up_limit": partial(_integer, minimum=1), "jitter_mode": _jitter_mode,
    "retries": partial(_integer, minimum=0), "retry_delay": partial(_duration, positive=True),
    "max_running": partial(_integer, minimum=1), "start_deadline": partial(_duration, positive=True),
    "description": partial(_string, blank_ok=True), "user": identity.check_user, "group": identity.check_group,
    "nice": identity.check_nice, "umask": identity.check_umask, **notifyconf.JOB_FIELDS,
}
DEFAULTS_FIELDS = {key: conv for key, conv in JOB_FIELDS.items() if key != "name"}


def _patterns(key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Bad(f'key "{key}" must be an array of file patterns like ["jobs.d/*.toml"], got {_show(value)}')
    tails = [f'key "{key}": each entry must be a non-empty file pattern, got {_show(item)}'
             for item in value if not isinstance(item, str) or not item.strip() or "\0" in item]
    if tails:
        raise _Bad(*tails)
    return tuple(value)


DAEMON_FIELDS: dict[str, _Converter] = {
    "shell": _string, "history": partial(_integer, minimum=1), "log_max_bytes": _size,
    "log_keep": partial(_integer, minimum=0), "kill_grace": _duration, "shutdown_grace": _duration,
    "forget_removed_after": _duration, "socket_group": _string, "max_running": partial(_integer, minimum=1),
    "include": _patterns, **notifyconf.DAEMON_FIELDS,
}
JOB_KEYS = tuple(JOB_FIELDS)
DAEMON_KEYS = tuple(DAEMON_FIELDS)
TOP_LEVEL_KEYS = ("job", "defaults", "daemon", "notify", "smtp")
_REQUIRED = ("name", "cron", "command")


def _unknown(what: str, key: str, allowed: Iterable[str]) -> str:
    """The message for a key not allowed here: where it belongs, or the closest allowed spelling."""
    homes = [home for home, fields in (("a [[job]]", JOB_FIELDS), ("[daemon]", DAEMON_FIELDS))
             if key in fields and key not in allowed]
    return f'unknown {what} "{key}"' + (f" (it belongs in {homes[0]})" if homes else _suggest(key, allowed))
