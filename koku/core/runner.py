"""One JobRunner per configured job: when to run, whether to run, what state the job is in.

Policy lives here (overlap, on_error continue/backoff/stop, pause, catch_up, @reboot, retries,
start_deadline, the job's max_running; the daemon-wide limit is core/admission.py); how a child is
run lives in koku/daemon/process.py and is reached through an *executor*, so the policy is tested with a fake clock
and a fake executor, and the daemon passes the real one (``koku.daemon.executor.ProcessExecutor``).

A job's state changes only in ``_set_state``, which checks the move against ``model.ALLOWED`` and logs
one line: ``job=backup state=running->failing reason="exit status 2"``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Protocol

from koku.core import logfmt, runpolicy
from koku.core.runpolicy import iso, parse_iso  # noqa: F401 (others import them from here)
from koku.core.runslots import RunSlots
from koku.core.admission import Admission, Waiter
from koku.core.alerts import NO_EVENTS, RunEvents
from koku.core.clock import Clock, shifted
from koku.core.config import DaemonConfig, JitterMode, JobConfig, OnError
from koku.core.durations import spoken_duration
from koku.core.model import JobMemory, JobState, RunRecord, Trigger, check_move
from koku.core.model import Outcome, RunResult
from koku.core.schedule import zone_name
from koku.core.scheduler import BACKWARD_KEEP, Scheduler, Timer
from koku.errors import RunRefused

SKIP_WARN_EVERY = 600.0  # seconds between "still running, run skipped" warnings for one job


class Executor(Protocol):
    def start(self, runner: JobRunner, record: RunRecord) -> None:
        """Start the run; call ``runner.finish_run(record, result)`` when it ends."""

    def cancel(self, runner: JobRunner, run: int, grace: float) -> None:
        """Terminate a run in flight (daemon shutdown)."""


@dataclass
class Context:
    clock: Clock
    scheduler: Scheduler
    daemon: DaemonConfig
    executor: Executor
    changed: Callable[[str], None]  # something worth saving happened to this job (its name)
    rng: random.Random
    run_ended: Callable[[JobRunner, RunRecord], None] = lambda runner, record: None
    events: RunEvents = NO_EVENTS  # alerts, pings and metrics hear of starts, ends and skips here
    config_file: str = ""  # the main config's path: the file of every job not from a drop-in
    admission: Admission = field(default_factory=Admission)  # [daemon] max_running, shared by every job


class JobRunner(RunSlots):
    __slots__ = ("cfg", "mem", "ctx", "active", "retired", "next_scheduled", "_next_timer", "_unpause_timer",
                 "_backoff_next", "_last_skip_warning", "state", "waiting", "retrying", "_backlog")

    def __init__(self, cfg: JobConfig, mem: JobMemory, ctx: Context):
        self.cfg = cfg
        self.mem = mem
        self.ctx = ctx
        self.active: dict[int, RunRecord] = {}
        self.retired = False
        self.next_scheduled: datetime | None = None  # next instant the schedule gives (skipped or not)
        self._next_timer: Timer | None = None
        self._unpause_timer: Timer | None = None
        self._backoff_next: datetime | None = None  # first run not skipped by backoff
        self._last_skip_warning: float | None = None
        # Runs asked for but not started (max_running): run -> (record, its place in the queue, deadline).
        self.waiting: dict[int, tuple[RunRecord, Waiter, Timer | None]] = {}
        self.retrying: dict[int, tuple[RunRecord, Timer]] = {}  # failed attempts waiting for their retry
        self._backlog: list[datetime] = []  # catch_up = "all": missed slots still to run, oldest first
        self.state = self._rest_state()

    # ----- state -------------------------------------------------------------------------------
    def _rest_state(self) -> JobState:
        if self.mem.paused:
            return JobState.PAUSED
        if self.mem.stopped:
            return JobState.STOPPED
        if self.cfg.on_error is OnError.BACKOFF and self.mem.consecutive_failures > 0:
            return JobState.FAILING
        return JobState.IDLE

    def _set_state(self, new: JobState, reason: str) -> None:
        old = self.state
        if old == new:
            return
        check_move(old, new)
        self.state = new
        logfmt.info("state change", job=self.cfg.name, state=f"{old.value}->{new.value}", reason=reason)

    def _settle(self, reason: str) -> None:
        """Move to the state the job's flags and runs call for."""
        self._set_state(JobState.RUNNING if self.active else self._rest_state(), reason)
        self.ctx.changed(self.cfg.name)

    # ----- scheduling --------------------------------------------------------------------------
    def activate(self, startup: bool) -> None:
        """Put the job on the schedule. At daemon start, also handle @reboot and catch_up."""
        now = self.ctx.clock.now()
        missed = parse_iso(self.mem.next_run)
        if self.mem.skips_left:
            self._backoff_next = runpolicy.nth_run_after(self.cfg.schedule, now, self.mem.skips_left)
        self._schedule_after(now)
        self._arm_unpause()
        if not startup:
            return
        sched = self.cfg.schedule
        if sched.reboot:
            self._maybe_start(Trigger.REBOOT, None)
        elif missed is not None and missed <= now:
            slots, cut = runpolicy.missed_slots(self.cfg, missed, now)
            if not slots:
                logfmt.info("run missed while the daemon was down; not caught up (catch_up = skip)",
                            job=self.cfg.name, missed=iso(missed))
                return
            logfmt.info("catching up runs missed while the daemon was down", job=self.cfg.name, missed=iso(missed),
                        runs=len(slots), mode=self.cfg.catch_up.value)
            if cut:
                logfmt.warning("more runs were missed than catch_up_limit; the later ones are not caught up",
                               job=self.cfg.name, limit=self.cfg.catch_up_limit)
            self._backlog = slots[1:]
            self._maybe_start(Trigger.CATCH_UP, slots[0])
            self._next_backlog()

    def _schedule_after(self, after: datetime) -> None:
        if self._next_timer:
            self._next_timer.cancel()
            self._next_timer = None
        nxt = None if self.retired else self.cfg.schedule.next_after(after)
        if nxt is not None:
            # The schedule answers in the job's zone; everything after this is instants, kept in UTC
            # so that arithmetic and comparisons cannot lose which pass of a repeated hour it is.
            nxt = nxt.astimezone(timezone.utc)
        self.next_scheduled = nxt
        self.mem.next_run = iso(nxt) if nxt and not (self.mem.paused or self.mem.stopped) else None
        if nxt is None:
            return
        delay = 0.0
        if self.cfg.jitter > 0:
            delay = (runpolicy.hash_delay(self.cfg.name, self.cfg.jitter) if self.cfg.jitter_mode is JitterMode.HASH
                     else self.ctx.rng.uniform(0, self.cfg.jitter))
        due = shifted(nxt, delay)
        self._next_timer = self.ctx.scheduler.add(due, lambda: self._on_due(nxt), label=self.cfg.name)

    def reschedule(self) -> None:
        """Compute the next run from the clock's time now (backoff's first run too)."""
        now = self.ctx.clock.now()
        if self.mem.skips_left:
            self._backoff_next = runpolicy.nth_run_after(self.cfg.schedule, now, self.mem.skips_left)
        self._schedule_after(now)

    def clock_stepped_back(self, seconds: float) -> bool:
        """The wall clock was stepped back ``seconds``. cronie's rule: a wildcard job keeps running on
        the new wall clock (its next run is computed from now); a fixed-time job keeps the next run it
        had, so the slots between the new time and the old one, which already ran, do not run again.
        A step of more than ``BACKWARD_KEEP`` is the clock being set: every job starts from the new time.
        Returns whether the next run was recomputed."""
        if self.retired or not (self.cfg.schedule.wildcard or seconds > BACKWARD_KEEP):
            return False
        self.reschedule()
        return True

    def _on_due(self, scheduled: datetime) -> None:
        self._next_timer = None
        now = self.ctx.clock.now()
        # Next run from now (minus the jitter that delayed this one), so runs that fell into a forward
        # clock jump collapse into this one instead of firing one by one.
        base = max(scheduled, shifted(now, -self.cfg.jitter))
        self._schedule_after(base)
        if self.mem.paused or self.mem.stopped:
            self.ctx.changed(self.cfg.name)
            return
        if self.mem.skips_left > 0:
            self.mem.skips_left -= 1
            logfmt.info("run skipped (backoff)", job=self.cfg.name, scheduled=iso(scheduled),
                        skips_left=self.mem.skips_left, next=iso(self.next_run()))
            self.ctx.changed(self.cfg.name)
            return
        self._maybe_start(Trigger.SCHEDULE, scheduled)

    def _maybe_start(self, trigger: Trigger, scheduled: datetime | None) -> RunRecord | None:
        late = self._late(scheduled)
        if late is not None:
            self._skip(trigger, scheduled, f"could not start within start_deadline "
                       f"{spoken_duration(self.cfg.start_deadline)} of its slot (it would have started "
                       f"{spoken_duration(late + self.cfg.start_deadline)} late)")
            return None
        if self._in_flight() and not self.cfg.overlap:
            self.mem.skipped += 1
            mono = self.ctx.clock.monotonic()
            if self._last_skip_warning is None or mono - self._last_skip_warning >= SKIP_WARN_EVERY:
                self._last_skip_warning = mono
                logfmt.warning("run skipped: still running (overlap = false)", job=self.cfg.name,
                               run=min([*self.active, *self.waiting, *self.retrying]), scheduled=iso(scheduled),
                               skipped=self.mem.skipped)
            self.ctx.changed(self.cfg.name)
            self.ctx.events.run_skipped(self, iso(scheduled), "still running (overlap = false)")
            return None
        return self._admit(trigger, scheduled)

    def _start(self, record: RunRecord) -> None:
        self.ctx.admission.acquire()
        record.started = iso(self.ctx.clock.now()) or ""
        # Saved ("starting") before the executor spawns anything: a crash after this point leaves a
        # record, and the run id and next_run on disk, so a restart never reuses the id or reruns the slot.
        record.phase = "starting"
        self.active[record.run] = record
        if record not in self.mem.in_flight:
            self.mem.in_flight.append(record)
        attempt = f" attempt {len(record.attempts) + 1}" if record.attempts else ""
        self._settle(f"{record.trigger} run {record.run}{attempt}")
        if not record.attempts:
            self.ctx.events.run_started(self, record)
        self.ctx.executor.start(self, record)

    # ----- commands ----------------------------------------------------------------------------
    def run_now(self) -> RunRecord:
        """A manual run (``ku run``): works in any state; refused only by overlap = false."""
        if self._in_flight() and not self.cfg.overlap:
            run = min([*self.active, *self.waiting, *self.retrying])
            raise RunRefused(f"job \"{self.cfg.name}\" is already running (run {run}; overlap = false)")
        return self._admit(Trigger.MANUAL, None)

    def pause(self, seconds: float | None) -> str:
        until = None if seconds is None else shifted(self.ctx.clock.now(), seconds)
        self.mem.paused = True
        self.mem.paused_until = iso(until)
        self.mem.next_run = None
        self._arm_unpause()
        self._settle("paused" + (f" until {iso(until)}" if until else ""))
        return f"paused {self.cfg.name}" + (f" until {iso(until)}" if until else "")

    def resume(self, reason: str = "resumed") -> str:
        if not (self.mem.paused or self.mem.stopped):
            return f"{self.cfg.name} is not paused or stopped; nothing to do"
        if self.mem.stopped:
            # Stopped after max_failures: a fresh start, or the next failure would stop it again at once.
            self.mem.consecutive_failures = 0
            self.mem.skips_left = 0
            self._backoff_next = None
        self.mem.paused = self.mem.stopped = False
        self.mem.paused_until = None
        if self._unpause_timer:
            self._unpause_timer.cancel()
            self._unpause_timer = None
        self.mem.next_run = iso(self.next_scheduled)
        self._settle(reason)
        return f"resumed {self.cfg.name}"

    def _arm_unpause(self) -> None:
        if self._unpause_timer:
            self._unpause_timer.cancel()
            self._unpause_timer = None
        until = parse_iso(self.mem.paused_until) if self.mem.paused else None
        if until is not None:
            self._unpause_timer = self.ctx.scheduler.add(until, self._unpause, label=f"{self.cfg.name}:unpause")

    def _unpause(self) -> None:
        self._unpause_timer = None
        if self.mem.paused:
            self.resume("timed pause ended")

    # ----- the executor reports here; the runner alone changes run records -----------------------
    def run_spawned(self, record: RunRecord, pid: int) -> None:
        """The child exists: its pid is how a daemon that crashes finds the process group again."""
        record.pid = pid
        record.phase = "running"
        logfmt.info("run started", job=self.cfg.name, run=record.run, pid=pid, trigger=record.trigger,
                    scheduled=record.scheduled)
        self.ctx.changed(self.cfg.name)

    def finish_run(self, record: RunRecord, result: RunResult) -> None:
        failures_before, stopped_before = self.mem.consecutive_failures, self.mem.stopped
        now = self.ctx.clock.now()
        was_active = self.active.pop(record.run, None) is not None
        record.ended = iso(now)
        if result.started_mono is not None:
            record.duration_s = round(result.ended_mono - result.started_mono, 3)
        record.outcome = result.outcome.value
        record.description = result.description
        record.exit_code = result.exit_code
        record.signal = result.signal
        record.pid = result.pid if result.pid is not None else record.pid
        record.tail = list(result.tail)
        record.cpu_s = None if result.cpu_usec is None else round(result.cpu_usec / 1e6, 3)
        record.memory_peak = result.memory_peak
        if was_active:
            self.ctx.admission.release()
        if self._retry(record, result):
            return
        self.mem.end_run(record, self.ctx.daemon.history)
        if result.outcome is Outcome.SUCCESS:
            self._on_success()
        elif result.outcome is not Outcome.CANCELLED:
            self._on_failure(record)
        logfmt.info("run finished", job=self.cfg.name, run=record.run, pid=record.pid, outcome=record.outcome,
                    exit=record.exit_code, duration=record.duration_s, reason=record.description,
                    next=iso(self.next_run()))
        self._settle(record.description)
        self.ctx.events.run_finished(self, record, failures_before, stopped_before)
        self.ctx.run_ended(self, record)
        self._next_backlog()

    def _on_success(self) -> None:
        self.mem.consecutive_failures = 0
        self.mem.skips_left = 0
        self._backoff_next = None

    def _on_failure(self, record: RunRecord) -> None:
        self.mem.consecutive_failures += 1
        k = self.mem.consecutive_failures
        policy = self.cfg.on_error
        if policy is OnError.BACKOFF:
            now = self.ctx.clock.now()
            skips = min(2 ** min(k - 1, 30), runpolicy.runs_per_day(self.cfg.schedule, now))
            self.mem.skips_left = skips
            self._backoff_next = runpolicy.nth_run_after(self.cfg.schedule, now, skips)
            logfmt.info("backing off", job=self.cfg.name, run=record.run, failures=k, skips=skips,
                        next=iso(self._backoff_next))
        elif policy is OnError.STOP and k >= self.cfg.max_failures:
            self.mem.stopped = True
            self.mem.next_run = None
            logfmt.warning("job stopped after repeated failures; `ku resume` re-enables it", job=self.cfg.name,
                           run=record.run, failures=k)

    def note_notification(self, record: RunRecord, entry: dict[str, Any], **outcome: Any) -> None:
        """A notification this run caused was queued (``entry`` is new) or has an outcome: the record is
        this runner's, so others report here rather than editing it."""
        if not outcome:
            record.notifications.append(entry)
        else:
            entry.update(outcome)
        self.ctx.changed(self.cfg.name)

    # ----- reporting ---------------------------------------------------------------------------
    def next_run(self) -> datetime | None:
        if self.mem.paused or self.mem.stopped or self.retired:
            return None
        if self.mem.skips_left and self._backoff_next is not None:
            return self._backoff_next
        return self.next_scheduled

    def status(self) -> dict[str, Any]:
        running = [self.active[r] for r in sorted(self.active)]
        last = running[-1] if running else self.mem.last_run
        finished = self.mem.last_run
        return {
            "name": self.cfg.name,
            "state": self.state.value,
            "last_run": last.started if last else None,
            "last_exit": None if running or finished is None else finished.exit_code,
            "next_run": iso(self.next_run()),
            "schedule": self.cfg.cron,
            "tz": self.cfg.tz,
            "zone": zone_name(self.cfg.schedule.tz),  # what `ku check` shows: tz as the schedule resolved it
            "command": self.cfg.command,
            "description": self.cfg.description,
            "on_error": self.cfg.on_error.value,
            "pid": running[0].pid if running else None,
            "pids": [r.pid for r in running if r.pid is not None],
            "running_since": running[0].started if running else None,
            "last_outcome": finished.outcome if finished else None,
            "last_description": finished.description if finished else None,
            "last_signal": finished.signal if finished else None,
            "last_duration_s": finished.duration_s if finished else None,
            "consecutive_failures": self.mem.consecutive_failures,
            "skips_left": self.mem.skips_left,
            "paused_until": self.mem.paused_until,
            "skipped": self.mem.skipped,
            "runs": self.mem.runs,
            "file": self.cfg.source or self.ctx.config_file,
            "user": self.cfg.user,  # null: the daemon's own user
            # A run waiting for a free slot (max_running) leaves the state alone: kagaya knows only five.
            "queued_since": min((r.queued or "" for r, _, _ in self.waiting.values()), default=None) or None,
            "retry_at": min((iso(t.when) or "" for _, t in self.retrying.values()), default=None) or None,
        }

    # ----- config changes ----------------------------------------------------------------------
    def check_update(self, cfg: JobConfig) -> None:
        """Raise IllegalTransition if ``update(cfg)`` would ask for a move the table forbids (reload
        checks every job before it changes any)."""
        saved = self.cfg
        self.cfg = cfg
        try:
            target = JobState.RUNNING if self.active else self._rest_state()
        finally:
            self.cfg = saved
        check_move(self.state, target)

    def update(self, cfg: JobConfig) -> None:
        """The job's config changed on reload: keep its state, take the new schedule."""
        self.cfg = cfg
        if self.mem.skips_left:
            self._backoff_next = runpolicy.nth_run_after(self.cfg.schedule, self.ctx.clock.now(), self.mem.skips_left)
        self._schedule_after(self.ctx.clock.now())
        self._settle("config changed")

    def retire(self) -> None:
        """Removed from the config: no more runs; a run in flight finishes."""
        self.retired = True
        for timer in (self._next_timer, self._unpause_timer):
            if timer:
                timer.cancel()
        self._next_timer = self._unpause_timer = None
        self.next_scheduled = None
        self.drop_pending()


def close_interrupted(mem: JobMemory, record: RunRecord, description: str, ended: datetime, keep: int) -> None:
    """A run a crashed daemon left in flight: recorded as interrupted (it never counts for on_error)."""
    record.ended = iso(ended)
    record.outcome = Outcome.INTERRUPTED.value
    record.description = description
    mem.end_run(record, keep)
