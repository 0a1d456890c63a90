"""Durations as written in config and on the command line: "90s", "30m", "1h30m", "2d", or bare seconds,
and the two ways koku writes one: ``format_duration`` for table cells, ``spoken_duration`` in sentences.

Pure and cheap: the client imports this for ``ku pause --for``.
"""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(value: object) -> float:
    """Return the duration in seconds (>= 0).

    Accepts an int or float (seconds) or a string of number+unit parts ("1h30m", "90s", "2d", "1.5h"),
    or a string of digits (seconds). Raises ValueError with a message naming the value.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like \"30m\", got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"duration must not be negative, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like \"30m\", got {value!r}")
    text = value.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    pos = 0
    total = 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(
            f"invalid duration {value!r} (use a number of seconds or units s, m, h, d, w, e.g. \"90s\", \"1h30m\")"
        )
    return total


def format_duration(seconds: float | None) -> str:
    """Short human form: 0.4s, 12s, 5m03s, 2h05m, 3d04h. ``None`` gives an em dash."""
    if seconds is None:
        return "\u2014"
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def spoken_duration(seconds: float) -> str:
    """A duration inside a sentence, in config syntax: 0.5s, 45s, 1m30s, 2h, 1d2h ("timed out after 1.5s",
    "timeout 2h is longer than ..."). Under a minute keeps two decimals; above, whole seconds."""
    if seconds < 60:
        return f"{round(seconds, 2):g}s"
    rest = int(round(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
