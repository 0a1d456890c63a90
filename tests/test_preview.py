"""koku.core.preview: next runs and warnings for ``ku check``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pytest

from koku.core.durations import spoken_duration
from koku.core.preview import JobPreview, preview_jobs
from koku.core.schedule import Schedule, parse_schedule


@dataclass(frozen=True)
class Job:
    name: str
    cron: str
    tz: str | None = "UTC"
    overlap: bool = False
    timeout: float | None = None

    @property
    def schedule(self) -> Schedule:
        return parse_schedule(self.cron, self.tz)


START = datetime.fromisoformat("2026-03-07T12:00:00+00:00")


def one(job: Job, start: datetime = START, n: int = 3) -> JobPreview:
    [preview] = preview_jobs([job], start, n)
    return preview


def test_preview_lists_next_runs_in_the_job_zone() -> None:
    preview = one(Job("backup", "0 2 * * *", tz="Europe/Berlin"))
    assert preview.name == "backup" and preview.cron == "0 2 * * *" and preview.tz == "Europe/Berlin"
    assert [r.isoformat() for r in preview.next] == [
        "2026-03-08T02:00:00+01:00",
        "2026-03-09T02:00:00+01:00",
        "2026-03-10T02:00:00+01:00",
    ]
    assert preview.warnings == ()


def test_preview_keeps_job_order_and_honours_n() -> None:
    previews = preview_jobs([Job("b", "*/5 * * * *"), Job("a", "@hourly")], START, n=2)
    assert [p.name for p in previews] == ["b", "a"]
    assert [len(p.next) for p in previews] == [2, 2]
    assert previews[1].next[0].isoformat() == "2026-03-07T13:00:00+00:00"


@pytest.mark.parametrize(
    "cron,timeout,overlap,warning",
    [
        ("0 * * * *", 7200, False,
         "timeout 2h is longer than the 1h between runs; with overlap = false runs will be skipped"),
        ("*/30 * * * *", 5400, False,
         "timeout 1h30m is longer than the 30m between runs; with overlap = false runs will be skipped"),
        ("0 * * * *", 7200, True, None),  # overlapping runs are allowed: nothing is skipped
        ("0 * * * *", 3600, False, None),  # exactly the gap: done in time
        ("0 * * * *", None, False, None),
        ("0 9 * * 1-5", 3 * 86400, False,  # the shortest previewed gap decides: Mon 09:00 -> Tue 09:00
         "timeout 3d is longer than the 1d between runs; with overlap = false runs will be skipped"),
    ],
)
def test_timeout_longer_than_gap_warns(
    cron: str, timeout: float | None, overlap: bool, warning: str | None
) -> None:
    preview = one(Job("j", cron, timeout=timeout, overlap=overlap))
    assert preview.warnings == ((warning,) if warning else ())


def test_gap_shortened_by_dst_counts() -> None:
    # 02:30 is skipped on 2026-03-08 in New York, so that run moves to 03:00 and the next comes
    # 23h30m later: a 24h timeout no longer fits.
    preview = one(Job("nightly", "30 2 * * *", tz="America/New_York", timeout=86400))
    assert preview.warnings == (
        "timeout 1d is longer than the 23h30m between runs; with overlap = false runs will be skipped",
        "02:30 does not exist on 2026-03-08 (DST gap); runs at 03:00",
    )


def test_single_previewed_run_gives_no_overlap_warning() -> None:
    assert one(Job("j", "0 * * * *", timeout=7200), n=1).warnings == ()


def test_dst_notes_are_warnings_once_each() -> None:
    start = datetime.fromisoformat("2026-11-01T00:45:00-04:00")
    preview = one(Job("tick", "*/30 * * * *", tz="America/New_York"), start=start, n=4)
    assert [r.isoformat() for r in preview.next] == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T01:30:00-05:00",
    ]
    assert preview.warnings == (
        "01:00 occurs twice on 2026-11-01; runs in both passes",
        "01:30 occurs twice on 2026-11-01; runs in both passes",
    )


def test_fixed_job_in_repeated_hour_warns_first_only() -> None:
    start = datetime.fromisoformat("2026-10-31T12:00:00-04:00")
    preview = one(Job("report", "30 1 * * *", tz="America/New_York"), start=start, n=2)
    assert preview.warnings == ("01:30 occurs twice on 2026-11-01; runs at the first only",)


def test_reboot_job_has_no_runs_and_no_warnings() -> None:
    preview = one(Job("boot", "@reboot", tz="Asia/Tokyo", timeout=99999))
    assert preview.next == ()
    assert preview.tz == "Asia/Tokyo"
    assert preview.warnings == ()


@pytest.mark.parametrize(
    "seconds,text",
    [(7200, "2h"), (3600, "1h"), (5400, "1h30m"), (90, "1m30s"), (45, "45s"), (0.5, "0.5s"),
     (93600, "1d2h"), (84600, "23h30m"), (1, "1s"), (59.6, "59.6s"), (60.4, "1m"), (1.25, "1.25s")],
)
def test_spoken_duration(seconds: float, text: str) -> None:
    assert spoken_duration(seconds) == text
