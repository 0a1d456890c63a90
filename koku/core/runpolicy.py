"""Small pure rules the runner applies: the hash jitter, retry delays, which missed runs to catch up,
how a run that never started is recorded, and backoff's arithmetic."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timezone
from typing import Any

from koku.core.clock import shifted
from koku.core.config import CatchUp, JobConfig
from koku.core.model import Outcome, RunRecord, Trigger
from koku.core.schedule import Schedule

EXACT_SKIP_LIMIT = 1000  # backoff: beyond this many skipped runs, estimate instead of iterating


def iso(dt: datetime | None) -> str | None:
    """UTC ISO 8601; milliseconds only where there are any (scheduled instants are whole seconds)."""
    if dt is None:
        return None
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds" if dt.microsecond else "seconds")


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def host_name() -> str:
    return os.uname().nodename


def hash_delay(name: str, jitter: float, host: str | None = None) -> float:
    """A delay in [0, jitter) fixed by the job's name and the host: the same at every start, different
    across hosts (and across jobs), so a fleet does not start the same job in the same second."""
    digest = hashlib.sha256(f"{host if host is not None else host_name()}\0{name}".encode()).digest()
    return jitter * int.from_bytes(digest[:8], "big") / 2 ** 64


def retry_delay(job: JobConfig, attempt: int) -> float:
    """Seconds before attempt ``attempt + 1`` after attempt ``attempt`` (1-based) failed: doubling."""
    return job.retry_delay * 2 ** (attempt - 1)


def attempt_of(record: RunRecord) -> dict[str, Any]:
    return {"started": record.started, "ended": record.ended, "duration_s": record.duration_s,
            "outcome": record.outcome, "description": record.description, "exit_code": record.exit_code,
            "signal": record.signal, "pid": record.pid}


def missed_slots(job: JobConfig, missed: datetime, now: datetime) -> tuple[list[datetime], bool]:
    """The missed runs catch_up asks for, oldest first, and whether catch_up_limit left some out.
    ``missed`` is the run the previous daemon was waiting for (already in the past)."""
    if job.catch_up is CatchUp.SKIP:
        return [], False
    if job.catch_up is CatchUp.ONCE:
        return [missed], False
    runs = [missed] + [r for r in job.schedule.runs_after(missed, job.catch_up_limit) if r <= now]
    return runs[: job.catch_up_limit], len(runs) > job.catch_up_limit


def skipped_record(run: int, trigger: Trigger, scheduled: str | None, now: str, reason: str,
                   queued: str | None = None) -> RunRecord:
    return RunRecord(run=run, trigger=trigger.value, scheduled=scheduled, started=now, ended=now,
                     outcome=Outcome.SKIPPED.value, description=f"skipped: {reason}", queued=queued)


def runs_per_day(schedule: Schedule, now: datetime) -> int:
    runs = schedule.runs_after(now, 2)
    if len(runs) < 2:
        return 1
    # Timestamps: subtracting two datetimes of one zone ignores their offsets (a fall-back repeat's
    # 01:00 EST - 01:00 EDT would be 0 s, not 3600 s).
    gap = max(1.0, runs[1].timestamp() - runs[0].timestamp())
    return max(1, int(86400 // gap))


def nth_run_after(schedule: Schedule, now: datetime, skips: int) -> datetime | None:
    """The first scheduled run after ``skips`` skipped ones."""
    exact = min(skips, EXACT_SKIP_LIMIT)
    runs = schedule.runs_after(now, exact + 1)
    if not runs:
        return None
    if skips <= exact:
        return runs[-1] if len(runs) == exact + 1 else None
    gap = (runs[-1].timestamp() - runs[0].timestamp()) / max(1, exact)
    return schedule.next_after(shifted(runs[-1], gap * (skips - exact - 1)))
