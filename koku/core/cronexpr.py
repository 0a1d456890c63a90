"""Cron expression -> the naive wall times it matches. Pure: stdlib and croniter.

croniter underneath, koku on top (koku.core.schedule then maps wall times to instants by the DST rules):

  * croniter expands the fields. Every value set the matcher walks (seconds, minute, hour, month and
    the plain items of day of month and day of week) is ``croniter.expand(..., second_at_beginning=True)``'s
    answer, ``*`` read as the field's full range. Each field is expanded on its own and cached per
    normalised text: 10,000 distinct expressions still share a few hundred field texts, and one
    ``croniter.expand`` costs 60-400 us.
  * koku before croniter: nicknames and ``@reboot``; 5 fields, or 6 with seconds first; validation with
    messages naming the field and the value (croniter's say "out of bands"); and a rewrite of every
    plain item into a shape croniter expands as cron does (``*``, ``*/s``, ``v``, ``lo-hi[/s]`` with
    lo < hi, names as numbers). croniter 7.0 reads these differently:
      - a one-value range is the whole field to croniter (``6-6``, ``sun-sun``, ``7-7``: every day;
        ``0-0/5``: every fifth minute). koku writes the value alone;
      - a wrapping range with a step restarts one off after the wrap (``50-10/7``: 5 instead of 4).
        koku writes the two ascending halves (``50-59/7,4-10/7``; ``22-2`` is ``22-23,0-2``);
      - Sunday as 7: croniter turns ``7-0`` into ``0-0`` (every day) and gets ``0-7`` and ``5-7`` right
        only through the two readings above. koku writes 0 (``5-7`` is ``5-6,0``);
      - ``a/s`` is written ``a-max/s`` (croniter has to special-case ``59/15``).
  * koku instead of croniter, the day extensions: croniter keeps ``15W`` as a plain 15, rejects ``5L``,
    refuses ``#`` beside plain weekdays (``1,5#3``), and for ``L`` and ``#`` returns only markers that
    need month arithmetic anyway. ``L``, ``nW``, ``n#k`` and ``nL``/``Ln`` never reach croniter.
  * koku after croniter: cronie's day rule (if a day field starts with ``*`` both must match, else
    either; croniter's ``day_or`` ORs ``*/2`` too) and the walk over wall times (``koku.core.cronmatch``: a few us
    per run, where ``croniter.get_next`` costs ~85 us).

croniter accepts but koku rejects: ``?``, ``H``/``R`` (hashed and random values), ``#`` on a range
(``mon-wed#2``), 7 fields (seconds last, year), dates that never come (``0 0 31 2 *``): none is cron's,
and a typo should not pass as one of them. koku accepts but croniter rejects: ``5L``, ``1,5#3``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import Enum
from functools import lru_cache

from croniter import CroniterError, croniter

__all__ = ["SEARCH_YEARS", "split_fields", "normalise"]

# No expression that can fire at all goes longer than one 400-year Gregorian cycle without firing.
SEARCH_YEARS = 401


@dataclass(frozen=True)
class _FieldSpec:
    name: str
    low: int
    high: int  # highest value accepted as written (7 for day of week)
    cycle_high: int  # highest value of the cycle, where wrapping ranges turn round (6 for day of week)
    names: tuple[str, ...] = ()  # names[i] is value low + i

    def value(self, tok: str, item: str) -> int:
        low = tok.lower()
        if low.isascii() and low.isdigit():
            v = int(low)
        elif low in self.names:
            v = self.low + self.names.index(low)
        elif not tok:
            raise ValueError(f'{self.name} "{item}" is malformed')
        else:
            hint = f" or name ({self.names[0]}-{self.names[-1]})" if self.names else ""
            raise ValueError(f'{self.name} "{tok}" is not a number{hint}')
        if not self.low <= v <= self.high:
            raise ValueError(f"{self.name} {v} out of range {self.low}-{self.high}")
        return v

    def _span(self, lo: int, hi: int, step: int) -> list[str]:
        """lo..hi by step, lo <= hi <= cycle_high, in a shape croniter reads as written."""
        if lo == hi:
            return [str(lo)]
        return [f"{lo}-{hi}" if step == 1 else f"{lo}-{hi}/{step}"]

    def normalise(self, item: str) -> list[str]:
        """One list item (``*``, ``a``, ``a-b``, each with an optional ``/step``) validated and rewritten
        into croniter-safe items. Raises ValueError naming the field and the value."""
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not (step_text.isascii() and step_text.isdigit()):
                raise ValueError(f'{self.name} step "{step_text}" in "{item}" is not a number')
            step = int(step_text)
            if step == 0:
                raise ValueError(f'{self.name} step 0 in "{item}" must be at least 1')
        if base == "*":
            return ["*" if step == 1 else f"*/{step}"]
        if "-" in base:
            a, _, b = base.partition("-")
            lo, hi = self.value(a, item), self.value(b, item)
        else:
            lo = self.value(base, item)
            hi = self.cycle_high if slash else lo
        if lo == hi:  # 6-6, 0-0/5: one value (croniter would take the whole field)
            return [str(lo if lo <= self.cycle_high else self.low)]
        if lo > self.cycle_high:
            lo = self.low  # day of week 7-3 is Sunday to Wednesday, 7/2 starts on Sunday
        if lo <= hi <= self.cycle_high:
            return self._span(lo, hi, step)
        if lo <= hi:  # day of week a-7: 7 is Sunday, reached when the step lands on it
            tail = [str(self.low)] if (hi - lo) % step == 0 else []
            return self._span(lo, self.cycle_high, step) + tail
        # A wrapping range (22-2, fri-mon): its first half, then the second from where the step lands.
        restart = self.low + (-(self.cycle_high - lo + 1)) % step
        rest = self._span(restart, hi, step) if restart <= hi else []
        return self._span(lo, self.cycle_high, step) + rest

    def normalise_field(self, items: list[str], text: str) -> str:
        if "" in items:
            raise ValueError(f'{self.name} field "{text}" has an empty list item')
        return ",".join(out for item in items for out in self.normalise(item))


_SECOND = _FieldSpec("second", 0, 59, 59)
_MINUTE = _FieldSpec("minute", 0, 59, 59)
_HOUR = _FieldSpec("hour", 0, 23, 23)
_DOM = _FieldSpec("day of month", 1, 31, 31)
_MONTH = _FieldSpec("month", 1, 12, 12, tuple("jan feb mar apr may jun jul aug sep oct nov dec".split()))
_DOW = _FieldSpec("day of week", 0, 7, 6, tuple("sun mon tue wed thu fri sat".split()))

_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_NEAREST = re.compile(r"(\d+)w|w(\d+)", re.ASCII)
_NTH = re.compile(r"([a-z0-9]+)#(\d+)", re.ASCII)
_LAST_DOW = re.compile(r"([a-z0-9]+)l|l([a-z0-9]+)", re.ASCII)


def split_fields(expr: str) -> tuple[list[str], bool, bool]:
    """(the 6 fields, seconds first; has_seconds; wildcard) of an expression or nickname other than
    @reboot. Raises ValueError with the detail."""
    text = expr.strip()
    if text.startswith("@"):
        expansion = _NICKNAMES.get(text.lower())
        if expansion is None:
            raise ValueError(f'unknown nickname "{text}" (use @reboot, {", ".join(_NICKNAMES)})')
        text = expansion
    fields = text.split()
    if len(fields) not in (5, 6):
        raise ValueError(
            "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, "
            f"got {len(fields)}"
        )
    has_seconds = len(fields) == 6
    if not has_seconds:
        fields.insert(0, "0")
    wildcard = fields[1].startswith("*") or fields[2].startswith("*")
    return fields, has_seconds, wildcard


# --------------------------------------------------------------------------- croniter

_FULL = (range(0, 60), range(0, 60), range(0, 24), range(1, 32), range(1, 13), range(0, 7))
# croniter returns minute, hour, dom, month, dow, then the seconds moved to the end.
_CRONITER_INDEX = (5, 0, 1, 2, 3, 4)
# The other fields of the expression croniter expands one field in: plain values, which it expands
# in about half the time a * takes.
_FILLER = ("0", "0", "0", "1", "1", "0")


@lru_cache(maxsize=4096)
def _expand_field(index: int, text: str) -> tuple[int, ...]:
    """croniter's value set for normalised field ``text`` at ``index`` (koku's order: second, minute,
    hour, day of month, month, day of week), sorted. Raises ValueError."""
    fields = list(_FILLER)
    fields[index] = text
    expr = " ".join(fields)
    try:
        expanded, _nth = croniter.expand(expr, second_at_beginning=True)
    except CroniterError as exc:  # koku only passes shapes croniter accepts: a croniter change
        raise ValueError(f'croniter cannot expand "{expr}": {exc}') from None
    values = expanded[_CRONITER_INDEX[index]]
    if "*" in values:  # croniter keeps a * item as it is: "*,0" comes back as ["*", 0]
        return tuple(_FULL[index])
    if not all(type(v) is int and v in _FULL[index] for v in values):
        raise ValueError(f'croniter expanded "{text}" in "{expr}" to unexpected values {values!r}')
    return tuple(sorted(set(values)))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- days


class _DayMode(Enum):
    ALL = "all"  # every day
    DOM = "dom"  # day of month decides (day of week is *)
    DOW = "dow"  # day of week decides
    AND = "and"  # both must match (one field starts with *)
    OR = "or"  # either may match (neither does)


@dataclass(frozen=True)
class _Days:
    """Which days of a month match, cronie's star rule already applied."""

    mode: _DayMode
    dom: frozenset[int] = frozenset()
    dom_last: bool = False
    dom_nearest: int = 0  # the nW target, 0 for none
    dow: frozenset[int] = frozenset()
    dow_nth: frozenset[tuple[int, int]] = frozenset()  # (weekday, n): the n-th such weekday
    dow_last: frozenset[int] = frozenset()  # the last such weekday of the month

    def in_month(self, ndays: int, wd1: int) -> tuple[int, ...]:
        """Matching days of a month with ``ndays`` days whose 1st is cron weekday ``wd1`` (0 = Sunday)."""
        if self.mode is _DayMode.ALL:
            return tuple(range(1, ndays + 1))
        dom: set[int] = set()
        dow: set[int] = set()
        if self.mode is not _DayMode.DOW:
            dom = {d for d in self.dom if d <= ndays}
            if self.dom_last:
                dom.add(ndays)
            if self.dom_nearest:
                d = min(self.dom_nearest, ndays)
                wd = (wd1 + d - 1) % 7
                if wd == 6:
                    d = d - 1 if d > 1 else d + 2
                elif wd == 0:
                    d = d + 1 if d < ndays else d - 2
                dom.add(d)
        if self.mode is not _DayMode.DOM:
            dow = {d for d in range(1, ndays + 1) if (wd1 + d - 1) % 7 in self.dow}
            for wd, n in self.dow_nth:
                d = 1 + (wd - wd1) % 7 + 7 * (n - 1)
                if d <= ndays:
                    dow.add(d)
            for wd in self.dow_last:
                first = 1 + (wd - wd1) % 7
                dow.add(first + 7 * ((ndays - first) // 7))
        if self.mode is _DayMode.DOM:
            return tuple(sorted(dom))
        if self.mode is _DayMode.DOW:
            return tuple(sorted(dow))
        return tuple(sorted(dom & dow if self.mode is _DayMode.AND else dom | dow))


_EVERY_DAY = _Days(_DayMode.ALL)


def _split_days(dom_text: str, dow_text: str) -> tuple[list[str], list[str], _Days]:
    """The plain items of each day field, for croniter, and the extensions koku reads itself (in a
    _Days whose mode and plain values ``_star_rule`` fills in). Raises ValueError."""
    dom_plain: list[str] = []
    dom_last, nearest = False, 0
    items = dom_text.split(",")
    for item in items:
        low = item.lower()
        if low == "l":
            dom_last = True
        elif m := _NEAREST.fullmatch(low):
            nearest = _DOM.value(m.group(1) or m.group(2), item)
            if len(items) != 1:
                raise ValueError(f'day of month "{item}" must be the only item in its field')
        else:
            dom_plain.append(item)
    dow_plain: list[str] = []
    nth: set[tuple[int, int]] = set()
    last: set[int] = set()
    for item in dow_text.split(","):
        low = item.lower()
        if m := _NTH.fullmatch(low):
            n = int(m.group(2))
            if not 1 <= n <= 5:
                raise ValueError(f'day of week "{item}": occurrence {n} out of range 1-5')
            nth.add((_DOW.value(m.group(1), item) % 7, n))
        elif m := _LAST_DOW.fullmatch(low):
            last.add(_DOW.value(m.group(1) or m.group(2), item) % 7)
        else:
            dow_plain.append(item)
    ext = _Days(_DayMode.OR, frozenset(), dom_last, nearest, frozenset(), frozenset(nth), frozenset(last))
    return dom_plain, dow_plain, ext


def _star_rule(
    dom_text: str, dow_text: str, ext: _Days, dom: tuple[int, ...], dow: tuple[int, ...]
) -> _Days:
    """cronie's day rule over the plain values (croniter's) and the extensions (koku's)."""
    dom_full = len(dom) == 31 and not ext.dom_last and not ext.dom_nearest
    dow_full = len(dow) == 7 and not ext.dow_nth and not ext.dow_last
    if dom_text.startswith("*") or dow_text.startswith("*"):
        if dom_full and dow_full:
            return _EVERY_DAY
        mode = _DayMode.DOW if dom_full else _DayMode.DOM if dow_full else _DayMode.AND
    elif dom_full or dow_full:
        return _EVERY_DAY
    else:
        mode = _DayMode.OR
    return replace(ext, mode=mode, dom=frozenset(dom), dow=frozenset(dow))


def normalise(fields: list[str]) -> tuple[tuple[str | None, ...], _Days]:
    """The six fields (seconds first) as koku hands them to croniter, None for a day field that holds
    extensions only, and the day extensions kept back. Raises ValueError naming the field and value."""
    dom_plain, dow_plain, ext = _split_days(fields[3], fields[5])
    parts = (
        _SECOND.normalise_field(fields[0].split(","), fields[0]),
        _MINUTE.normalise_field(fields[1].split(","), fields[1]),
        _HOUR.normalise_field(fields[2].split(","), fields[2]),
        _DOM.normalise_field(dom_plain, fields[3]) if dom_plain else None,
        _MONTH.normalise_field(fields[4].split(","), fields[4]),
        _DOW.normalise_field(dow_plain, fields[5]) if dow_plain else None,
    )
    return parts, ext
