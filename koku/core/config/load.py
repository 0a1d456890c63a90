"""The TOML config file -> validated, frozen dataclasses.

Layout: any number of ``[[job]]`` tables, an optional ``[defaults]`` table and an optional ``[daemon]``
table. Nothing else is allowed at the top level.

Rules worth knowing (the README's config reference repeats them for users):

- ``[defaults]`` may set every job key except ``name`` (a shared name would only ever produce duplicate
  names). ``cron`` and ``command`` are allowed there: a set of jobs that differ only in ``dir`` or
  ``env`` is a real use. A job's own key wins; ``env`` is merged per variable, the job's value winning.
- Durations (``timeout``, ``jitter``, ``kill_grace``, ``shutdown_grace``) are "90s", "30m", "1h30m", "2d"
  or a bare number of seconds. ``timeout`` must be more than 0; the others may be 0.
- ``log_max_bytes`` is a whole number of bytes or a string with a unit: B, KB, MB, GB (powers of 1000)
  or KiB, MiB, GiB (powers of 1024).
- ``dir`` is kept as written. ``~`` is expanded and a relative dir is relative to the config file's
  directory, not to wherever the daemon happens to run (``Config.job_dir``). A dir that does not exist
  is a warning, not an error: it may be mounted later, and the run fails with a clear reason if not.
- ``tz`` is an IANA zone; absent means the machine's local zone.
- An empty job list is valid (with a warning): a fresh daemon may be started before jobs are written.

Validation reads the whole file and reports every problem at once in one ``ConfigError``; each message
names the file (as given), the job (by name, or by position when it has no valid name), the key and
the offending value.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from collections.abc import Mapping

from koku.core.config.checker import _Checker
from koku.core.config.include import expand, patterns_of, read_dropins
from koku.core.config.model import Config
from koku.errors import ConfigError


_AT_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_AT_END = re.compile(r"\s*\(at end of document\)\s*$")


def _syntax_message(label: str, text: str, exc: Exception) -> str:
    """One message with line and column, whether or not this tomllib exposes them as attributes."""
    message = str(exc)
    line: int | None = None
    column: int | None = None
    if isinstance(getattr(exc, "lineno", None), int) and isinstance(getattr(exc, "msg", None), str):
        message, line, column = exc.msg, exc.lineno, exc.colno  # type: ignore[attr-defined]
    elif match := _AT_POSITION.search(message):
        message, line, column = message[: match.start()], int(match.group(1)), int(match.group(2))
    elif match := _AT_END.search(message):
        message = message[: match.start()] + " at end of file"
        line = text.count("\n") + 1
        column = len(text) - (text.rfind("\n") + 1) + 1
    if message[1:2].islower():
        message = message[0].lower() + message[1:]
    # tomllib names tables as Python tuples: "('job',)" reads better as "[job]".
    message = re.sub(r"\(((?:'[^']*',? ?)+)\)", lambda m: "[" + ".".join(re.findall(r"'([^']*)'", m[1])) + "]",
                     message)
    if "declare [job] twice" in message:
        message += " (write [[job]] for each job)"
    where = f"line {line}, column {column}: " if line is not None else ""
    return f"{label}: {where}{message}"


def _toml(text: str, label: str) -> dict:
    """Parsed TOML; raises ValueError with the message (file, line, column) for bad syntax."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(_syntax_message(label, text, exc)) from None
    except RecursionError:
        # tomllib recurses once per nested array or inline table: 5,000 `[` exhaust the stack.
        raise ValueError(f"{label}: arrays or tables nested too deeply") from None


def parse_config(text: str, path: Path | str = "config.toml", extra: Mapping[Path, str] | None = None) -> Config:
    """Validate TOML ``text``; ``path`` names it in messages (as given) and anchors relative dirs and
    ``[daemon] include`` patterns, whose files are read from disk, except those in ``extra`` (path ->
    text: a drop-in being validated before it is written).

    Raises ConfigError listing every problem, in every file.
    """
    label = str(path)
    try:
        data = _toml(text, label)
    except ValueError as exc:
        raise ConfigError([str(exc)]) from None
    extra = extra or {}
    files, pattern_problems = expand(patterns_of(data), Path(path), extra)
    dropins, problems = read_dropins(files, extra, _toml)
    return _Checker(label, Path(path)).run(data, dropins, [f"{label}: {p}" for p in pattern_problems] + problems)


def load_config(path: Path | str) -> Config:
    """Read and validate the config file at ``path``. Raises ConfigError (also for a missing file)."""
    label = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f'config file {label} does not exist (create one with "ku init")') from None
    except IsADirectoryError:
        raise ConfigError(f"config file {label} is a directory, not a file") from None
    except PermissionError:
        raise ConfigError(f"config file {label} is not readable (permission denied)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {label}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{label}: line {line}: the file is not valid UTF-8 (TOML must be UTF-8)") from None
    return parse_config(text, path)
