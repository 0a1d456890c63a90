"""Job states, the moves allowed between them, and run records. Pure.

The five states are the vocabulary users and kagaya see. A job's state changes in exactly one place
(``runner.JobRunner.set_state``), which checks the move against ``ALLOWED``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any


class JobState(str, Enum):
    IDLE = "idle"  # waiting for the next scheduled run
    RUNNING = "running"  # at least one run in flight
    PAUSED = "paused"  # paused by hand (`ku pause`), optionally until a time
    FAILING = "failing"  # last run failed, runs are being skipped (on_error = backoff)
    STOPPED = "stopped"  # disabled after max_failures (on_error = stop); `ku resume` re-enables


S = JobState

# Which moves are legal. "Resting" states (everything but running) are where a job sits between runs;
# when a run ends the job goes to the resting state its flags call for.
ALLOWED: dict[JobState, frozenset[JobState]] = {
    S.IDLE: frozenset({S.RUNNING, S.PAUSED}),
    S.RUNNING: frozenset({S.IDLE, S.FAILING, S.STOPPED, S.PAUSED}),
    S.PAUSED: frozenset({S.RUNNING, S.IDLE, S.FAILING, S.STOPPED}),
    S.FAILING: frozenset({S.RUNNING, S.PAUSED, S.IDLE}),
    S.STOPPED: frozenset({S.RUNNING, S.PAUSED, S.IDLE}),
}


class IllegalTransition(Exception):
    """A bug: code asked for a move the table does not allow."""


def check_move(old: JobState, new: JobState) -> None:
    if old != new and new not in ALLOWED[old]:
        raise IllegalTransition(f"{old.value} -> {new.value}")


class Trigger(str, Enum):
    SCHEDULE = "schedule"
    MANUAL = "manual"  # ku run / kagaya
    CATCH_UP = "catch_up"  # missed while the daemon was down
    REBOOT = "reboot"  # @reboot, once per daemon start


class Outcome(str, Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    TIMEOUT = "timeout"
    ERROR = "error"
    INTERRUPTED = "interrupted"  # set by the daemon for runs in flight when it died; not produced here
    CANCELLED = "cancelled"  # ended by daemon shutdown


@dataclass(frozen=True)
class RunResult:
    outcome: Outcome
    description: str
    exit_code: int | None  # None when killed by a signal or not started
    signal: int | None  # number of the signal that ended the direct child, if any
    pid: int | None
    started_mono: float | None  # clock.monotonic() seconds
    ended_mono: float
    tail: tuple[str, ...]  # last lines of output, oldest first


@dataclass(slots=True)
class RunRecord:
    """One run, as kept in state.json and shown by `ku history`. Times are ISO 8601 strings in UTC."""

    run: int
    trigger: str
    scheduled: str | None
    started: str
    ended: str | None = None
    duration_s: float | None = None
    outcome: str | None = None  # process.Outcome value; None while running
    description: str = ""
    exit_code: int | None = None
    signal: int | None = None
    pid: int | None = None
    tail: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies recursively and is ~10x slower, and state.json is
        # encoded on the daemon's hub after every run.
        d = {name: getattr(self, name) for name in _RECORD_FIELDS}
        d["tail"] = list(self.tail)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}  # unknown keys: a newer koku's
        return cls(**known)


@dataclass(slots=True)
class JobMemory:
    """What survives a restart for one job (the per-job part of state.json)."""

    paused: bool = False
    paused_until: str | None = None  # ISO UTC; None = until resumed
    stopped: bool = False
    consecutive_failures: int = 0
    skips_left: int = 0  # backoff: scheduled runs still to skip
    skipped: int = 0  # runs skipped because the job was still running (overlap = false)
    runs: int = 0  # runs started so far; the last one's number
    next_run: str | None = None  # ISO UTC the daemon was waiting for: tells catch_up what was missed
    last_run: RunRecord | None = None  # the last finished run
    in_flight: list[RunRecord] = field(default_factory=list)  # runs started, not yet finished
    history: list[RunRecord] = field(default_factory=list)  # finished runs, oldest first

    def to_dict(self) -> dict[str, Any]:
        d = {name: getattr(self, name) for name in _MEMORY_SCALARS}
        d["last_run"] = self.last_run.to_dict() if self.last_run else None
        d["in_flight"] = [r.to_dict() for r in self.in_flight]
        d["history"] = [r.to_dict() for r in self.history]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobMemory:
        mem = cls()
        for key in ("paused", "stopped"):
            setattr(mem, key, bool(data.get(key, False)))
        for key in ("consecutive_failures", "skips_left", "skipped", "runs"):
            value = data.get(key, 0)
            setattr(mem, key, value if isinstance(value, int) and value >= 0 else 0)
        for key in ("paused_until", "next_run"):
            value = data.get(key)
            setattr(mem, key, value if isinstance(value, str) else None)
        last = data.get("last_run")
        mem.last_run = RunRecord.from_dict(last) if isinstance(last, dict) else None
        mem.in_flight = [RunRecord.from_dict(r) for r in data.get("in_flight") or [] if isinstance(r, dict)]
        mem.history = [RunRecord.from_dict(r) for r in data.get("history") or [] if isinstance(r, dict)]
        return mem


_RECORD_FIELDS = tuple(f.name for f in fields(RunRecord))
_MEMORY_SCALARS = tuple(f.name for f in fields(JobMemory) if f.name not in ("last_run", "in_flight", "history"))
