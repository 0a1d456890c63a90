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

import difflib
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, time, timezone, tzinfo
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any, Callable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from koku.core.durations import parse_duration
from koku.errors import ConfigError
from koku.core.schedule import Schedule, ScheduleError, parse_schedule, resolve_zone

NAME_MAX = 64


class OnError(str, Enum):
    CONTINUE = "continue"
    BACKOFF = "backoff"
    STOP = "stop"


class FrozenEnv(Mapping[str, str]):
    """A read-only, hashable mapping: keeps ``JobConfig`` immutable and hashable."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, str] | None = None):
        self._data = dict(data or {})

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __repr__(self) -> str:
        return f"FrozenEnv({self._data!r})"


@dataclass(frozen=True, slots=True)  # slots: a daemon may hold 10,000 of these
class JobConfig:
    """One ``[[job]]`` after defaults are applied. Durations in seconds.

    ``==`` ignores ``schedule`` (it is derived from ``cron`` and ``tz``): the daemon compares old and new
    JobConfigs on reload to find changed jobs. Built by hand (in tests), ``schedule`` is parsed from
    ``cron``/``tz`` when not given, which raises ``ScheduleError`` for a bad expression.
    """

    name: str
    cron: str
    command: str
    dir: str | None = None
    on_error: OnError = OnError.CONTINUE
    overlap: bool = False
    timeout: float | None = None
    env: Mapping[str, str] = field(default_factory=FrozenEnv)
    tz: str | None = None
    jitter: float = 0.0
    max_failures: int = 3
    catch_up: bool = False
    description: str = ""
    schedule: Schedule = field(default=None, compare=False, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        object.__setattr__(self, "on_error", OnError(self.on_error))
        if not isinstance(self.env, FrozenEnv):
            object.__setattr__(self, "env", FrozenEnv(self.env))
        if self.schedule is None:
            object.__setattr__(self, "schedule", parse_schedule(self.cron, self.tz))


@dataclass(frozen=True)
class DaemonConfig:
    """The ``[daemon]`` table. ``log_max_bytes`` in bytes, graces in seconds."""

    shell: str = "/bin/sh"
    history: int = 100
    log_max_bytes: int = 10 * 1024 * 1024
    log_keep: int = 3
    kill_grace: float = 10.0
    shutdown_grace: float = 30.0
    socket_group: str | None = None


@dataclass(frozen=True)
class Config:
    path: Path
    jobs: tuple[JobConfig, ...]
    daemon: DaemonConfig
    warnings: tuple[str, ...] = ()

    def job(self, name: str) -> JobConfig | None:
        return next((job for job in self.jobs if job.name == name), None)

    def job_dir(self, job: JobConfig) -> Path | None:
        """The directory ``job`` runs in: ``~`` expanded, relative paths taken from the config's dir."""
        return _resolve_dir(job.dir, self.path) if job.dir is not None else None


# --- value converters: each takes (key, raw TOML value), returns the value or raises _Bad ---


class _Bad(Exception):
    """Problems with one key, as message tails (``key "x" must be ...``)."""

    def __init__(self, *tails: str):
        super().__init__(*tails)
        self.tails = tails


def _show(value: object) -> str:
    """A value as written in TOML, so a message quotes it recognisably."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 80 else value[:77] + "...", ensure_ascii=False)
    if isinstance(value, (date, time)):  # TOML dates and times are unquoted
        return f"the date/time {value.isoformat()}"
    return {dict: "a table", list: "an array"}.get(type(value), repr(value))


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _string(key: str, value: object, blank_ok: bool = False) -> str:
    if not isinstance(value, str):
        raise _Bad(f'key "{key}" must be a string, got {_show(value)}')
    if not blank_ok and not value.strip():
        raise _Bad(f'key "{key}" must not be empty, got {_show(value)}')
    return value


def _boolean(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f'key "{key}" must be true or false, got {_show(value)}')
    return value


def _integer(key: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f'key "{key}" must be a whole number, got {_show(value)}')
    if value < minimum:
        raise _Bad(f'key "{key}" must be at least {minimum}, got {value}')
    return value


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


_Converter = Callable[[str, Any], Any]

JOB_FIELDS: dict[str, _Converter] = {
    "name": _name, "cron": _string, "command": _string, "dir": _string, "on_error": _on_error,
    "overlap": _boolean, "timeout": partial(_duration, positive=True), "env": _env, "tz": _zone,
    "jitter": _duration, "max_failures": partial(_integer, minimum=1), "catch_up": _boolean,
    "description": partial(_string, blank_ok=True),
}
DEFAULTS_FIELDS = {key: conv for key, conv in JOB_FIELDS.items() if key != "name"}
DAEMON_FIELDS: dict[str, _Converter] = {
    "shell": _string, "history": partial(_integer, minimum=1), "log_max_bytes": _size,
    "log_keep": partial(_integer, minimum=0), "kill_grace": _duration, "shutdown_grace": _duration,
    "socket_group": _string,
}
JOB_KEYS = tuple(JOB_FIELDS)
DAEMON_KEYS = tuple(DAEMON_FIELDS)
TOP_LEVEL_KEYS = ("job", "defaults", "daemon")
_REQUIRED = ("name", "cron", "command")


def _unknown(what: str, key: str, allowed: Iterable[str]) -> str:
    """The message for a key not allowed here: where it belongs, or the closest allowed spelling."""
    homes = [home for home, fields in (("a [[job]]", JOB_FIELDS), ("[daemon]", DAEMON_FIELDS))
             if key in fields and key not in allowed]
    return f'unknown {what} "{key}"' + (f" (it belongs in {homes[0]})" if homes else _suggest(key, allowed))


def _resolve_dir(directory: str, config_path: Path) -> Path:
    expanded = Path(os.path.expanduser(directory))
    return expanded if expanded.is_absolute() else config_path.parent / expanded


# --- whole-file validation ---


class _Checker:
    def __init__(self, label: str, path: Path):
        self.label = label
        self.path = path
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.defaults: dict[str, Any] = {}
        self.defaults_bad: set[str] = set()
        self.first_index: dict[str, int] = {}  # job name -> position of its first use
        self.local: tzinfo | None = None

    def problem(self, where: str | None, tail: str) -> None:
        self.problems.append(f"{self.label}: {where}: {tail}" if where else f"{self.label}: {tail}")

    def table(self, where: str, raw: dict, fields: Mapping[str, _Converter]) -> tuple[dict, set[str]]:
        """Convert each known key; report the rest. Returns (converted values, keys that were bad)."""
        good: dict[str, Any] = {}
        bad: set[str] = set()
        for key, value in raw.items():
            converter = fields.get(key)
            if converter is None:
                if where == "[defaults]" and key == "name":
                    self.problem(where, 'key "name" is not allowed here (every job needs its own name)')
                else:
                    self.problem(where, _unknown("key", key, fields))
                bad.add(key)
                continue
            try:
                good[key] = converter(key, value)
            except _Bad as exc:
                for tail in exc.tails:
                    self.problem(where, tail)
                bad.add(key)
        return good, bad

    def local_zone(self) -> tzinfo:
        """The machine's zone, for jobs without ``tz``; a bad $TZ is reported once, not once per job."""
        if self.local is None:
            try:
                self.local = resolve_zone(None)
            except ScheduleError as exc:
                self.problem(None, f'the local time zone is unusable: {exc}; fix $TZ or set "tz" in [defaults]')
                self.local = timezone.utc
        return self.local

    def section(self, data: dict, key: str) -> dict:
        raw = data.get(key, {})
        if isinstance(raw, dict):
            return raw
        self.problem(None, f'"{key}" must be a table (write [{key}]), got {_show(raw)}')
        return {}

    def run(self, data: dict) -> Config:
        for key in data:
            if key not in TOP_LEVEL_KEYS:
                self.problem(None, _unknown("top-level key", key, TOP_LEVEL_KEYS))

        defaults, self.defaults_bad = self.table("[defaults]", self.section(data, "defaults"), DEFAULTS_FIELDS)
        if "cron" in defaults:
            try:
                parse_schedule(defaults["cron"], defaults.get("tz"))
            except ScheduleError as exc:
                self.problem("[defaults]", f'key "cron": {exc}')
                del defaults["cron"]
                self.defaults_bad.add("cron")
        self.defaults = defaults
        daemon, _ = self.table("[daemon]", self.section(data, "daemon"), DAEMON_FIELDS)

        raw_jobs = data.get("job", [])
        if not isinstance(raw_jobs, list):
            got = "not [job]" if isinstance(raw_jobs, dict) else f"got {_show(raw_jobs)}"
            self.problem(None, f'"job" must be an array of tables: write [[job]] for each job, {got}')
            raw_jobs = []
        jobs = [job for index, raw in enumerate(raw_jobs, 1) if (job := self.job(index, raw)) is not None]
        if not raw_jobs and not self.problems:
            self.warnings.append(f"{self.label}: no jobs defined (add a [[job]] table)")
        if self.problems:
            raise ConfigError(self.problems)
        return Config(self.path, tuple(jobs), DaemonConfig(**daemon), tuple(self.warnings))

    def job(self, index: int, raw: object) -> JobConfig | None:
        if not isinstance(raw, dict):
            self.problem(None, f"job #{index} must be a table ([[job]]), got {_show(raw)}")
            return None
        name = raw.get("name")
        try:
            where = f'job "{_name("name", name)}"'
        except _Bad:
            where = f"job #{index}"
        before = len(self.problems)
        good, bad = self.table(where, raw, JOB_FIELDS)

        first = self.first_index.setdefault(good["name"], index) if "name" in good else index
        if first != index:
            self.problem(where, f'key "name": {_show(name)} is already used by job #{first} (names must be '
                         "unique)")
        defaults, defaults_bad = self.defaults, self.defaults_bad
        merged = {**defaults, **good}
        if "env" in defaults and "env" in good:
            merged["env"] = FrozenEnv({**defaults["env"], **good["env"]})
        # A key that was present but bad is already reported: no "missing" on top, but no job either.
        incomplete = [key for key in _REQUIRED if key not in merged]
        for key in incomplete:
            if key not in bad and key not in defaults_bad:
                self.problem(where, f'missing key "{key}"')

        schedule = None
        if "cron" in merged:
            # With a bad zone (already reported) UTC still lets the expression itself be checked.
            tz_ok = "tz" not in bad and ("tz" in raw or "tz" not in defaults_bad)
            zone = (merged.get("tz") or self.local_zone()) if tz_ok else timezone.utc
            try:
                schedule = parse_schedule(merged["cron"], zone)
            except ScheduleError as exc:
                origin = "" if "cron" in raw else " (from [defaults])"
                self.problem(where, f'key "cron"{origin}: {exc}')

        if incomplete or len(self.problems) > before:
            return None
        job = JobConfig(**merged, schedule=schedule)
        if job.dir is not None:
            self.check_dir(where, job.dir)
        return job

    def check_dir(self, where: str, directory: str) -> None:
        resolved = _resolve_dir(directory, self.path)
        shown = f"{_show(directory)}" + (f" ({resolved})" if str(resolved) != directory else "")
        if not resolved.exists():
            self.warnings.append(f'{self.label}: {where}: key "dir": directory {shown} does not exist')
        elif not resolved.is_dir():
            self.warnings.append(f'{self.label}: {where}: key "dir": {shown} is not a directory')


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


def parse_config(text: str, path: Path | str = "config.toml") -> Config:
    """Validate TOML ``text``; ``path`` names it in messages (as given) and anchors relative dirs.

    Raises ConfigError listing every problem.
    """
    label = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_message(label, text, exc)]) from None
    return _Checker(label, Path(path)).run(data)


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
