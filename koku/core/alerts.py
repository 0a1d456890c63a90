"""Alert policy and events. Pure: the daemon feeds run starts and ends in, gets back which events to
send; tests drive it on a fake clock.

The policy (issue 13): one ``failure`` event when a job reaches ``notify_after`` failures in a row,
then silence until it succeeds (``recovery``) or ``remind_every`` passes (a ``failure`` event marked
``reminder``); ``stopped`` when on_error = "stop" stops it; ``slow`` once per run; ``start``,
``success`` and ``skipped`` only when ``notify_on`` asks. The count of failures in a row is the job's
persisted ``consecutive_failures``, so a restarted daemon neither re-alerts an ongoing failure nor
forgets to send its recovery. Only the reminder clock lives in memory (a restart starts it again).
"""

from __future__ import annotations

import heapq
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from koku.core.clock import Clock
from koku.core.durations import spoken_duration
from koku.core.model import Outcome, RunRecord
from koku.core.notifyconf import NO_ALERTS, EventKind, JobAlerts


class JobRunner(Protocol):
    """What the alert policy reads of a job's runner (koku.core.runner.JobRunner provides it; named by
    a protocol so that alerts and runner do not import each other)."""

    cfg: Any  # JobConfig
    mem: Any  # JobMemory
    active: dict[int, RunRecord]

PING_BODY_MAX = 10_000  # bytes of output tail sent with a ping (Healthchecks keeps 10 kB by default)


class RunEvents(Protocol):
    """What the runner reports; the daemon's alert sink implements it. Every call returns at once."""

    def run_started(self, runner: JobRunner, record: RunRecord) -> None: ...

    def run_finished(self, runner: JobRunner, record: RunRecord, failures_before: int, stopped_before: bool) -> None: ...

    def run_skipped(self, runner: JobRunner, scheduled: str | None, reason: str) -> None: ...


class NoEvents:
    def run_started(self, runner: JobRunner, record: RunRecord) -> None:
        pass

    def run_finished(self, runner: JobRunner, record: RunRecord, failures_before: int, stopped_before: bool) -> None:
        pass

    def run_skipped(self, runner: JobRunner, scheduled: str | None, reason: str) -> None:
        pass


NO_EVENTS = NoEvents()


@dataclass(frozen=True)
class Decision:
    kind: EventKind
    reminder: bool = False


@dataclass
class _JobAlertState:
    last_alert: float | None = None  # monotonic seconds of the last failure alert (or reminder)
    slow: dict[int, float] = field(default_factory=dict)  # run -> monotonic deadline, until sent or ended
    skip_reported: int | None = None  # the run in flight whose skips were already reported


FAILED = frozenset({Outcome.FAILURE.value, Outcome.TIMEOUT.value, Outcome.ERROR.value, Outcome.INTERRUPTED.value})


class AlertPolicy:
    """Decides events for every job. ``started``/``finished``/``skipped`` return what to send now;
    ``due_slow`` returns the slow runs whose time came, ``next_deadline`` when to ask again."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self._jobs: dict[str, _JobAlertState] = {}
        self._deadlines: list[tuple[float, str, int]] = []  # heap; stale entries are skipped

    def _state(self, job: str) -> _JobAlertState:
        state = self._jobs.get(job)
        if state is None:
            state = self._jobs[job] = _JobAlertState()
        return state

    def started(self, job: str, alerts: JobAlerts, run: int) -> list[Decision]:
        if alerts.slow_after is not None:  # setting slow_after is the opt-in: "slow" in notify_on is implied
            deadline = self.clock.monotonic() + alerts.slow_after
            self._state(job).slow[run] = deadline
            heapq.heappush(self._deadlines, (deadline, job, run))
        return [Decision(EventKind.START)] if EventKind.START in alerts.notify_on else []

    def finished(self, job: str, alerts: JobAlerts, outcome: str | None, failures_before: int, failures_after: int,
                 stopped_now: bool, run: int) -> list[Decision]:
        state = self._state(job)
        state.slow.pop(run, None)
        wanted = alerts.notify_on
        out: list[Decision] = []
        if outcome == Outcome.SUCCESS.value:
            if failures_before >= alerts.notify_after and EventKind.RECOVERY in wanted:
                out.append(Decision(EventKind.RECOVERY))
            if EventKind.SUCCESS in wanted:
                out.append(Decision(EventKind.SUCCESS))
            state.last_alert = None
        elif outcome in FAILED and failures_after > failures_before:
            now = self.clock.monotonic()
            if failures_after == alerts.notify_after:
                state.last_alert = now
                if EventKind.FAILURE in wanted:
                    out.append(Decision(EventKind.FAILURE))
            elif failures_after > alerts.notify_after:
                if state.last_alert is None:
                    state.last_alert = now  # alerted before a restart: the reminder clock starts now
                elif alerts.remind_every is not None and now - state.last_alert >= alerts.remind_every:
                    state.last_alert = now
                    if EventKind.FAILURE in wanted:
                        out.append(Decision(EventKind.FAILURE, reminder=True))
        if stopped_now and EventKind.STOPPED in wanted:
            out.append(Decision(EventKind.STOPPED))
        if state.skip_reported == run:
            state.skip_reported = None
        if not state.slow and state.last_alert is None and state.skip_reported is None:
            self._jobs.pop(job, None)  # nothing to remember: 10,000 healthy jobs cost no state
        return out

    def skipped(self, job: str, alerts: JobAlerts, blocking_run: int | None) -> list[Decision]:
        """A scheduled run was skipped because ``blocking_run`` was still going: one event per blocking
        run, not one per skipped slot (a stuck every-second job would otherwise send one a second)."""
        if EventKind.SKIPPED not in alerts.notify_on:
            return []
        state = self._state(job)
        if blocking_run is not None and state.skip_reported == blocking_run:
            return []
        state.skip_reported = blocking_run
        return [Decision(EventKind.SKIPPED)]

    def forget(self, job: str) -> None:
        """The job left the config."""
        self._jobs.pop(job, None)

    def next_deadline(self) -> float | None:
        """Monotonic seconds of the next slow check, or None."""
        self._drop_stale()
        return self._deadlines[0][0] if self._deadlines else None

    def due_slow(self) -> list[tuple[str, int]]:
        """(job, run) of runs that passed slow_after just now; each is returned once."""
        now = self.clock.monotonic()
        due = []
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, job, run = heapq.heappop(self._deadlines)
            state = self._jobs.get(job)
            if state is not None and state.slow.get(run) == deadline:
                del state.slow[run]
                due.append((job, run))
        return due

    def _drop_stale(self) -> None:
        while self._deadlines:
            deadline, job, run = self._deadlines[0]
            state = self._jobs.get(job)
            if state is not None and state.slow.get(run) == deadline:
                return
            heapq.heappop(self._deadlines)


_SUMMARY = {
    EventKind.FAILURE: "failed", EventKind.RECOVERY: "recovered", EventKind.STOPPED: "was stopped after repeated failures",
    EventKind.START: "started", EventKind.SUCCESS: "succeeded", EventKind.SLOW: "is slow",
    EventKind.SKIPPED: "skipped a run", EventKind.TEST: "test notification",
}


def summary(event: dict[str, Any]) -> str:
    """One line for chat and mail subjects: ``koku@host: job "backup" failed (exit status 2), run 7``."""
    kind = EventKind(event["event"])
    run = event.get("run") or {}
    if kind is EventKind.TEST:
        return f"koku@{event['host']}: test notification from notifier \"{event.get('notifier', '')}\""
    text = f"koku@{event['host']}: job \"{event['job']}\" {_SUMMARY[kind]}"
    if event.get("reminder"):
        text += f" (still failing, {event['consecutive_failures']} in a row)"
    detail = event.get("reason") or (run.get("description") if kind in (EventKind.FAILURE, EventKind.RECOVERY, EventKind.STOPPED, EventKind.SUCCESS) else None)
    if detail:
        text += f" ({detail})"
    if run.get("run"):
        text += f", run {run['run']}"
    return text


def make_event(kind: EventKind, job: str, host: str, time: str, state: str, consecutive_failures: int,
               run: dict[str, Any] | None, version: str, **extra: Any) -> dict[str, Any]:
    """The event object every notifier gets (docs/protocol.md, "Events")."""
    event = {"event": kind.value, "job": job, "host": host, "time": time, "state": state,
             "consecutive_failures": consecutive_failures, "run": run, "koku_version": version}
    event.update({k: v for k, v in extra.items() if v is not None})
    return event


def encode_event(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False).encode()


def run_uuid(job: str, record: RunRecord) -> str:
    """The ping's ``rid``: Healthchecks wants a UUID, the same at start and end of one run. Derived from
    job, run number and start time, so a run counter that starts over (state lost) gives new ids."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"koku:{job}/{record.run}/{record.started}"))


def ping_url(base: str, kind: str, job: str, record: RunRecord) -> str:
    """Healthchecks' protocol: <ping>/start, <ping> on success, <ping>/<exit code> (or /fail) on failure."""
    base = base.rstrip("/")
    if kind == "start":
        path = base + "/start"
    elif record.outcome == Outcome.SUCCESS.value:
        path = base
    elif record.exit_code is not None:
        path = f"{base}/{record.exit_code}"
    else:
        path = base + "/fail"
    return f"{path}?rid={run_uuid(job, record)}"


def ping_body(record: RunRecord, limit: int = PING_BODY_MAX) -> bytes:
    """The output tail, bounded to ``limit`` bytes (the newest bytes are the ones kept)."""
    data = "\n".join(record.tail).encode("utf-8", errors="replace")
    return data[-limit:] if len(data) > limit else data


Emit = Callable[["JobRunner", "RunRecord | None", Decision, dict[str, Any]], None]


class PolicyEvents:
    """The runner's reports through the policy: ``emit(runner, record, decision, extra)`` is called for
    each event to send (the daemon builds and queues it; tests collect it)."""

    def __init__(self, policy: AlertPolicy, emit: Emit):
        self.policy = policy
        self.emit = emit

    def run_started(self, runner: JobRunner, record: RunRecord) -> None:
        alerts = runner.cfg.alerts
        if alerts is NO_ALERTS:
            return  # the common case: a job without alert keys costs one comparison
        for decision in self.policy.started(runner.cfg.name, alerts, record.run):
            self.emit(runner, record, decision, {})

    def run_finished(self, runner: JobRunner, record: RunRecord, failures_before: int, stopped_before: bool) -> None:
        alerts = runner.cfg.alerts
        if alerts is NO_ALERTS:
            return
        decisions = self.policy.finished(runner.cfg.name, alerts, record.outcome, failures_before,
                                         runner.mem.consecutive_failures, runner.mem.stopped and not stopped_before,
                                         record.run)
        for decision in decisions:
            self.emit(runner, record, decision, {"reminder": True} if decision.reminder else {})

    def run_skipped(self, runner: JobRunner, scheduled: str | None, reason: str) -> None:
        blocking = min(runner.active) if runner.active else None
        for decision in self.policy.skipped(runner.cfg.name, runner.cfg.alerts, blocking):
            self.emit(runner, None, decision, {"scheduled": scheduled, "reason": reason})

    def check_slow(self, runners: Callable[[str], JobRunner | None]) -> None:
        """Emit ``slow`` for runs past slow_after; ``runners`` finds a job's runner by name."""
        for job, run in self.policy.due_slow():
            runner = runners(job)
            record = runner.active.get(run) if runner is not None else None
            if record is not None:
                self.emit(runner, record, Decision(EventKind.SLOW),
                          {"reason": f"still running after {spoken_duration(runner.cfg.alerts.slow_after)}"})
