"""The part of a job's policy about *when a run may start*: the job's own limit (overlap, max_running),
the daemon-wide queue (``[daemon] max_running``, core/admission.py), ``start_deadline``, retries within
the slot, and catch_up = "all"'s backlog of missed slots. A mixin of ``JobRunner`` (runner.py), which
owns the records and the state; split off by concern, not meant to be used alone. Pure.

Decisions the issue left open (README, "Retries, limits, missed runs"):
  * A waiting run keeps the job's state (idle, failing, ...); ``queued_since`` in its status says it waits.
  * A waiting run of an ``overlap = false`` job counts as in flight: a second due run is skipped.
  * Between attempts the run holds no slot and the job is not ``running``; ``retry_at`` says when.
  * A run skipped by start_deadline gets a record (outcome "skipped", the reason) and a run id; it does
    not count for on_error.
"""

from __future__ import annotations

from datetime import datetime
from koku.core import logfmt, runpolicy
from koku.core.clock import shifted
from koku.core.durations import spoken_duration
from koku.core.model import Outcome, RunRecord, RunResult, Trigger
from koku.core.runpolicy import iso, parse_iso


class RunSlots:
    __slots__ = ()

    def _next_backlog(self) -> None:
        """catch_up = "all": start the next missed slot when the job may run it (overlap = false: one
        after another, as each ends; overlap = true: all of them, as max_running allows)."""
        while self._backlog and not self.retired and not (self._in_flight() and not self.cfg.overlap):
            self._maybe_start(Trigger.CATCH_UP, self._backlog.pop(0))

    def _in_flight(self) -> bool:
        return bool(self.active or self.waiting or self.retrying)

    def can_start(self) -> bool:
        """The job's own limit: overlap = false one run at a time, overlap = true at most max_running."""
        if not self.cfg.overlap:
            return not self.active
        return self.cfg.max_running is None or len(self.active) < self.cfg.max_running

    def pending(self, run: int) -> bool:
        """Whether run ``run`` has not ended yet (running, waiting for a slot, or between attempts)."""
        return run in self.active or run in self.waiting or run in self.retrying

    def _late(self, scheduled: datetime | None) -> float | None:
        """Seconds past its start_deadline (jitter allowed for) that a run of ``scheduled`` would start
        now, or None if it is in time or has no deadline."""
        if self.cfg.start_deadline is None or scheduled is None:
            return None
        late = (self.ctx.clock.now() - scheduled).total_seconds() - self.cfg.jitter
        return late if late > self.cfg.start_deadline else None

    def _skip(self, trigger: Trigger, scheduled: datetime | None, reason: str, queued: str | None = None) -> None:
        """Record a run that never started, with the reason; it does not count for on_error."""
        self.mem.runs += 1
        now = iso(self.ctx.clock.now()) or ""
        record = runpolicy.skipped_record(self.mem.runs, trigger, iso(scheduled), now, reason, queued)
        self.mem.skip_run(record, self.ctx.daemon.history)
        logfmt.warning("run skipped", job=self.cfg.name, run=record.run, scheduled=iso(scheduled), reason=reason)
        self.ctx.changed(self.cfg.name)
        self.ctx.events.run_skipped(self, iso(scheduled), reason)
        self.ctx.run_ended(self, record)

    def _admit(self, trigger: Trigger, scheduled: datetime | None, record: RunRecord | None = None) -> RunRecord:
        """Start now if both limits allow, else queue in order of the slot (or of now, for a manual run)."""
        if record is None:
            self.mem.runs += 1
            record = RunRecord(run=self.mem.runs, trigger=trigger.value, scheduled=iso(scheduled), started="")
        admission = self.ctx.admission
        if self.can_start() and admission.free() and not len(admission):
            self._start(record)
            return record
        now = self.ctx.clock.now()
        record.queued = record.queued or iso(now)
        slot = parse_iso(record.scheduled) or now
        waiter = admission.wait(slot.timestamp(), self, lambda: self._dequeued(record.run))
        deadline = None
        if self.cfg.start_deadline is not None and record.scheduled is not None:
            at = shifted(slot, self.cfg.start_deadline + self.cfg.jitter)
            deadline = self.ctx.scheduler.add(at, lambda: self._expire(record.run), label=f"{self.cfg.name}:deadline")
        self.waiting[record.run] = (record, waiter, deadline)
        logfmt.info("run waiting for a free slot", job=self.cfg.name, run=record.run, scheduled=record.scheduled,
                    running=admission.running, max_running=admission.limit)
        self.ctx.changed(self.cfg.name)
        admission.pump()  # earlier waiters first; this one too if there is room after all
        return record

    def _dequeued(self, run: int) -> None:
        record, _, deadline = self.waiting.pop(run)
        if deadline:
            deadline.cancel()
        self._start(record)

    def _expire(self, run: int) -> None:
        entry = self.waiting.pop(run, None)
        if entry is None:
            return
        record, waiter, _ = entry
        self.ctx.admission.drop(waiter)
        waited = (self.ctx.clock.now() - (parse_iso(record.queued) or self.ctx.clock.now())).total_seconds()
        reason = (f"waited {spoken_duration(waited)} for a free slot (max_running), past start_deadline "
                  f"{spoken_duration(self.cfg.start_deadline or 0)}")
        now = iso(self.ctx.clock.now()) or ""
        skipped = runpolicy.skipped_record(record.run, Trigger(record.trigger), record.scheduled, now, reason,
                                           record.queued)
        self.mem.skip_run(skipped, self.ctx.daemon.history)
        logfmt.warning("run skipped", job=self.cfg.name, run=record.run, scheduled=record.scheduled, reason=reason)
        self.ctx.events.run_skipped(self, record.scheduled, reason)
        self._settle(reason)
        self.ctx.run_ended(self, skipped)
        self._next_backlog()

    def _retry(self, record: RunRecord, result: RunResult) -> bool:
        """After a failed attempt: schedule the next one if retries are left and it would start before
        the next scheduled run (overlap = false). True if a retry is pending; the failure then does not
        count for on_error yet."""
        attempt = len(record.attempts) + 1
        if result.outcome in (Outcome.SUCCESS, Outcome.CANCELLED) or attempt > self.cfg.retries or self.retired:
            return False
        delay = runpolicy.retry_delay(self.cfg, attempt)
        at = shifted(self.ctx.clock.now(), delay)
        nxt = self.next_scheduled
        if not self.cfg.overlap and nxt is not None and at >= nxt:
            logfmt.info("no retry: it would overlap the next scheduled run", job=self.cfg.name, run=record.run,
                        attempt=attempt, retry_at=iso(at), next=iso(nxt))
            return False
        record.attempts.append(runpolicy.attempt_of(record))
        logfmt.info("run failed; retrying", job=self.cfg.name, run=record.run, attempt=attempt,
                    reason=record.description, retry_at=iso(at))
        timer = self.ctx.scheduler.add(at, lambda: self._retry_now(record.run), label=f"{self.cfg.name}:retry")
        self.retrying[record.run] = (record, timer)
        self._settle(f"attempt {attempt} failed: {record.description}; retry at {iso(at)}")
        return True

    def _retry_now(self, run: int) -> None:
        record, _ = self.retrying.pop(run)
        for name in ("ended", "duration_s", "outcome", "exit_code", "signal", "pid"):
            setattr(record, name, None)
        record.description, record.tail = "", []
        self._admit(Trigger(record.trigger), None, record)

    def drop_pending(self, shutdown: bool = False) -> None:
        """The job was removed (or the daemon stops): runs waiting for a slot end as cancelled, with a
        record saying so; a pending retry ends the run as its last attempt ended (as cancelled at a
        shutdown, which never counts for on_error)."""
        self._backlog = []
        why = "the daemon is shutting down" if shutdown else "the job was removed from the config"
        for run in list(self.waiting):
            record, waiter, deadline = self.waiting.pop(run)
            self.ctx.admission.drop(waiter)
            if deadline:
                deadline.cancel()
            now = iso(self.ctx.clock.now()) or ""
            record.started = record.started or now
            record.ended, record.outcome = now, Outcome.CANCELLED.value
            record.description = f"never started: {why} while it waited for a free slot"
            self.mem.skip_run(record, self.ctx.daemon.history)
            logfmt.info("waiting run dropped", job=self.cfg.name, run=run, reason=why)
            self.ctx.run_ended(self, record)
        for run in list(self.retrying):
            record, timer = self.retrying.pop(run)
            timer.cancel()
            last = record.attempts.pop()  # the failed attempt becomes the run's end
            outcome = Outcome.CANCELLED if shutdown else Outcome(last["outcome"])
            note = f"; retry cancelled: {why}" if shutdown else ""
            self.finish_run(record, RunResult(outcome=outcome, description=last["description"] + note,
                                              exit_code=last["exit_code"], signal=last["signal"], pid=last["pid"],
                                              started_mono=None, ended_mono=0.0, tail=tuple(record.tail)))
