"""koku.core.schedule and koku.core.cronexpr: parsing, cronie's day and range rules, DST rules, zones,
never-firing expressions, and croniter underneath (what koku hands it, what it must not be handed,
and that the runs follow its expansion).

Expected runs come from three independent places: hand-written tables, a brute-force reference that
walks real instants minute by minute (``reference_runs``), and a small field matcher written here
(``cron_matches``) that tests membership item by item instead of expanding sets as koku does.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import croniter
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from koku.core import cronexpr, cronmatch
from koku.core import schedule as schedule_mod
from koku.errors import KokuError
from koku.core.schedule import Schedule, ScheduleError, parse_schedule, resolve_zone, zone_name

UTC = timezone.utc
NY = ZoneInfo("America/New_York")


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


def in_utc(runs: list[datetime]) -> list[datetime]:
    # Aware datetimes in different zones never compare equal when one lies in a repeated hour
    # (PEP 495), so compare instants in UTC.
    return [r.astimezone(UTC) for r in runs]


# ---------------------------------------------------------------- an independent matcher for tests

_MONTHS = "jan feb mar apr may jun jul aug sep oct nov dec".split()
_DAYS = "sun mon tue wed thu fri sat".split()
_BOUNDS = {
    "second": (0, 59), "minute": (0, 59), "hour": (0, 23), "dom": (1, 31), "month": (1, 12), "dow": (0, 6),
}


def _num(tok: str, kind: str) -> int:
    tok = tok.lower()
    if kind == "month" and tok in _MONTHS:
        return _MONTHS.index(tok) + 1
    if kind == "dow" and tok in _DAYS:
        return _DAYS.index(tok)
    return int(tok)


def _item_matches(item: str, v: int, kind: str) -> bool:
    lo, hi = _BOUNDS[kind]
    base, _, step_text = item.partition("/")
    step = int(step_text) if step_text else 1
    if base == "*":
        start, end = lo, hi
    elif "-" in base:
        start, end = (_num(x, kind) for x in base.split("-"))
    else:
        start = _num(base, kind)
        end = hi if step_text else start
    if start <= end:
        return start <= v <= end and (v - start) % step == 0
    size = hi - lo + 1  # a wrapping range: count positions from its start around the cycle
    pos = (v - start) % size
    return pos <= (end - start) % size and pos % step == 0


def _names_seven(item: str) -> bool:
    """Does this day-of-week item reach 7 (Sunday) explicitly, as ``7`` or a range ending at 7?
    ``*`` and ``a/step`` stop at 6, as croniter reads them."""
    base, _, _ = item.partition("/")
    return base == "7" or ("-" in base and base.split("-")[1] == "7")


def _field_matches(text: str, v: int, kind: str) -> bool:
    if any(_item_matches(item, v, kind) for item in text.split(",")):
        return True
    return kind == "dow" and v == 0 and any(
        _names_seven(item) and _item_matches(item, 7, "dow_7") for item in text.split(",")
    )


_BOUNDS["dow_7"] = (0, 7)


def cron_matches(expr: str, wall: datetime) -> bool:
    """Does the naive wall time match? Plain syntax only (no L/W/#, no nicknames)."""
    fields = expr.split()
    if len(fields) == 5:
        fields = ["0"] + fields
        if wall.second:
            return False
    sec, minute, hour, dom, month, dow = fields
    if not (
        _field_matches(sec, wall.second, "second")
        and _field_matches(minute, wall.minute, "minute")
        and _field_matches(hour, wall.hour, "hour")
        and _field_matches(month, wall.month, "month")
    ):
        return False
    dom_ok = _field_matches(dom, wall.day, "dom")
    dow_ok = _field_matches(dow, (wall.weekday() + 1) % 7, "dow")
    if dom.startswith("*") or dow.startswith("*"):
        return dom_ok and dow_ok
    return dom_ok or dow_ok


def is_wildcard(expr: str) -> bool:
    fields = expr.split()
    minute, hour = (fields[0], fields[1]) if len(fields) == 5 else (fields[1], fields[2])
    return minute.startswith("*") or hour.startswith("*")


def reference_runs(expr: str, tz: ZoneInfo, lo: datetime, hi: datetime) -> list[datetime]:
    """All runs in [lo, hi) by brute force over real instants (minute steps), with the DST rules
    written down directly: a fixed-time job runs at fold=0 instants only, plus once at the end of a
    gap if any skipped wall matched; a wildcard job runs at every matching instant."""
    fixed = not is_wildcard(expr)
    step = timedelta(minutes=1)
    runs = []
    t = lo
    prev_off = (t - step).astimezone(tz).utcoffset()
    while t < hi:
        local = t.astimezone(tz)
        off = local.utcoffset()
        wall = local.replace(tzinfo=None, fold=0)
        hit = cron_matches(expr, wall) and (not fixed or local.fold == 0)
        if fixed and off > prev_off:  # t is the first instant after a gap
            skipped = wall - (off - prev_off)
            while skipped < wall and not hit:
                hit = cron_matches(expr, skipped)
                skipped += step
        if hit:
            runs.append(t)
        prev_off = off
        t += step
    return runs


# ---------------------------------------------------------------- parsing tables

START = iso("2026-01-01T00:00:00+00:00")  # a Thursday

ACCEPTED = [
    # expression, next three runs (UTC) after START as "MM-DD HH:MM[:SS]" or "YYYY-MM-DD"
    ("0 0 13 * 5", ["01-02 00:00", "01-09 00:00", "01-13 00:00"]),  # the 13th OR a Friday
    ("0 0 */2 * 1", ["01-05 00:00", "01-19 00:00", "02-09 00:00"]),  # odd days AND Monday
    ("0 0 */1 * 1", ["01-05 00:00", "01-12 00:00", "01-19 00:00"]),  # star prefix: AND
    ("0 0 1-31 * 1", ["01-02 00:00", "01-03 00:00", "01-04 00:00"]),  # OR with every day
    ("0 0 29 2 0", ["02-01 00:00", "02-08 00:00", "02-15 00:00"]),  # Feb 29 OR a Sunday in Feb
    ("0 0 * * 6-6", ["01-03 00:00", "01-10 00:00", "01-17 00:00"]),  # croniter 7: every day
    ("0-0/5 12 * * *", ["01-01 12:00", "01-02 12:00", "01-03 12:00"]),
    ("59/15 * * * *", ["01-01 00:59", "01-01 01:59", "01-01 02:59"]),
    ("10/20 * * * *", ["01-01 00:10", "01-01 00:30", "01-01 00:50"]),
    ("0 0 * * fri-sun", ["01-02 00:00", "01-03 00:00", "01-04 00:00"]),
    ("0 0 * * 5-0", ["01-02 00:00", "01-03 00:00", "01-04 00:00"]),
    ("0 0 * * 5-7", ["01-02 00:00", "01-03 00:00", "01-04 00:00"]),
    ("0 0 * * 7-3", ["01-04 00:00", "01-05 00:00", "01-06 00:00"]),
    ("0 0 * * 7", ["01-04 00:00", "01-11 00:00", "01-18 00:00"]),
    ("0 0 * * 0", ["01-04 00:00", "01-11 00:00", "01-18 00:00"]),
    ("0 0 * * 0-7", ["01-02 00:00", "01-03 00:00", "01-04 00:00"]),
    ("0 0 * * MON-Wed", ["01-05 00:00", "01-06 00:00", "01-07 00:00"]),
    ("0 12 * * 1-5", ["01-01 12:00", "01-02 12:00", "01-05 12:00"]),
    ("0 0 1 jan,JUL *", ["2026-07-01", "2027-01-01", "2027-07-01"]),
    ("0 0 1 nov-feb *", ["2026-02-01", "2026-11-01", "2026-12-01"]),
    ("0 22-2 * * *", ["01-01 01:00", "01-01 02:00", "01-01 22:00"]),
    (" 5\t4  * * * ", ["01-01 04:05", "01-02 04:05", "01-03 04:05"]),
    ("@hourly", ["01-01 01:00", "01-01 02:00", "01-01 03:00"]),
    ("@daily", ["01-02 00:00", "01-03 00:00", "01-04 00:00"]),
    ("@midnight", ["01-02 00:00", "01-03 00:00", "01-04 00:00"]),
    ("@weekly", ["01-04 00:00", "01-11 00:00", "01-18 00:00"]),
    ("@monthly", ["02-01 00:00", "03-01 00:00", "04-01 00:00"]),
    ("@yearly", ["2027-01-01", "2028-01-01", "2029-01-01"]),
    ("@Annually", ["2027-01-01", "2028-01-01", "2029-01-01"]),
    ("0 0 29 2 *", ["2028-02-29", "2032-02-29", "2036-02-29"]),
    ("30 */10 * * * *", ["01-01 00:00:30", "01-01 00:10:30", "01-01 00:20:30"]),
    ("*/15 0 3 * * *", ["01-01 03:00:00", "01-01 03:00:15", "01-01 03:00:30"]),
    # extensions
    ("0 0 L * *", ["01-31 00:00", "02-28 00:00", "03-31 00:00"]),
    ("0 0 L 2 *", ["2026-02-28", "2027-02-28", "2028-02-29"]),
    ("0 0 1,L * *", ["01-31 00:00", "02-01 00:00", "02-28 00:00"]),
    ("0 0 15W * *", ["01-15 00:00", "02-16 00:00", "03-16 00:00"]),
    ("0 0 1W * *", ["02-02 00:00", "03-02 00:00", "04-01 00:00"]),
    ("0 0 * * 5#3", ["01-16 00:00", "02-20 00:00", "03-20 00:00"]),
    ("0 0 * * fri#3", ["01-16 00:00", "02-20 00:00", "03-20 00:00"]),
    ("0 0 * * 5L", ["01-30 00:00", "02-27 00:00", "03-27 00:00"]),
    ("0 0 * * L5", ["01-30 00:00", "02-27 00:00", "03-27 00:00"]),
    ("0 0 1 * 5#3", ["01-16 00:00", "02-01 00:00", "02-20 00:00"]),  # croniter 7 raises here
    ("0 0 31 2 1", ["02-02 00:00", "02-09 00:00", "02-16 00:00"]),  # Feb 31 never, Mondays do
]


def _expected(text: str) -> datetime:
    if len(text) == 10:
        return iso(text + "T00:00:00+00:00")
    return iso(f"2026-{text[:5]}T{text[6:]}+00:00")


@pytest.mark.parametrize("expr,runs", ACCEPTED, ids=[e for e, _ in ACCEPTED])
def test_accepted_expressions_fire_as_cron_does(expr: str, runs: list[str]) -> None:
    sched = parse_schedule(expr, "UTC")
    assert sched.runs_after(START, 3) == [_expected(r) for r in runs]
    assert sched.expr == expr


REJECTED = [
    ("", 'invalid cron expression "": it is empty'),
    ("61 * * * *", 'invalid cron expression "61 * * * *": minute 61 out of range 0-59'),
    ("* 24 * * *", 'invalid cron expression "* 24 * * *": hour 24 out of range 0-23'),
    ("* * 0 * *", 'invalid cron expression "* * 0 * *": day of month 0 out of range 1-31'),
    ("* * * 13 *", 'invalid cron expression "* * * 13 *": month 13 out of range 1-12'),
    ("* * * * 8", 'invalid cron expression "* * * * 8": day of week 8 out of range 0-7'),
    ("60 * * * * *", 'invalid cron expression "60 * * * * *": second 60 out of range 0-59'),
    ("1-70 * * * *", 'invalid cron expression "1-70 * * * *": minute 70 out of range 0-59'),
    (
        "* * *",
        'invalid cron expression "* * *": expected 5 fields (minute hour day-of-month month '
        "day-of-week) or 6 with seconds first, got 3",
    ),
    (
        "0 0 * * * * 2026",
        'invalid cron expression "0 0 * * * * 2026": expected 5 fields (minute hour day-of-month '
        "month day-of-week) or 6 with seconds first, got 7",
    ),
    (
        "@fortnightly",
        'invalid cron expression "@fortnightly": unknown nickname "@fortnightly" (use @reboot, '
        "@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly)",
    ),
    ("*/0 * * * *", 'invalid cron expression "*/0 * * * *": minute step 0 in "*/0" must be at least 1'),
    ("*/x * * * *", 'invalid cron expression "*/x * * * *": minute step "x" in "*/x" is not a number'),
    ("x * * * *", 'invalid cron expression "x * * * *": minute "x" is not a number'),
    ("H * * * *", 'invalid cron expression "H * * * *": minute "H" is not a number'),
    ("-5 * * * *", 'invalid cron expression "-5 * * * *": minute "-5" is malformed'),
    ("1,,2 * * * *", 'invalid cron expression "1,,2 * * * *": minute field "1,,2" has an empty list item'),
    ("* * * foo *", 'invalid cron expression "* * * foo *": month "foo" is not a number or name (jan-dec)'),
    (
        "* * * * funday",
        'invalid cron expression "* * * * funday": day of week "funday" is not a number or name (sun-sat)',
    ),
    ("0 0 ? * *", 'invalid cron expression "0 0 ? * *": day of month "?" is not a number'),
    ("0 0 * * L", 'invalid cron expression "0 0 * * L": day of week "L" is not a number or name (sun-sat)'),
    ("0 L * * *", 'invalid cron expression "0 L * * *": hour "L" is not a number'),
    (
        "0 0 15W,1 * *",
        'invalid cron expression "0 0 15W,1 * *": day of month "15W" must be the only item in its field',
    ),
    ("0 0 32W * *", 'invalid cron expression "0 0 32W * *": day of month 32 out of range 1-31'),
    (
        "0 0 * * 5#6",
        'invalid cron expression "0 0 * * 5#6": day of week "5#6": occurrence 6 out of range 1-5',
    ),
    ("0 0 30 2 *", 'cron expression "0 0 30 2 *" can never fire'),
    ("0 0 31 4,6,9,11 *", 'cron expression "0 0 31 4,6,9,11 *" can never fire'),
    ("0 0 */30 * 1#2", 'cron expression "0 0 */30 * 1#2" can never fire'),  # 1st/31st AND 2nd Monday
    ("0 0 0 30 2 *", 'cron expression "0 0 0 30 2 *" can never fire'),
]


@pytest.mark.parametrize("expr,message", REJECTED, ids=[e or "empty" for e, _ in REJECTED])
def test_rejected_expressions_say_what_is_wrong(expr: str, message: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_schedule(expr, "UTC")
    assert str(info.value) == message


def test_schedule_error_is_a_value_error_and_a_koku_error() -> None:
    with pytest.raises(ValueError):
        parse_schedule("61 * * * *", "UTC")
    assert issubclass(ScheduleError, KokuError)
    with pytest.raises(ScheduleError, match="must be a string"):
        parse_schedule(5, "UTC")  # type: ignore[arg-type]


def test_never_firing_expressions_are_rejected_fast() -> None:
    began = time.process_time()
    for expr in ("0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 */30 * 1#2", "* * 31 2 *"):
        with pytest.raises(ScheduleError, match="can never fire"):
            parse_schedule(expr, "UTC")
    assert time.process_time() - began < 0.5


def test_wildcard_job_whose_every_time_is_in_a_dst_gap_is_rejected() -> None:
    # 02:xx on the second Sunday of March never exists in New York; in UTC it does.
    with pytest.raises(ScheduleError) as info:
        parse_schedule("* 2 * 3 0#2", NY)
    assert str(info.value) == 'cron expression "* 2 * 3 0#2" never fires in America/New_York'
    assert parse_schedule("* 2 * 3 0#2", "UTC").next_after(START) == iso("2026-03-08T02:00:00+00:00")
    # a fixed-time job in the same gap still runs, once, after the jump
    assert parse_schedule("30 2 * 3 0#2", NY).next_after(START) == iso("2026-03-08T03:00:00-04:00")


KINDS = [
    # expression, wildcard, has_seconds, reboot
    ("30 2 * * *", False, False, False),
    ("0 1-3 * * *", False, False, False),
    ("@daily", False, False, False),
    ("@weekly", False, False, False),
    ("@hourly", True, False, False),
    ("*/5 * * * *", True, False, False),
    ("0 */2 * * *", True, False, False),
    ("* 3 * * *", True, False, False),
    ("0 30 2 * * *", False, True, False),
    ("* 30 2 * * *", False, True, False),  # a seconds field of * alone is not wildcard
    ("0 * 2 * * *", True, True, False),
    ("0 0 * * * *", True, True, False),
    ("@reboot", False, False, True),
    ("@REBOOT", False, False, True),
]


@pytest.mark.parametrize("expr,wildcard,has_seconds,reboot", KINDS)
def test_job_kind(expr: str, wildcard: bool, has_seconds: bool, reboot: bool) -> None:
    sched = parse_schedule(expr, "UTC")
    assert (sched.wildcard, sched.has_seconds, sched.reboot) == (wildcard, has_seconds, reboot)


def test_reboot_has_no_times() -> None:
    sched = parse_schedule("@reboot", "Europe/Berlin")
    assert sched.next_after(START) is None
    assert sched.runs_after(START, 3) == []
    assert sched.dst_note(START) is None
    assert zone_name(sched.tz) == "Europe/Berlin"


def test_next_after_rejects_naive_datetime() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_schedule("0 0 * * *", "UTC").next_after(datetime(2026, 1, 1))


def test_runs_come_back_in_the_job_zone_whatever_zone_the_start_is_in() -> None:
    sched = parse_schedule("0 9 * * *", "Asia/Tokyo")
    run = sched.next_after(iso("2026-06-01T12:00:00-04:00"))  # 2026-06-02 01:00 in Tokyo
    assert run.tzinfo is sched.tz
    assert run.isoformat() == "2026-06-02T09:00:00+09:00"


def test_schedules_compare_by_expression_and_zone() -> None:
    assert parse_schedule("0 0 * * *", "UTC") == parse_schedule("0 0 * * *", "UTC")
    assert parse_schedule("0 0 * * *", "UTC") != parse_schedule("0 0 * * *", "Asia/Tokyo")


def test_schedule_built_by_hand_still_computes_runs() -> None:
    sched = Schedule("30 2 * * *", NY, reboot=False, wildcard=False, has_seconds=False)
    assert sched.next_after(iso("2026-03-08T01:00:00-05:00")) == iso("2026-03-08T03:00:00-04:00")
    with pytest.raises(ScheduleError, match="minute 61"):
        Schedule("61 * * * *", NY, reboot=False, wildcard=False, has_seconds=False)


def test_next_after_is_strict_and_sub_second_starts_round_up() -> None:
    sched = parse_schedule("*/20 * * * * *", "UTC")
    assert sched.next_after(iso("2026-01-01T00:00:20+00:00")) == iso("2026-01-01T00:00:40+00:00")
    assert sched.next_after(iso("2026-01-01T00:00:19.999+00:00")) == iso("2026-01-01T00:00:20+00:00")
    minute = parse_schedule("* * * * *", "UTC")
    assert minute.next_after(iso("2026-01-01T00:00:00.500+00:00")) == iso("2026-01-01T00:01:00+00:00")


# ---------------------------------------------------------------- croniter agrees where it follows cron

CRONITER_AGREES = [
    "0 0 13 * 5",
    "0 0 */2 * 1",
    "*/7 9-17 * * mon-fri",
    "5 4 * * sun",
    "0 12 1,15 * *",
    "0 0 1-7 * 1",
    "15 */3 * jan,jul *",
    "0 0 29 2 *",
    "30 8 10-20/3 */2 *",
    "0 0 * * 5#3",
    "0 0 L * *",
]


@pytest.mark.parametrize("expr", CRONITER_AGREES)
def test_croniter_with_implement_cron_bug_agrees(expr: str) -> None:
    croniter = pytest.importorskip("croniter").croniter
    it = croniter(expr, datetime(2026, 1, 1), implement_cron_bug=True)
    theirs = [it.get_next(datetime).replace(tzinfo=UTC) for _ in range(12)]
    assert parse_schedule(expr, "UTC").runs_after(START, 12) == theirs


# ---------------------------------------------------------------- croniter underneath

# koku's field order (seconds first) -> the position of that field in croniter.expand's answer
CRONITER_POS = {0: 5, 1: 0, 2: 1, 3: 2, 4: 3, 5: 4}
SECOND, MINUTE, HOUR, DOM, MONTH, DOW = range(6)


@pytest.fixture
def fresh_caches():
    """Empty koku's expansion caches before and after: a patched croniter must not leak into them."""
    cronmatch.matcher_for.cache_clear()
    cronexpr._expand_field.cache_clear()
    yield
    cronmatch.matcher_for.cache_clear()
    cronexpr._expand_field.cache_clear()


def record_expand(monkeypatch: pytest.MonkeyPatch, change=None) -> list[str]:
    """Wrap croniter.expand: record every expression koku asks it about, optionally alter its answer."""
    real = croniter.croniter.expand
    calls: list[str] = []

    def fake(cls, expr_format, *args, **kwargs):
        calls.append(expr_format)
        expanded, nth = real(expr_format, *args, **kwargs)
        if change is not None:
            change(expanded)
        return expanded, nth

    monkeypatch.setattr(croniter.croniter, "expand", classmethod(fake))
    return calls


def six_fields(expr: str) -> list[str]:
    fields = expr.split()
    return fields if len(fields) == 6 else ["0", *fields]


def croniter_call(field: int, text: str) -> str:
    """The expression koku asks croniter to expand one field in (the others hold plain fillers)."""
    fields = list(cronexpr._FILLER)
    fields[field] = text
    return " ".join(fields)


FOLLOWS = [
    # croniter's answer for one field is shifted by one; koku's runs must move with it.
    # expression, koku field, first run after START (UTC) as croniter really expands it, then shifted
    ("10 20 5 3 10 *", SECOND, "2026-10-03T05:20:10", "2026-10-03T05:20:11"),
    ("10 20 5 3 10 *", MINUTE, "2026-10-03T05:20:10", "2026-10-03T05:21:10"),
    ("10 20 5 3 10 *", HOUR, "2026-10-03T05:20:10", "2026-10-03T06:20:10"),
    ("10 20 5 3 10 *", DOM, "2026-10-03T05:20:10", "2026-10-04T05:20:10"),
    ("10 20 5 3 10 *", MONTH, "2026-10-03T05:20:10", "2026-11-03T05:20:10"),
    ("10 20 5 * * mon", DOW, "2026-01-05T05:20:10", "2026-01-06T05:20:10"),
]


@pytest.mark.parametrize("expr,field,real,shifted", FOLLOWS)
def test_runs_follow_croniters_expansion_of_every_field(
    monkeypatch: pytest.MonkeyPatch, fresh_caches, expr: str, field: int, real: str, shifted: str
) -> None:
    assert parse_schedule(expr, "UTC").next_after(START) == iso(real + "+00:00")
    cronmatch.matcher_for.cache_clear()
    cronexpr._expand_field.cache_clear()

    def shift(expanded) -> None:
        pos = CRONITER_POS[field]
        expanded[pos] = [v + 1 for v in expanded[pos]]

    calls = record_expand(monkeypatch, shift)
    assert parse_schedule(expr, "UTC").next_after(START) == iso(shifted + "+00:00")
    assert calls, "croniter.expand was not called"


def test_croniter_errors_become_schedule_errors(monkeypatch: pytest.MonkeyPatch, fresh_caches) -> None:
    def refuse(cls, expr_format, *args, **kwargs):
        raise croniter.CroniterBadCronError(f"[{expr_format}] is not acceptable")

    monkeypatch.setattr(croniter.croniter, "expand", classmethod(refuse))
    with pytest.raises(ScheduleError) as info:
        parse_schedule("7 4 * * *", "UTC")
    assert str(info.value).startswith('invalid cron expression "7 4 * * *": croniter cannot expand "')


def test_expansions_are_cached_per_field(monkeypatch: pytest.MonkeyPatch, fresh_caches) -> None:
    calls = record_expand(monkeypatch)
    for _ in range(1000):
        parse_schedule("30 2 * * 6", "UTC")
    assert len(calls) <= 6
    before = len(calls)
    # other spellings of the same day of week reuse the expansion of "6" (and of every other field)
    for expr in ("30 2 * * 6-6", "30 2 * * sat", "30 2 * * SAT-sat"):
        assert parse_schedule(expr, "UTC").next_after(START) == iso("2026-01-03T02:30:00+00:00")
    assert len(calls) == before
    # ten thousand distinct expressions share a few hundred field texts
    for i in range(10_000):
        parse_schedule(f"{i % 60} {i // 60 % 24} {1 + i // 1440 % 28} * *", "UTC")
    assert len(calls) - before < 200


def _raw_expansion(expr: str, field: int):
    """croniter's own answer for one field of ``expr`` as written, or the error it raises."""
    try:
        expanded, _nth = croniter.croniter.expand(" ".join(six_fields(expr)), second_at_beginning=True)
    except croniter.CroniterError as exc:
        return type(exc).__name__
    return expanded[CRONITER_POS[field]]


NORMALISED = [
    # expression, field, what koku hands croniter for that field, croniter's own reading of the
    # expression as written (wrong), koku's first runs after START (UTC, right)
    ("0 0 * * 6-6", DOW, "6", ["*"], ["01-03 00:00", "01-10 00:00", "01-17 00:00"]),
    ("0 0 * * sun-sun", DOW, "0", ["*"], ["01-04 00:00", "01-11 00:00", "01-18 00:00"]),
    ("0 0 * * 7-0", DOW, "0", ["*"], ["01-04 00:00", "01-11 00:00", "01-18 00:00"]),
    ("0 0 * * 7-7", DOW, "0", ["*"], ["01-04 00:00", "01-11 00:00", "01-18 00:00"]),
    ("0 0 1 12-12 *", MONTH, "12", ["*"], ["2026-12-01", "2027-12-01", "2028-12-01"]),
    ("0-0/5 12 * * *", MINUTE, "0", list(range(0, 60, 5)), ["01-01 12:00", "01-02 12:00", "01-03 12:00"]),
    ("50-10/7 0 * * *", MINUTE, "50-59/7,4-10/7", [5, 50, 57], ["01-01 00:04", "01-01 00:50", "01-01 00:57"]),
    ("0 0 * * 5-2/3", DOW, "5-6/3,1-2/3", [2, 5], ["01-02 00:00", "01-05 00:00", "01-09 00:00"]),
    # W: croniter keeps 15 and drops the W; koku keeps the item back (None: croniter is not asked).
    ("0 0 15W * *", DOM, None, [15], ["01-15 00:00", "02-16 00:00", "03-16 00:00"]),
    ("0 0 * * 5L", DOW, None, "CroniterNotAlphaError", ["01-30 00:00", "02-27 00:00", "03-27 00:00"]),
    ("0 0 * * 1,5#3", DOW, "1", "CroniterUnsupportedSyntaxError",
     ["01-05 00:00", "01-12 00:00", "01-16 00:00"]),
    # croniter expands this one to "Friday" plus a side table, which its own iterator cannot walk
    ("0 0 1 * 5#3", DOW, None, [5], ["01-16 00:00", "02-01 00:00", "02-20 00:00"]),
]


@pytest.mark.parametrize("expr,field,sent,raw,runs", NORMALISED, ids=[c[0] for c in NORMALISED])
def test_koku_normalises_what_croniter_reads_wrong(
    monkeypatch: pytest.MonkeyPatch, fresh_caches, expr: str, field: int, sent: str | None, raw, runs
) -> None:
    assert _raw_expansion(expr, field) == raw, "croniter changed: is this normalisation still needed?"
    calls = record_expand(monkeypatch)
    sched = parse_schedule(expr, "UTC")
    got = sched.runs_after(START, 3)
    assert got == [_expected(r) for r in runs]
    if sent is not None:
        assert croniter_call(field, sent) in calls
    written = six_fields(expr)[field]
    assert all(call.split()[field] != written for call in calls), "the field as written reached croniter"


REWRITTEN = [
    # shapes croniter may read right, rewritten anyway into the few it is trusted with
    ("0 22-2 * * *", HOUR, "22-23,0-2"),
    ("0 0 * * fri-mon", DOW, "5-6,0-1"),
    ("0 0 * * 5-7", DOW, "5-6,0"),
    ("0 0 * * 0-7", DOW, "0-6,0"),
    ("0 0 * * 7-3", DOW, "0-3"),
    ("0 0 * * 7", DOW, "0"),
    ("59/15 * * * *", MINUTE, "59"),
    ("10/20 * * * *", MINUTE, "10-59/20"),
    ("*/10 * * * *", MINUTE, "*/10"),
    ("0 0 1 nov-feb *", MONTH, "11-12,1-2"),
    ("0 0 * * MON-Wed", DOW, "1-3"),
    ("0 0 1,L * *", DOM, "1"),
    ("15,45 0 0 * * *", SECOND, "15,45"),
    ("0 0 * * *", SECOND, "0"),
]


@pytest.mark.parametrize("expr,field,sent", REWRITTEN, ids=[f"{e}-{f}" for e, f, _ in REWRITTEN])
def test_what_croniter_is_asked_to_expand(
    monkeypatch: pytest.MonkeyPatch, fresh_caches, expr: str, field: int, sent: str
) -> None:
    calls = record_expand(monkeypatch)
    parse_schedule(expr, "UTC")
    assert croniter_call(field, sent) in calls
    monkeypatch.undo()
    for call in calls:  # every shape koku hands croniter is one croniter accepts
        assert croniter.croniter.is_valid(call, second_at_beginning=True), call


VALIDITY = [
    # expression, croniter accepts it, koku accepts it; why koku decides as it does
    ("0 0 ? * *", True, False),  # Quartz's "no value": not cron, and croniter reads it as *
    ("R * * * *", True, False),  # croniter picks a random minute: not cron
    ("0 0 * * mon-wed#2", True, False),  # a range with #: croniter-only
    ("0 0 1 1 * 0 2026", True, False),  # croniter's seconds-last and year fields
    ("0 0 31 2 *", True, False),  # never fires: koku says so when the config is checked
    ("0 0 * * 5L", False, True),  # last Friday, as Quartz writes it
    ("0 0 * * 1,5#3", False, True),  # Mondays and the third Friday
    ("*/10 * * * * *", True, True),
    ("0 0 L * *", True, True),
]


@pytest.mark.parametrize("expr,croniter_ok,koku_ok", VALIDITY, ids=[v[0] for v in VALIDITY])
def test_where_croniter_and_koku_disagree_on_validity(expr: str, croniter_ok: bool, koku_ok: bool) -> None:
    seconds_first = len(expr.split()) == 6
    assert croniter.croniter.is_valid(expr, second_at_beginning=seconds_first) is croniter_ok
    try:
        parse_schedule(expr, "UTC")
    except ScheduleError:
        assert not koku_ok
    else:
        assert koku_ok


# ---------------------------------------------------------------- DST

# 2026 transitions (UTC instant of the change) and the expressions tried around each.
TRANSITIONS = {
    "America/New_York": ["2026-03-08T07:00:00", "2026-11-01T06:00:00"],
    "Europe/London": ["2026-03-29T01:00:00", "2026-10-25T01:00:00"],
    "Europe/Berlin": ["2026-03-29T01:00:00", "2026-10-25T01:00:00"],
    "Australia/Lord_Howe": ["2026-04-04T15:00:00", "2026-10-03T15:30:00"],
}
DST_EXPRESSIONS = [
    "30 2 * * *",
    "0 2 * * *",
    "15 2 * * *",
    "0,30 2 * * *",
    "0 1-3 * * *",
    "30 1 * * *",
    "45 1 * * *",
    "0 3 * * *",
    "*/30 * * * *",
    "*/15 * * * *",
    "0 * * * *",
    "* 2 * * *",
    "* 1 * * *",
    "*/20 1-2 * * *",
    "59 0-3 * * *",
]
# Starts on both sides of each change: well before, just before, at, inside and after it.
OFFSETS_MIN = [-1440, -150, -90, -61, -31, -1, 0, 1, 14, 29, 31, 45, 59, 61, 90, 150]


# Beyond the brief's four zones: a two-hour shift (gap and repeat 01:00-03:00), brute force only.
EXTRA_TRANSITIONS = {"Antarctica/Troll": ["2026-03-29T01:00:00", "2026-10-25T01:00:00"]}


def _transition_cases():
    for zone, changes in {**TRANSITIONS, **EXTRA_TRANSITIONS}.items():
        for change in changes:
            yield pytest.param(zone, change, id=f"{zone}-{change[:10]}")


def test_transition_table_is_right() -> None:
    for zone, changes in {**TRANSITIONS, **EXTRA_TRANSITIONS}.items():
        for change in changes:
            t = datetime.fromisoformat(change).replace(tzinfo=UTC)
            tz = ZoneInfo(zone)
            assert (t - timedelta(seconds=1)).astimezone(tz).utcoffset() != t.astimezone(tz).utcoffset()


@pytest.mark.parametrize("zone,change", list(_transition_cases()))
def test_dst_rules_match_brute_force_reference(zone: str, change: str) -> None:
    tz = ZoneInfo(zone)
    t = datetime.fromisoformat(change).replace(tzinfo=UTC)
    lo, hi = t - timedelta(days=1, hours=3), t + timedelta(days=1, hours=3)
    for expr in DST_EXPRESSIONS:
        expected = reference_runs(expr, tz, lo, hi)
        sched = parse_schedule(expr, tz)
        for minutes in OFFSETS_MIN:
            start = t + timedelta(minutes=minutes)
            want = [r for r in expected if r > start][:8]
            got = sched.runs_after(start, len(want))
            assert in_utc(got) == want, (expr, start.astimezone(tz).isoformat())


def _runs(expr: str, zone: str, start: str, n: int) -> list[str]:
    return [r.isoformat() for r in parse_schedule(expr, zone).runs_after(iso(start), n)]


DST_EXAMPLES = [
    # New York, spring: 02:00 EST -> 03:00 EDT on 2026-03-08
    ("30 2 * * *", "America/New_York", "2026-03-08T01:00:00-05:00",
     ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]),
    ("30 2 * * *", "America/New_York", "2026-03-08T03:00:00-04:00",
     ["2026-03-09T02:30:00-04:00"]),
    ("0,15,30,45 2 * * *", "America/New_York", "2026-03-08T01:59:00-05:00",
     ["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"]),
    ("0 2,3 * * *", "America/New_York", "2026-03-08T01:00:00-05:00",
     ["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"]),
    ("*/30 * * * *", "America/New_York", "2026-03-08T01:00:00-05:00",
     ["2026-03-08T01:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00"]),
    ("30 30 2 * * *", "America/New_York", "2026-03-08T01:59:59-05:00",
     ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:30-04:00"]),
    ("30 2 * * * *", "America/New_York", "2026-03-08T01:59:59-05:00",  # wildcard: hour is *
     ["2026-03-08T03:02:30-04:00", "2026-03-08T04:02:30-04:00"]),
    # New York, autumn: 02:00 EDT -> 01:00 EST on 2026-11-01
    ("*/30 * * * *", "America/New_York", "2026-11-01T00:15:00-04:00",
     ["2026-11-01T00:30:00-04:00", "2026-11-01T01:00:00-04:00", "2026-11-01T01:30:00-04:00",
      "2026-11-01T01:00:00-05:00", "2026-11-01T01:30:00-05:00", "2026-11-01T02:00:00-05:00"]),
    ("*/30 * * * *", "America/New_York", "2026-11-01T01:45:00-04:00",
     ["2026-11-01T01:00:00-05:00", "2026-11-01T01:30:00-05:00"]),
    ("30 1 * * *", "America/New_York", "2026-11-01T00:00:00-04:00",
     ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]),
    ("30 1 * * *", "America/New_York", "2026-11-01T01:15:00-05:00",
     ["2026-11-02T01:30:00-05:00"]),
    ("0 1-3 * * *", "America/New_York", "2026-11-01T00:30:00-04:00",
     ["2026-11-01T01:00:00-04:00", "2026-11-01T02:00:00-05:00", "2026-11-01T03:00:00-05:00"]),
    ("*/20 30 1 * * *", "America/New_York", "2026-11-01T01:30:30-04:00",
     ["2026-11-01T01:30:40-04:00", "2026-11-02T01:30:00-05:00"]),
    # Berlin: 02:00 CET -> 03:00 CEST on 03-29, 03:00 CEST -> 02:00 CET on 10-25
    ("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00+01:00",
     ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]),
    ("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00+02:00",
     ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]),
    # London: 01:00 GMT -> 02:00 BST on 03-29, 02:00 BST -> 01:00 GMT on 10-25
    ("30 1 * * *", "Europe/London", "2026-03-28T12:00:00+00:00",
     ["2026-03-29T02:00:00+01:00", "2026-03-30T01:30:00+01:00"]),
    ("0 * * * *", "Europe/London", "2026-10-25T00:30:00+01:00",
     ["2026-10-25T01:00:00+01:00", "2026-10-25T01:00:00+00:00", "2026-10-25T02:00:00+00:00"]),
    # Lord Howe shifts by 30 minutes: 02:00 -> 02:30 on 10-04, 02:00 -> 01:30 on 04-05
    ("15 2 * * *", "Australia/Lord_Howe", "2026-10-03T12:00:00+10:30",
     ["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"]),
    ("*/15 * * * *", "Australia/Lord_Howe", "2026-10-04T01:50:00+10:30",
     ["2026-10-04T02:30:00+11:00", "2026-10-04T02:45:00+11:00"]),
    ("45 1 * * *", "Australia/Lord_Howe", "2026-04-04T12:00:00+11:00",
     ["2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"]),
    ("*/15 * * * *", "Australia/Lord_Howe", "2026-04-05T01:20:00+11:00",
     ["2026-04-05T01:30:00+11:00", "2026-04-05T01:45:00+11:00", "2026-04-05T01:30:00+10:30",
      "2026-04-05T01:45:00+10:30", "2026-04-05T02:00:00+10:30"]),
]


@pytest.mark.parametrize("expr,zone,start,runs", DST_EXAMPLES)
def test_dst_examples(expr: str, zone: str, start: str, runs: list[str]) -> None:
    assert _runs(expr, zone, start, len(runs)) == runs


def test_second_pass_runs_carry_fold_and_later_offset() -> None:
    run = parse_schedule("*/30 * * * *", NY).next_after(iso("2026-11-01T01:45:00-04:00"))
    assert run.fold == 1 and run.utcoffset() == timedelta(hours=-5)
    assert run.astimezone(UTC) == iso("2026-11-01T06:00:00+00:00")


NOTES = [
    ("30 2 * * *", "America/New_York", "2026-03-08T03:00:00-04:00",
     "02:30 does not exist on 2026-03-08 (DST gap); runs at 03:00"),
    ("0,30 2 * * *", "America/New_York", "2026-03-08T03:00:00-04:00",
     "02:00 and 02:30 do not exist on 2026-03-08 (DST gap); runs once at 03:00"),
    ("*/10 * * * *", "Europe/Berlin", "2026-03-29T03:00:00+02:00",
     None),  # wildcard: nothing moved, the gap runs are simply not made up
    ("0 2 * * *", "Europe/Berlin", "2026-03-29T03:00:00+02:00",
     "02:00 does not exist on 2026-03-29 (DST gap); runs at 03:00"),
    ("0 */15 * * * *", "Australia/Lord_Howe", "2026-10-04T02:30:00+11:00", None),
    ("*/20 0 2 * * *", "Australia/Lord_Howe", "2026-10-04T02:30:00+11:00",
     "02:00:00, 02:00:20 and 02:00:40 do not exist on 2026-10-04 (DST gap); runs once at 02:30:00"),
    ("*/15 0-10 2 * * *", "Australia/Lord_Howe", "2026-10-04T02:30:00+11:00",
     "02:00:00 to 02:10:45 (44 times) do not exist on 2026-10-04 (DST gap); runs once at 02:30:00"),
    ("30 1 * * *", "America/New_York", "2026-11-01T01:30:00-04:00",
     "01:30 occurs twice on 2026-11-01; runs at the first only"),
    ("*/30 * * * *", "America/New_York", "2026-11-01T01:30:00-04:00",
     "01:30 occurs twice on 2026-11-01; runs in both passes"),
    ("*/30 * * * *", "America/New_York", "2026-11-01T01:30:00-05:00",
     "01:30 occurs twice on 2026-11-01; runs in both passes"),
    ("45 1 * * *", "Australia/Lord_Howe", "2026-04-05T01:45:00+11:00",
     "01:45 occurs twice on 2026-04-05; runs at the first only"),
    ("30 2 * * *", "America/New_York", "2026-03-09T02:30:00-04:00", None),
    ("0 3 * * *", "America/New_York", "2026-03-08T03:00:00-04:00", None),  # 03:00 is a real time
    ("30 2 * * *", "UTC", "2026-03-08T02:30:00+00:00", None),
]


@pytest.mark.parametrize("expr,zone,run,note", NOTES)
def test_dst_note(expr: str, zone: str, run: str, note: str | None) -> None:
    sched = parse_schedule(expr, zone)
    assert iso(run) in in_utc(sched.runs_after(iso(run) - timedelta(hours=3), 30))  # a run koku computes
    assert sched.dst_note(iso(run)) == note


# ---------------------------------------------------------------- properties

def _field(lo: int, hi: int) -> st.SearchStrategy[str]:
    value = st.integers(lo, hi)
    item = st.one_of(
        st.just("*"),
        value.map(str),
        st.tuples(value, value).map(lambda t: f"{min(t)}-{max(t)}"),
        st.integers(1, hi - lo + 1).map(lambda s: f"*/{s}"),
        st.tuples(value, value, st.integers(1, 10)).map(lambda t: f"{min(t[:2])}-{max(t[:2])}/{t[2]}"),
        # as drawn: about half wrap round the field's end (22-2, 50-10/7), where croniter goes wrong
        st.tuples(value, value, st.integers(1, 10)).map(lambda t: f"{t[0]}-{t[1]}/{t[2]}"),
        st.tuples(value, value).map(lambda t: f"{t[0]}-{t[1]}"),
        st.tuples(value, st.integers(1, 20)).map(lambda t: f"{t[0]}/{t[1]}"),
    )
    return st.lists(item, min_size=1, max_size=3).map(",".join)


@st.composite
def expressions(draw) -> str:
    bounds = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
    fields = [draw(_field(lo, hi)) for lo, hi in bounds]
    if draw(st.booleans()):
        fields.insert(0, draw(_field(0, 59)))
    return " ".join(fields)


def _parse_or_skip(expr: str, zone: str) -> Schedule:
    try:
        return parse_schedule(expr, zone)
    except ScheduleError as exc:
        assert "can never fire" in str(exc)
        # 2001-2028 holds every month shape (length, weekday of the 1st) there is.
        day = datetime(2001, 1, 1)
        fields = expr.split()
        dom_only = " ".join(["0", "0", *fields[-3:]])
        while day.year < 2029:
            assert not cron_matches(dom_only, day), f"{expr} fires on {day:%Y-%m-%d}"
            day += timedelta(days=1)
        assume(False)
        raise


def _check_runs(expr: str, sched: Schedule, start: datetime, runs: list[datetime], tz: ZoneInfo) -> None:
    assert runs, expr
    assert runs[0] > start
    assert all(a < b for a, b in zip(runs, runs[1:]))
    for run in runs:
        assert run.tzinfo is sched.tz
        assert cron_matches(expr, run.astimezone(tz).replace(tzinfo=None)), (expr, run.isoformat())
    # nothing skipped: no matching wall time between the start and the first run (checked when close)
    unit = timedelta(seconds=1) if sched.has_seconds else timedelta(minutes=1)
    if runs[0] - start <= 400 * unit:
        t = start.astimezone(tz).replace(tzinfo=None)
        t = t.replace(microsecond=0) if sched.has_seconds else t.replace(second=0, microsecond=0)
        t += unit
        end = runs[0].astimezone(tz).replace(tzinfo=None)
        while t < end:
            assert not cron_matches(expr, t), (expr, t.isoformat())
            t += unit


PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.slow  # hypothesis, ~10 s: the fast lane skips it
@PROPERTY_SETTINGS
@given(
    expr=expressions(),
    zone=st.sampled_from(["UTC", "Asia/Tokyo"]),
    start=st.datetimes(datetime(2000, 1, 1), datetime(2090, 1, 1), timezones=st.just(UTC)),
)
def test_property_runs_match_and_increase_without_dst(expr: str, zone: str, start: datetime) -> None:
    sched = _parse_or_skip(expr, zone)
    runs = sched.runs_after(start, 6)
    _check_runs(expr, sched, start, runs, ZoneInfo(zone))


# Between the April and the late-September changes of all four zones there is no transition.
QUIET = (datetime(2026, 4, 10), datetime(2026, 9, 20))


@pytest.mark.slow  # hypothesis, ~10 s: the fast lane skips it
@PROPERTY_SETTINGS
@given(
    expr=expressions(),
    zone=st.sampled_from(list(TRANSITIONS)),
    start=st.datetimes(*QUIET),
)
def test_property_runs_match_in_dst_zones_away_from_transitions(
    expr: str, zone: str, start: datetime
) -> None:
    tz = ZoneInfo(zone)
    sched = _parse_or_skip(expr, zone)
    begin = start.replace(tzinfo=tz)
    end = datetime(2026, 9, 30, tzinfo=tz)
    runs = [r for r in sched.runs_after(begin, 6) if r < end]
    assume(runs)
    _check_runs(expr, sched, begin, runs, tz)


@pytest.mark.slow  # hypothesis, ~10 s: the fast lane skips it
@settings(max_examples=60, deadline=None)
@given(expr=expressions().filter(lambda e: len(e.split()) == 5), zone=st.sampled_from(list(TRANSITIONS)))
def test_property_dst_days_match_brute_force(expr: str, zone: str) -> None:
    tz = ZoneInfo(zone)
    sched = _parse_or_skip(expr, zone)
    for change in TRANSITIONS[zone]:
        t = datetime.fromisoformat(change).replace(tzinfo=UTC)
        start, hi = t - timedelta(hours=4), t + timedelta(hours=4)
        expected = reference_runs(expr, tz, start + timedelta(minutes=1), hi)
        got = [r for r in in_utc(sched.runs_after(start, len(expected) + 1)) if r < hi]
        assert got == expected


# ---------------------------------------------------------------- zones


def test_resolve_zone_names_and_unknown() -> None:
    assert resolve_zone("America/New_York") is NY
    assert zone_name(resolve_zone("Europe/Berlin")) == "Europe/Berlin"
    for bad in ("Mars/Base", "", "America", "../etc/passwd", "UTC "):
        with pytest.raises(ScheduleError) as info:
            resolve_zone(bad)
        assert str(info.value) == f'unknown time zone "{bad}"'
    with pytest.raises(ScheduleError, match='unknown time zone "Mars/Base"'):
        parse_schedule("0 0 * * *", "Mars/Base")


@pytest.mark.parametrize(
    "tz_env,name",
    [("Asia/Tokyo", "Asia/Tokyo"), (":Europe/Berlin", "Europe/Berlin"), ("", "UTC")],
)
def test_local_zone_from_tz_variable(monkeypatch: pytest.MonkeyPatch, tz_env: str, name: str) -> None:
    monkeypatch.setenv("TZ", tz_env)
    assert zone_name(resolve_zone(None)) == name
    assert zone_name(parse_schedule("0 0 * * *").tz) == name


def test_local_zone_from_tz_variable_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", _zone_file("Asia/Tokyo"))
    assert zone_name(resolve_zone(None)) == "Asia/Tokyo"


def test_unknown_tz_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Nowhere/Special")
    with pytest.raises(ScheduleError) as info:
        resolve_zone(None)
    assert str(info.value) == 'unknown time zone "Nowhere/Special" (from $TZ)'


def _zone_file(key: str) -> str:
    from zoneinfo import TZPATH

    for root in TZPATH:
        candidate = os.path.join(root, key)
        if os.path.isfile(candidate):
            return candidate
    import tzdata  # the pip package; its files live under .../tzdata/zoneinfo/

    return os.path.join(os.path.dirname(tzdata.__file__), "zoneinfo", *key.split("/"))


def test_local_zone_from_localtime_link_file_or_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("TZ", raising=False)
    link = tmp_path / "localtime"
    os.symlink(_zone_file("Europe/Berlin"), link)
    monkeypatch.setattr(schedule_mod, "_LOCALTIME", str(link))
    assert zone_name(resolve_zone(None)) == "Europe/Berlin"
    assert resolve_zone("local") is resolve_zone(None)

    copy = tmp_path / "copied"
    shutil.copyfile(_zone_file("America/New_York"), copy)
    monkeypatch.setattr(schedule_mod, "_LOCALTIME", str(copy))
    local = resolve_zone(None)
    assert zone_name(local) == "local"
    assert datetime(2026, 7, 1, tzinfo=local).utcoffset() == timedelta(hours=-4)
    sched = parse_schedule("30 2 * * *", None)
    assert sched.next_after(iso("2026-03-08T01:00:00-05:00")) == iso("2026-03-08T03:00:00-04:00")

    monkeypatch.setattr(schedule_mod, "_LOCALTIME", str(tmp_path / "missing"))
    assert zone_name(resolve_zone(None)) == "UTC"


def test_zone_name_of_other_tzinfos() -> None:
    assert zone_name(UTC) == "UTC"
    assert zone_name(ZoneInfo("UTC")) == "UTC"


# ---------------------------------------------------------------- speed


def test_ten_thousand_jobs_parse_and_preview_quickly() -> None:
    zones = ["America/New_York", "Europe/Berlin", "UTC", "Australia/Lord_Howe", "Asia/Tokyo"]
    exprs = [
        f"{i % 60} {i % 24} * * {i % 7}" if i % 3 == 0 else
        f"*/{1 + i % 30} {i % 24}-23 * * *" if i % 3 == 1 else
        f"{i % 60} {i % 24} {1 + i % 28} {1 + i % 12},{1 + (i + 5) % 12} *"
        for i in range(10_000)
    ]
    start = iso("2026-03-07T12:00:00+00:00")
    began = time.process_time()
    for i, expr in enumerate(exprs):
        sched = parse_schedule(expr, zones[i % 5])
        for run in sched.runs_after(start, 3):
            sched.dst_note(run)
    assert time.process_time() - began < 3.0
