"""The validated config: frozen dataclasses, and where a job runs. Pure.

``dir`` is kept as written. ``~`` is expanded and a relative dir is relative to the config file's
directory, not to wherever the daemon or ``ku`` happens to run: ``resolve_dir`` is the one place that
says so, and ``dir_problem`` the one wording of what is wrong with one (config warnings, ``ku check``
and a run that cannot start all use them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from koku.core.notifyconf import NO_ALERTS, Alerting, JobAlerts
from koku.core.schedule import Schedule, parse_schedule

NAME_MAX = 64


class OnError(str, Enum):
    CONTINUE = "continue"
    BACKOFF = "backoff"
    STOP = "stop"


class CatchUp(str, Enum):
    """What to do at start about runs missed while the daemon was down (``true`` = once, ``false`` = skip)."""

    SKIP = "skip"
    ONCE = "once"
    ALL = "all"


class JitterMode(str, Enum):
    RANDOM = "random"  # a new delay in [0, jitter) before each run
    HASH = "hash"  # one fixed delay per job and host (systemd's FixedRandomDelay, Jenkins' H)


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
    catch_up: CatchUp = CatchUp.SKIP
    catch_up_limit: int = 100  # with catch_up = "all": at most this many missed runs
    jitter_mode: JitterMode = JitterMode.RANDOM
    retries: int = 0  # a failed run is tried again this many times within its slot
    retry_delay: float = 30.0  # seconds before the first retry; doubled for each further one
    max_running: int | None = None  # overlap = true: at most this many runs of the job at once
    start_deadline: float | None = None  # seconds: a run that cannot start this long after its slot is skipped
    description: str = ""
    user: str | None = None  # run as this user (root daemon only); see koku.core.config.identity
    group: str | None = None
    nice: int | None = None  # -20..19, relative to the daemon's niceness
    umask: int | None = None  # e.g. 0o027
    source: str = ""  # the file the job is defined in (as messages name it); "" = the main config
    alerts: JobAlerts = NO_ALERTS  # notify, notify_on, notify_after, remind_every, slow_after, ping
    schedule: Schedule = field(default=None, compare=False, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        object.__setattr__(self, "on_error", OnError(self.on_error))
        if isinstance(self.catch_up, bool):
            object.__setattr__(self, "catch_up", CatchUp.ONCE if self.catch_up else CatchUp.SKIP)
        object.__setattr__(self, "catch_up", CatchUp(self.catch_up))
        object.__setattr__(self, "jitter_mode", JitterMode(self.jitter_mode))
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
    max_running: int | None = None  # runs at once across all jobs; more wait in order of their slot
    include: tuple[str, ...] = ()  # drop-in file globs, relative to the main config's dir
    metrics_listen: str | None = None  # "HOST:PORT" for /metrics
    metrics_file: str | None = None  # Prometheus textfile, rewritten after every run
    forget_removed_after: float = 30 * 86400.0  # a job gone from the config: its state and logs, kept this long


@dataclass(frozen=True)
class Config:
    path: Path
    jobs: tuple[JobConfig, ...]
    daemon: DaemonConfig
    warnings: tuple[str, ...] = ()  # every warning, each naming file and job (the daemon logs these)
    job_warnings: tuple[tuple[str, str], ...] = ()  # the per-job ones again as ('job "name"', tail)
    alerting: Alerting = field(default_factory=Alerting)  # [notify.*] and [smtp]
    dropins: tuple[str, ...] = ()  # the drop-in files read, in order (labels as messages name them)

    def warnings_for(self, name: str) -> tuple[str, ...]:
        where = f'job "{name}"'
        return tuple(tail for job, tail in self.job_warnings if job == where)

    def job(self, name: str) -> JobConfig | None:
        return next((job for job in self.jobs if job.name == name), None)

    def job_dir(self, job: JobConfig) -> Path | None:
        """The directory ``job`` runs in: ``~`` expanded, relative paths taken from the config's dir."""
        return resolve_dir(job.dir, self.source_path(job)) if job.dir is not None else None

    def source_path(self, job: JobConfig) -> Path:
        """The file ``job`` is defined in: a relative ``dir`` is relative to that file's directory."""
        return Path(job.source) if job.source else self.path


def resolve_dir(directory: str, config_path: Path) -> Path:
    """Where a job with ``dir = directory`` runs: ``~`` expanded, relative to the config file's dir."""
    expanded = Path(os.path.expanduser(directory))
    return expanded if expanded.is_absolute() else config_path.parent / expanded


def dir_problem(path: Path | str) -> str | None:
    """Why a resolved working dir cannot be used ("does not exist", "is not a directory"), or None."""
    if os.path.isdir(path):
        return None
    return "is not a directory" if os.path.exists(path) else "does not exist"
