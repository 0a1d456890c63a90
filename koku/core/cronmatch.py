"""The walk over wall times: which naive local times a normalised cron expression matches. Pure.

``koku.core.cronexpr`` parses, validates and normalises the fields (croniter expands them); this module
takes its six normalised fields and finds the next matching wall time in a few microseconds, where
``croniter.get_next`` costs ~85 us. ``koku.core.schedule`` then maps wall times to instants by the DST rules.
"""

from __future__ import annotations

from bisect import bisect_left
from datetime import date, datetime
from functools import lru_cache

from koku.core.cronexpr import _EVERY_DAY, SEARCH_YEARS, _expand_field, _star_rule, normalise

__all__ = ["Matcher", "matcher_for"]

_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_ALL_DAYS = {n: tuple(range(1, n + 1)) for n in (28, 29, 30, 31)}
_shapes: dict[tuple[int, int], tuple[int, int]] = {}


def _month_shape(year: int, month: int) -> tuple[int, int]:
    """(number of days, cron weekday of the 1st) of a month."""
    shape = _shapes.get((year, month))
    if shape is None:
        ndays = _MONTH_DAYS[month - 1]
        if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
            ndays = 29
        if len(_shapes) > 10_000:
            _shapes.clear()
        shape = _shapes[(year, month)] = (ndays, (date(year, month, 1).weekday() + 1) % 7)
    return shape


class Matcher:
    """Finds matching naive wall times. Caches day lists per month shape (length, weekday of the 1st):
    at most 28 entries, since nothing else about a month changes which of its days match."""

    __slots__ = ("seconds", "minutes", "hours", "months", "days", "has_seconds", "_first", "_cache")

    def __init__(self, fields: list[str], has_seconds: bool):
        """``fields``: six, seconds first (see ``split_fields``). Raises ValueError."""
        normalised, ext = normalise(fields)
        seconds, minutes, hours, dom, months, dow = (
            () if text is None else _expand_field(i, text) for i, text in enumerate(normalised)
        )
        self.seconds, self.minutes, self.hours, self.months = seconds, minutes, hours, months
        self.days = _star_rule(fields[3], fields[5], ext, dom, dow)
        self.has_seconds = has_seconds
        self._first = (hours[0], minutes[0], seconds[0])
        self._cache: dict[tuple[int, int], tuple[int, ...]] = {}

    def month_days(self, ndays: int, wd1: int) -> tuple[int, ...]:
        if self.days is _EVERY_DAY:
            return _ALL_DAYS[ndays]
        days = self._cache.get((ndays, wd1))
        if days is None:
            days = self._cache[(ndays, wd1)] = self.days.in_month(ndays, wd1)
        return days

    def can_fire(self) -> bool:
        # Over one 400-year cycle every month (and a leap February) starts on every weekday, so this
        # is exact: the expression fires on some date iff it does in one of these month shapes.
        for month in self.months:
            for ndays in (28, 29) if month == 2 else (_MONTH_DAYS[month - 1],):
                if any(self.month_days(ndays, wd1) for wd1 in range(7)):
                    return True
        return False

    def after(self, t: datetime) -> datetime:
        """First matching wall time strictly after naive (or aware, read as wall) ``t``."""
        if self.has_seconds:
            return self._search(t.year, t.month, t.day, t.hour, t.minute, t.second + 1)
        return self._search(t.year, t.month, t.day, t.hour, t.minute + 1, 0)

    def at_or_after(self, t: datetime) -> datetime:
        """First matching wall time at or after naive ``t``."""
        if self.has_seconds:
            return self._search(t.year, t.month, t.day, t.hour, t.minute, t.second + (t.microsecond > 0))
        return self._search(t.year, t.month, t.day, t.hour, t.minute + (t.second + t.microsecond > 0), 0)

    def _time_of_day(self, h: int, mi: int, s: int) -> tuple[int, int, int] | None:
        """First matching (hour, minute, second) at or after h:mi:s the same day (mi, s may be 60)."""
        hours, minutes, seconds = self.hours, self.minutes, self.seconds
        i = bisect_left(hours, h)
        if i < len(hours) and hours[i] == h:
            j = bisect_left(minutes, mi)
            if j < len(minutes) and minutes[j] == mi:
                k = bisect_left(seconds, s)
                if k < len(seconds):
                    return h, mi, seconds[k]
                j += 1
            if j < len(minutes):
                return h, minutes[j], seconds[0]
            i += 1
        if i < len(hours):
            return hours[i], minutes[0], seconds[0]
        return None

    def _search(self, y: int, mo: int, d: int, h: int, mi: int, s: int) -> datetime:
        tod = self._time_of_day(h, mi, s)
        if tod is None:
            d, tod = d + 1, self._first
        months = self.months
        for _ in range(13 * SEARCH_YEARS):
            i = bisect_left(months, mo)
            if i == len(months):
                y, mo, d, tod = y + 1, months[0], 1, self._first
                continue
            if months[i] != mo:
                mo, d, tod = months[i], 1, self._first
            days = self.month_days(*_month_shape(y, mo))
            i = bisect_left(days, d)
            if i == len(days):
                mo, d, tod = mo + 1, 1, self._first
                continue
            if days[i] != d:
                tod = self._first
            return datetime(y, mo, days[i], *tod)
        raise ValueError("cron expression never fires")  # unreachable once can_fire() passed


@lru_cache(maxsize=4096)
def matcher_for(fields: tuple[str, ...], has_seconds: bool) -> Matcher:
    """A shared Matcher for six fields (seconds first): large configs repeat expressions, and a
    matcher never changes once built. Raises ValueError."""
    return Matcher(list(fields), has_seconds)
