"""Cron expressions -> run instants, with cronie's rules applied in each job's own time zone. Pure.

Syntax accepted:
  * 5 fields ``minute hour day-of-month month day-of-week``, or 6 with **seconds first**
    (``*/10 * * * * *``, as supercronic and croner read it).
  * ``@yearly @annually @monthly @weekly @daily @midnight @hourly``; ``@reboot`` (once at daemon start).
  * Lists, ranges, steps (``1,15``, ``9-17``, ``*/5``, ``10-50/20``, ``10/20`` = ``10-max/20``); month and
    day names (``jan``, ``mon-fri``); ranges that wrap (``fri-sun``, ``5-0``, ``22-2`` for hours); Sunday
    is 0 or 7. ``6-6`` means 6 and ``0-0/5`` means 0.
  * Extensions from croniter/Quartz: day of month ``L`` (last day) and ``15W`` (weekday nearest the 15th,
    staying inside the month; a day past the month's end means its last day); day of week ``5#3``
    (third Friday) and ``5L`` / ``L5`` (last Friday).

Semantics (cronie's crond, on the job's own wall clock):
  * Days: if day-of-month or day-of-week *starts with* ``*`` both must match, otherwise either may
    (``0 0 13 * 5`` = the 13th and every Friday; ``0 0 */2 * 1`` = odd days that are Mondays).
  * A job is *wildcard* when its minute or hour field starts with ``*`` (``@hourly`` too); else it is
    *fixed-time*. With 6 fields only the minute and hour fields decide, as cronie would if it had seconds:
    ``*/10 30 2 * * *`` (every 10 s during 02:30) is fixed-time.
  * Spring forward: fixed-time runs whose wall time is skipped run once at the first instant after the
    gap (several skipped slots make one run); wildcard runs in the gap are dropped.
  * Fall back: fixed-time runs in the repeated period run once, in the first pass; wildcard runs happen
    at every real instant whose wall time matches, in both passes.
  * An expression that matches no date at all (``0 0 30 2 *``) is rejected when parsed.

Syntax beyond cronie: wrapping ranges (cronie rejects ``5-0``), ``a/step`` (read as croniter does,
``a`` to the field's end, Saturday for day of week), seconds, nicknames other than cronie's, L/W/#.

croniter underneath, koku on top (details in koku.core.cronexpr): koku splits the fields, validates them
and normalises what croniter 7.0 reads differently from cron (one-value ranges, wrapping ranges,
Sunday as 7); ``croniter.expand`` expands every field into the value sets that are used; koku reads
the day extensions croniter mangles (W, nL/Ln, #), applies cronie's day rule, walks naive wall times
(``cronexpr.Matcher``) and, here, maps wall times to instants by the DST rules above. croniter's own
iterator is not used: at ~85 us per ``get_next``, three runs for 10,000 jobs would take most of the
3 s ``ku check`` may spend, and croniter 7.0 runs fixed-time jobs in both passes of a repeated hour
and makes up gap runs of wildcard jobs. The tests check that its iterator, with
``implement_cron_bug=True``, agrees wherever it follows cron.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import date, datetime, timezone, tzinfo
from zoneinfo import ZoneInfo

from koku.core.cronexpr import SEARCH_YEARS, split_fields
from koku.core.cronmatch import Matcher, matcher_for
from koku.errors import ScheduleError

__all__ = ["ScheduleError", "Schedule", "parse_schedule", "resolve_zone", "zone_name"]

_UTC = timezone.utc


# --------------------------------------------------------------------------- zones

_LOCALTIME = "/etc/localtime"
_local_file_cache: dict[tuple, tzinfo] = {}
# ZoneInfo raises KeyError (not found), ValueError (malformed key) or OSError (a directory, too long).
_ZONE_ERRORS = (KeyError, ValueError, OSError)


def _zone_from_path(path: str) -> tzinfo:
    """The zone a tz file stands for: its key when the path or its link target lies under a
    ``zoneinfo`` directory (the usual /etc/localtime link), else the file itself. Raises OSError."""
    try:
        target = os.path.join(os.path.dirname(path), os.readlink(path))
    except OSError:  # not a link (or missing: os.stat below says so)
        target = path
    if "/zoneinfo/" in target:
        try:
            return ZoneInfo(target.rsplit("/zoneinfo/", 1)[1])
        except _ZONE_ERRORS:
            pass  # a name zoneinfo does not know: read the file itself
    st = os.stat(path)
    cache_key = (path, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    zone = _local_file_cache.get(cache_key)
    if zone is None:
        with open(path, "rb") as f:
            zone = ZoneInfo.from_file(f)  # key None: zone_name() shows it as "local"
        _local_file_cache[cache_key] = zone
    return zone


def _local_zone() -> tzinfo:
    tz_env = os.environ.get("TZ")
    if tz_env is not None:
        name = tz_env[1:] if tz_env.startswith(":") else tz_env
        if not name:
            return resolve_zone("UTC")  # glibc: TZ set but empty means UTC
        if name.startswith("/"):
            try:
                return _zone_from_path(name)
            except _ZONE_ERRORS:
                raise ScheduleError(f'unknown time zone "{tz_env}" (from $TZ)') from None
        try:
            return ZoneInfo(name)
        except _ZONE_ERRORS:
            raise ScheduleError(f'unknown time zone "{tz_env}" (from $TZ)') from None
    try:
        return _zone_from_path(_LOCALTIME)
    except _ZONE_ERRORS:
        try:
            return ZoneInfo("UTC")
        except _ZONE_ERRORS:  # no tz database at all
            return _UTC


def resolve_zone(name: str | None) -> tzinfo:
    """The zone for a job's ``tz``. ``None`` or ``"local"``: the machine's zone ($TZ, then the
    /etc/localtime link target or file, then UTC). Raises ScheduleError for an unknown name."""
    if name is None or name == "local":
        return _local_zone()
    try:
        return ZoneInfo(name)
    except _ZONE_ERRORS:
        raise ScheduleError(f'unknown time zone "{name}"') from None


def zone_name(tz: tzinfo) -> str:
    """``"America/New_York"``; ``"local"`` for a zone read from a file with no name; ``"UTC"``."""
    key = getattr(tz, "key", None)
    if isinstance(key, str):
        return key
    if tz is _UTC:
        return "UTC"
    if isinstance(tz, ZoneInfo):
        return "local"
    return str(tz)


# --------------------------------------------------------------------------- instants
# Instants are POSIX seconds here: datetime arithmetic and replace() dominate the cost otherwise.

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _wall_seconds(w: datetime) -> int:
    """``w``'s wall fields as if they were UTC, in POSIX seconds."""
    return (w.toordinal() - _EPOCH_ORDINAL) * 86400 + w.hour * 3600 + w.minute * 60 + w.second


def _wall_at(ts: float, offset: float) -> datetime:
    return datetime.fromtimestamp(ts + offset, _UTC).replace(tzinfo=None)


def _fold1(w: datetime) -> datetime:
    return datetime(w.year, w.month, w.day, w.hour, w.minute, w.second, w.microsecond, fold=1)


def _other_reading(tz: tzinfo, local: datetime) -> float:
    """The UTC offset of ``local``'s wall time read with the other fold: differs only in a repeat."""
    w = local
    return _offset(tz, datetime(w.year, w.month, w.day, w.hour, w.minute, w.second, fold=1 - w.fold))


def _offset(tz: tzinfo, w: datetime) -> float:
    off = tz.utcoffset(w)
    return off.total_seconds() if off is not None else 0.0


def _offset_at(tz: tzinfo, ts: float) -> float:
    return _offset(tz, datetime.fromtimestamp(ts, tz))


def _transition(tz: tzinfo, before: float, after: float) -> int:
    """The first whole second with ``after``'s UTC offset; exactly one change lies in between."""
    a, b = math.floor(before), math.ceil(after)
    off = _offset_at(tz, a)
    while b - a > 1:
        mid = (a + b) // 2
        if _offset_at(tz, mid) == off:
            a = mid
        else:
            b = mid
    return b


@dataclass(frozen=True, slots=True)
class Schedule:
    """A parsed cron expression in a zone. Build it with ``parse_schedule``."""

    expr: str
    tz: tzinfo
    reboot: bool
    wildcard: bool
    has_seconds: bool
    _matcher: Matcher | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._matcher is None and not self.reboot:  # built by hand rather than by parse_schedule
            object.__setattr__(self, "_matcher", parse_schedule(self.expr, self.tz)._matcher)

    def next_after(self, instant: datetime) -> datetime | None:
        """The first run strictly after aware ``instant``, as an aware datetime in ``self.tz``.
        ``None`` for @reboot. Raises ValueError for a naive ``instant``."""
        m = self._matcher
        if m is None:
            return None
        if instant.utcoffset() is None:
            raise ValueError(f"next_after needs an aware datetime, got {instant!r}")
        tz = self.tz
        s = instant.timestamp()
        local = instant.astimezone(tz)
        off = _offset(tz, local)
        other = _other_reading(tz, local)
        best: float | None = None
        w: datetime | None = None
        if other != off:  # s is inside a repeated hour
            if local.fold == 0 and self.wildcard:
                # Walls of the repeat that passed once before s come round again after it.
                change = _transition(tz, s, _wall_seconds(local) - other)
                w2 = m.at_or_after(_wall_at(change, other))
                if w2 < _wall_at(change, off):
                    best = _wall_seconds(w2) - other
            elif local.fold == 1 and not self.wildcard:
                # Second pass: a fixed-time job ran these walls in the first; skip to the repeat's end.
                change = _transition(tz, _wall_seconds(local) - other, s)
                w = m.at_or_after(_wall_at(change, other))
        if w is None:
            w = m.after(local)
        limit = w.year + SEARCH_YEARS
        while w.year <= limit:
            off0 = _offset(tz, w)
            off1 = _offset(tz, _fold1(w))
            first = _wall_seconds(w) - off0
            if off0 == off1:
                if first > s:
                    return self._result(first, best)
            elif off0 < off1:  # w falls in a gap: the clock jumps over it
                change = _transition(tz, _wall_seconds(w) - off1, first)
                if not self.wildcard and change > s:
                    return self._result(change, best)
                w = m.at_or_after(_wall_at(change, off1))
                continue
            else:  # w is repeated: first at off0, again at off1
                if first > s:
                    return self._result(first, best)
                second = _wall_seconds(w) - off1
                if self.wildcard and second > s:
                    return self._result(second, best)
            w = m.after(w)
        raise ScheduleError(f'cron expression "{self.expr}" never fires in {zone_name(tz)}')

    def _result(self, run: float, best: float | None) -> datetime:
        if best is not None and best < run:
            run = best
        return datetime.fromtimestamp(run, _UTC).astimezone(self.tz)

    def runs_after(self, instant: datetime, n: int) -> list[datetime]:
        """The next ``n`` runs after ``instant`` (empty for @reboot)."""
        runs: list[datetime] = []
        at: datetime | None = instant
        while len(runs) < n:
            at = self.next_after(at)
            if at is None:
                break
            runs.append(at)
        return runs

    def dst_note(self, run: datetime) -> str | None:
        """A sentence if ``run`` (a computed run) was moved out of a DST gap or falls in a repeated
        hour, else None."""
        m = self._matcher
        if m is None:
            return None
        tz = self.tz
        ts = run.timestamp()
        local = run.astimezone(tz)
        off = _offset(tz, local)
        fmt = "%H:%M:%S" if self.has_seconds else "%H:%M"
        before = _offset_at(tz, ts - 1)
        if not self.wildcard and before < off:
            # run is the first instant after a gap: say which skipped walls it stands for
            gap_start, wall = _wall_at(ts, before), _wall_at(ts, off)
            skipped: list[str] = []
            w = m.at_or_after(gap_start)
            while w < wall:
                skipped.append(w.strftime(fmt))
                w = m.after(w)
            if skipped:
                day, at = gap_start.date().isoformat(), wall.strftime(fmt)
                if len(skipped) == 1:
                    return f"{skipped[0]} does not exist on {day} (DST gap); runs at {at}"
                if len(skipped) <= 3:
                    listed = ", ".join(skipped[:-1]) + f" and {skipped[-1]}"
                else:
                    listed = f"{skipped[0]} to {skipped[-1]} ({len(skipped)} times)"
                return f"{listed} do not exist on {day} (DST gap); runs once at {at}"
        if _other_reading(tz, local) != off:
            how = "runs in both passes" if self.wildcard else "runs at the first only"
            return f"{local.strftime(fmt)} occurs twice on {local.date().isoformat()}; {how}"
        return None


_ANCHOR = datetime(2024, 1, 1, tzinfo=_UTC)


def parse_schedule(expr: str, tz: str | tzinfo | None = None) -> Schedule:
    """Parse ``expr`` for zone ``tz`` (a name, a tzinfo, or None for the machine's zone).
    Raises ScheduleError naming the expression and the problem."""
    zone = tz if isinstance(tz, tzinfo) else resolve_zone(tz)
    if not isinstance(expr, str):
        raise ScheduleError(f"cron expression must be a string, got {expr!r}")
    if expr.strip().lower() == "@reboot":
        return Schedule(expr, zone, reboot=True, wildcard=False, has_seconds=False)
    if not expr.strip():
        raise ScheduleError(f'invalid cron expression "{expr}": it is empty')
    try:
        fields, has_seconds, wildcard = split_fields(expr)
        matcher = matcher_for(tuple(fields), has_seconds)
    except ValueError as exc:
        raise ScheduleError(f'invalid cron expression "{expr}": {exc}') from None
    if not matcher.can_fire():
        raise ScheduleError(f'cron expression "{expr}" can never fire')
    schedule = Schedule(expr, zone, False, wildcard, has_seconds, matcher)
    # Every matching wall time may lie in a DST gap (a wildcard job at 02:xx on the day clocks go
    # forward); only then is a full search needed to prove the job ever runs.
    first = matcher.after(_ANCHOR)
    if wildcard and _offset(zone, first) != _offset(zone, _fold1(first)):
        schedule.next_after(_ANCHOR)
    return schedule
