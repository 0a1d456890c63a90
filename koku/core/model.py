"""Job states, the moves allowed between them, and run records. Pure.

The five states are the vocabulary users and kagaya see. A job's state changes in exactly one place
(``koku.core.runner.JobRunner._set_state``), which checks the move against ``ALLOWED``
(tests/test_layers.py::test_docstrings_name_methods_that_exist keeps this sentence true).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import Enum
from typing import Any, Callable

from koku.errors import IllegalTransition


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
    # idle -> failing: a reload switches a job that has failed to on_error = backoff.
    S.IDLE: frozenset({S.RUNNING, S.PAUSED, S.FAILING}),
    S.RUNNING: frozenset({S.IDLE, S.FAILING, S.STOPPED, S.PAUSED}),
    S.PAUSED: frozenset({S.RUNNING, S.IDLE, S.FAILING, S.STOPPED}),
    S.FAILING: frozenset({S.RUNNING, S.PAUSED, S.IDLE}),
    S.STOPPED: frozenset({S.RUNNING, S.PAUSED, S.IDLE}),
}


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
    SKIPPED = "skipped"  # never started: start_deadline passed (queue, daemon down, clock); never counts


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
    # What the run's cgroup used, where the run had one (cgroup containment): CPU microseconds of every
    # process of the run, and peak memory bytes where the memory controller is enabled for it.
    cpu_usec: int | None = None
    memory_peak: int | None = None


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
    cpu_s: float | None = None  # CPU seconds of the whole run (cgroup containment only)
    memory_peak: int | None = None  # peak memory bytes of the whole run (cgroup with memory controller)
    # "starting": saved before the child is spawned (a crash then may or may not have run it);
    # "running": the child exists and ``pid`` is its process group; None once the run has ended.
    phase: str | None = None
    # What the run caused: {"notifier": "ops" | "ping", "event": "failure", "delivered": true | false |
    # null while pending, "answer": "HTTP 200 OK" or the reason it failed}.
    notifications: list[dict[str, Any]] = field(default_factory=list)
    # Earlier attempts of a run with retries, oldest first: {"started", "ended", "duration_s", "outcome",
    # "description", "exit_code", "signal", "pid"}; the record's own fields are the last attempt's.
    attempts: list[dict[str, Any]] = field(default_factory=list)
    queued: str | None = None  # when it began waiting for a free slot (max_running); None: never waited

    def to_dict(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies recursively and is ~10x slower, and state.json is
        # encoded on the daemon's hub after every run.
        d = {name: getattr(self, name) for name in _RECORD_FIELDS}
        d["tail"] = list(self.tail)
        d["notifications"] = [dict(n) for n in self.notifications]
        d["attempts"] = [dict(a) for a in self.attempts]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "", problems: list[str] | None = None) -> RunRecord | None:
        """A record from state.json, which anyone with access may have edited. A bad optional field is
        dropped (reset to its default) and reported in ``problems``; a record without a valid ``run``,
        ``trigger`` or ``started`` is dropped whole (None). Unknown keys are a newer koku's: ignored."""
        problems = [] if problems is None else problems
        values: dict[str, Any] = {}
        for name, check in _RECORD_CHECKS.items():
            if name not in data:
                continue
            value = data[name]
            if check(value):
                values[name] = list(value) if name in ("tail", "notifications", "attempts") else value
            elif name in _RECORD_REQUIRED:
                problems.append(f"{where}: invalid {name} {_show(value)}; record dropped")
                return None
            else:
                problems.append(f"{where}.{name}: invalid value {_show(value)}; dropped")
        missing = [name for name in _RECORD_REQUIRED if name not in values]
        if missing:
            problems.append(f"{where}: no {missing[0]}; record dropped")
            return None
        return cls(**values)


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
    removed: str | None = None  # ISO UTC when the job left the config; forgotten after forget_removed_after
    last_run: RunRecord | None = None  # the last finished run
    in_flight: list[RunRecord] = field(default_factory=list)  # runs started, not yet finished
    history: list[RunRecord] = field(default_factory=list)  # finished runs, oldest first

    def end_run(self, record: RunRecord, keep: int) -> None:
        """Move a run from in flight to history (keeping the last ``keep``). The runner calls this when a
        run ends, and for a run a crashed daemon left in flight; nothing else edits history."""
        record.phase = None
        self.in_flight = [r for r in self.in_flight if r.run != record.run]
        self.last_run = record
        self.history.append(record)
        del self.history[: max(0, len(self.history) - keep)]

    def skip_run(self, record: RunRecord, keep: int) -> None:
        """Record a run that never started (start_deadline passed, dropped from the queue): history only;
        ``last_run`` stays the last run that really ran."""
        self.in_flight = [r for r in self.in_flight if r.run != record.run]
        self.history.append(record)
        del self.history[: max(0, len(self.history) - keep)]

    def to_dict(self) -> dict[str, Any]:
        d = {name: getattr(self, name) for name in _MEMORY_SCALARS}
        d["last_run"] = self.last_run.to_dict() if self.last_run else None
        d["in_flight"] = [r.to_dict() for r in self.in_flight]
        d["history"] = [r.to_dict() for r in self.history]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], problems: list[str] | None = None) -> JobMemory:
        """One job's saved state. Never raises: each invalid field is dropped (its default kept) and
        named in ``problems`` (``skips_left: invalid value ...``), so a hand-edited or damaged file cannot
        stop the daemon from starting."""
        problems = [] if problems is None else problems
        mem = cls()
        for name, check in _MEMORY_CHECKS.items():
            value = data.get(name)
            if value is None:
                continue  # absent or null: the default
            if check(value):
                setattr(mem, name, value)
            else:
                problems.append(f"{name}: invalid value {_show(value)}; dropped")
        last = data.get("last_run")
        if isinstance(last, dict):
            mem.last_run = RunRecord.from_dict(last, "last_run", problems)
        elif last is not None:
            problems.append(f"last_run: invalid value {_show(last)}; dropped")
        for key in ("in_flight", "history"):
            raw = data.get(key) or []
            if not isinstance(raw, list):
                problems.append(f"{key}: invalid value {_show(raw)}; dropped")
                continue
            records = []
            for i, item in enumerate(raw):
                rec = RunRecord.from_dict(item, f"{key}[{i}]", problems) if isinstance(item, dict) else None
                if rec is not None:
                    records.append(rec)
                elif not isinstance(item, dict):
                    problems.append(f"{key}[{i}]: invalid value {_show(item)}; dropped")
            setattr(mem, key, records)
        # Run ids must never repeat: the counter is at least the highest id any record carries.
        mem.runs = max([mem.runs] + [r.run for r in mem.in_flight + mem.history])
        return mem


# Bounds for values read back from state.json. A pid is a process group koku may signal: never 0 or 1
# (killpg(1) is everything), never beyond Linux's largest pid_max. Backoff never skips more than a
# day of every-second runs.
MAX_PID = 4_194_304
MAX_SKIPS = 86_400
MAX_COUNT = 2 ** 53


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _count(limit: int = MAX_COUNT) -> Callable[[Any], bool]:
    return lambda v: type(v) is int and 0 <= v <= limit


def _opt(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _iso(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _enum(kind: type[Enum]) -> Callable[[Any], bool]:
    values = {m.value for m in kind}  # type: ignore[attr-defined]
    return lambda v: isinstance(v, str) and v in values


_RECORD_CHECKS: dict[str, Callable[[Any], bool]] = {
    "run": lambda v: type(v) is int and 1 <= v <= MAX_COUNT,
    "trigger": _enum(Trigger),
    "scheduled": _opt(_iso),
    "started": _iso,
    "ended": _opt(_iso),
    "duration_s": _opt(lambda v: type(v) in (int, float) and math.isfinite(v) and v >= 0),
    "outcome": _opt(_enum(Outcome)),
    "description": lambda v: isinstance(v, str),
    "exit_code": _opt(lambda v: type(v) is int and 0 <= v <= 255),
    "signal": _opt(lambda v: type(v) is int and 1 <= v <= 128),
    "pid": _opt(lambda v: type(v) is int and 1 < v <= MAX_PID),
    "tail": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "phase": _opt(lambda v: v in ("starting", "running")),
    "notifications": lambda v: isinstance(v, list) and all(
        isinstance(n, dict) and isinstance(n.get("notifier"), str) and isinstance(n.get("event"), str)
        and n.get("delivered") in (True, False, None) for n in v),
    "cpu_s": _opt(lambda v: type(v) in (int, float) and math.isfinite(v) and v >= 0),
    "memory_peak": _opt(lambda v: type(v) is int and v >= 0),
    "attempts": lambda v: isinstance(v, list) and all(
        isinstance(a, dict) and isinstance(a.get("outcome"), str) and isinstance(a.get("started"), str) for a in v),
    "queued": _opt(_iso),
}
_RECORD_REQUIRED = ("run", "trigger", "started")
_MEMORY_CHECKS: dict[str, Callable[[Any], bool]] = {
    "paused": lambda v: isinstance(v, bool),
    "stopped": lambda v: isinstance(v, bool),
    "paused_until": _iso,
    "next_run": _iso,
    "removed": _iso,
    "consecutive_failures": _count(),
    "skips_left": _count(MAX_SKIPS),
    "skipped": _count(),
    "runs": _count(),
}

_RECORD_FIELDS = tuple(f.name for f in fields(RunRecord))
_MEMORY_SCALARS = tuple(f.name for f in fields(JobMemory) if f.name not in ("last_run", "in_flight", "history"))
