"""Converters every config table shares: each takes (key, raw TOML value) and returns the value or raises
BadValue with message tails (``key "x" must be ...``); and the two message helpers, a value quoted as
written and the closest spelling. Pure and import-free of the rest of config, so that both the job keys
(koku.core.config.values) and the alert keys (koku.core.notifyconf) use the same words.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date, time

from koku.errors import BadValue


def show(value: object) -> str:
    """A value as written in TOML, so a message quotes it recognisably."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 80 else value[:77] + "...", ensure_ascii=False)
    if isinstance(value, (date, time)):  # TOML dates and times are unquoted
        return f"the date/time {value.isoformat()}"
    return {dict: "a table", list: "an array"}.get(type(value), repr(value))


def suggest(word: str, choices: Iterable[str]) -> str:
    """' (did you mean "x"?)' for the closest of ``choices``, or ""."""
    import difflib  # only a typo pays for it: the daemon keeps ~0.5 MB less

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def string(key: str, value: object, blank_ok: bool = False) -> str:
    if not isinstance(value, str):
        raise BadValue(f'key "{key}" must be a string, got {show(value)}')
    if not blank_ok and not value.strip():
        raise BadValue(f'key "{key}" must not be empty, got {show(value)}')
    return value


def boolean(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise BadValue(f'key "{key}" must be true or false, got {show(value)}')
    return value


def integer(key: str, value: object, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadValue(f'key "{key}" must be a whole number, got {show(value)}')
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise BadValue(f'key "{key}" must be {bound}, got {value}')
    return value
