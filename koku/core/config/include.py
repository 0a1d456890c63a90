"""Drop-in job files: ``[daemon] include = ["/etc/koku/jobs.d/*.toml"]``. Pure (file reads only).

Each pattern is a glob (``*``, ``?``, ``[...]``; ``**`` is not special); a relative one is relative to
the main config's directory. Files are read in pattern order, each pattern's matches sorted by name, a
file matched twice read once. A glob that matches nothing is fine (an empty jobs.d is normal); a plain
path that does not exist is an error, as it is almost certainly a typo. A drop-in holds only ``[[job]]``
tables and ``[notify.NAME]`` tables; ``[daemon]``, ``[defaults]`` and ``[smtp]`` belong in the main
config (one place decides daemon-wide settings and what every job inherits).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

DROPIN_KEYS = ("job", "notify")


@dataclass
class DropIn:
    label: str  # the path as messages show it
    path: Path
    data: dict[str, Any] = field(default_factory=dict)


def patterns_of(data: dict[str, Any]) -> list[str]:
    """The include patterns as written, if they are well-formed; the checker reports them otherwise."""
    daemon = data.get("daemon")
    raw = daemon.get("include") if isinstance(daemon, dict) else None
    if not isinstance(raw, list):
        return []
    return [p for p in raw if isinstance(p, str) and p.strip() and "\0" not in p]


def expand(patterns: list[str], main: Path, extra: Mapping[Path, str]) -> tuple[list[Path], list[str]]:
    """(files to read, problems as "pattern: tail"). ``extra``: files that do not exist yet but are
    being validated (``ku import --into``); they count as matches of a pattern that covers them."""
    files: list[Path] = []
    seen: set[str] = set()
    problems: list[str] = []
    for pattern in patterns:
        full = Path(os.path.expanduser(pattern))
        if not full.is_absolute():
            full = main.parent / full
        text = str(full)
        magic = glob.has_magic(text)
        found = sorted(glob.glob(text)) if magic else ([text] if os.path.lexists(text) else [])
        found += [str(p) for p in extra if (glob.fnmatch.fnmatch(str(p), text) if magic else str(p) == text)
                  and str(p) not in found]
        if not found and not magic:
            problems.append(f'[daemon] key "include": {pattern!r}: {text} does not exist')
        for name in sorted(found):
            key = os.path.realpath(name)
            if key == os.path.realpath(main) or key in seen:
                continue
            seen.add(key)
            files.append(Path(name))
    return files, problems


def read_dropins(files: list[Path], extra: Mapping[Path, str],
                 parse: Callable[[str, str], dict[str, Any]]) -> tuple[list[DropIn], list[str]]:
    """Read and parse each file; ``parse(text, label)`` raises ValueError(message) for bad TOML.
    Returns (the drop-ins read, problems as full messages naming the file)."""
    dropins: list[DropIn] = []
    problems: list[str] = []
    for path in files:
        label = str(path)
        if path in extra:
            text = extra[path]
        else:
            try:
                raw = path.read_bytes()
            except IsADirectoryError:
                problems.append(f"{label}: is a directory, not a drop-in file (included by [daemon] include)")
                continue
            except OSError as exc:
                problems.append(f"{label}: cannot read this drop-in file: {exc.strerror or exc}")
                continue
            try:
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                line = raw.count(b"\n", 0, exc.start) + 1
                problems.append(f"{label}: line {line}: the file is not valid UTF-8 (TOML must be UTF-8)")
                continue
        try:
            data = parse(text, label)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        dropins.append(DropIn(label, path, data))
    return dropins, problems
