"""Next-run previews and schedule warnings for ``ku check``. Pure: the caller passes the start instant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Protocol

from koku.core.durations import spoken_duration
from koku.core.schedule import Schedule, zone_name


class PreviewedJob(Protocol):
    """What preview needs from a job (koku.core.config's JobConfig has these attributes)."""

    name: str
    cron: str
    tz: str | None
    schedule: Schedule
    overlap: bool
    timeout: float | None  # seconds


@dataclass(frozen=True)
class JobPreview:
    name: str
    cron: str
    tz: str  # zone_name() of the schedule's zone
    next: tuple[datetime, ...]  # aware, in the job's zone; empty for @reboot
    warnings: tuple[str, ...]


def _overlap_warning(job: PreviewedJob, runs: list[datetime]) -> str | None:
    if job.overlap or job.timeout is None or len(runs) < 2:
        return None
    gap = min((b - a).total_seconds() for a, b in zip(runs, runs[1:]))
    if job.timeout <= gap:
        return None
    return (
        f"timeout {spoken_duration(job.timeout)} is longer than the {spoken_duration(gap)} between runs; "
        "with overlap = false runs will be skipped"
    )


def preview_jobs(jobs: Iterable[PreviewedJob], start: datetime, n: int = 3) -> list[JobPreview]:
    """The next ``n`` runs after aware ``start`` for each job, with warnings: a timeout longer than
    the shortest previewed gap between runs (when overlap is off), runs moved or doubled by DST. A missing working
    directory is the config's warning (one wording, resolved against the config file). @reboot jobs get no runs."""
    previews = []
    for job in jobs:
        schedule = job.schedule
        runs = schedule.runs_after(start, n)
        warnings: list[str] = []
        overlap = _overlap_warning(job, runs)
        if overlap:
            warnings.append(overlap)
        for run in runs:
            note = schedule.dst_note(run)
            if note and note not in warnings:
                warnings.append(note)
        previews.append(JobPreview(job.name, job.cron, zone_name(schedule.tz), tuple(runs), tuple(warnings)))
    return previews


def preview(job_or_expr: PreviewedJob | str, tz: str | None = None, start: datetime | None = None,
            n: int = 3) -> JobPreview:
    """The next ``n`` runs and warnings for one job or one cron expression, by the rules of ``ku check``.

    ``job_or_expr``: a JobConfig (from ``koku.load_config``) or an expression such as ``"30 2 * * *"``
    read in zone ``tz`` (an IANA name; None: the machine's zone). ``start``: an aware datetime (default:
    now). Raises ScheduleError for a bad expression or zone.
    """
    from types import SimpleNamespace

    from koku.core.clock import RealClock
    from koku.core.schedule import parse_schedule

    if isinstance(job_or_expr, str):
        job_or_expr = SimpleNamespace(name=job_or_expr, cron=job_or_expr, tz=tz,  # type: ignore[assignment]
                                      schedule=parse_schedule(job_or_expr, tz), overlap=True, timeout=None)
    if start is None:
        start = RealClock().now()
    elif start.tzinfo is None:
        raise ValueError("start must be an aware datetime (with a zone or UTC offset)")
    return preview_jobs([job_or_expr], start, n)[0]  # type: ignore[list-item]
