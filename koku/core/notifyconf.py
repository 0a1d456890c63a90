"""Config for alerts: ``[notify.NAME]`` notifiers, ``[smtp]``, the job keys that pick notifiers and
events, and the ``[daemon]`` metrics keys. Pure; config.py calls in here and merges the problems.

Converters take ``(key, raw TOML value)`` and return the value or raise ``Bad`` with message tails
(``key "webhook" must be ...``), exactly like config.py's own, so the messages read the same.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable
from urllib.parse import urlsplit

from koku.core.durations import parse_duration, spoken_duration
from koku.core.convert import boolean as _boolean, integer as _integer, show, string as _string, suggest
from koku.errors import BadValue as Bad

NOTIFIER_TIMEOUT = 10.0  # seconds one delivery attempt may take, unless "timeout" says otherwise
NOTIFIER_RETRIES = 3  # attempts after the first, with backoff, before a delivery is given up


class EventKind(str, Enum):
    FAILURE = "failure"
    RECOVERY = "recovery"
    STOPPED = "stopped"
    START = "start"
    SUCCESS = "success"
    SLOW = "slow"
    SKIPPED = "skipped"
    TEST = "test"  # `ku notify test`; never chosen in notify_on


NOTIFY_ON_CHOICES = tuple(k.value for k in EventKind if k is not EventKind.TEST)
DEFAULT_NOTIFY_ON = frozenset({EventKind.FAILURE, EventKind.RECOVERY, EventKind.STOPPED})


class NotifierKind(str, Enum):
    WEBHOOK = "webhook"
    MAIL = "mail"
    COMMAND = "command"


class WebhookFormat(str, Enum):
    JSON = "json"
    SLACK = "slack"


@dataclass(frozen=True)
class NotifierConfig:
    """One ``[notify.NAME]`` table. ``timeout`` in seconds, per attempt."""

    name: str
    kind: NotifierKind
    webhook: str | None = None
    format: WebhookFormat = WebhookFormat.JSON
    headers: tuple[tuple[str, str], ...] = ()
    mail: tuple[str, ...] = ()
    command: str | None = None
    timeout: float = NOTIFIER_TIMEOUT
    retries: int = NOTIFIER_RETRIES

    def describe(self) -> str:
        if self.kind is NotifierKind.WEBHOOK:
            return f"webhook {self.webhook}" + (f" ({self.format.value})" if self.format is not WebhookFormat.JSON else "")
        if self.kind is NotifierKind.MAIL:
            return "mail " + ", ".join(self.mail)
        return f"command {self.command}"


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int = 25
    starttls: bool = False
    sender: str | None = None  # "from"; None means koku@<hostname>, filled in when sending
    username: str | None = None
    password_file: str | None = None
    timeout: float = NOTIFIER_TIMEOUT


@dataclass(frozen=True, slots=True)
class JobAlerts:
    """A job's alert keys. One shared instance for jobs that set none (10,000 jobs, one object)."""

    notify: tuple[str, ...] = ()
    notify_on: frozenset[EventKind] = DEFAULT_NOTIFY_ON
    notify_after: int = 1
    remind_every: float | None = None  # seconds
    slow_after: float | None = None  # seconds
    ping: str | None = None

    @property
    def active(self) -> bool:
        return bool(self.notify or self.ping or self.slow_after)


NO_ALERTS = JobAlerts()


@dataclass(frozen=True)
class Alerting:
    """Everything alert-related from one config file, kept on ``Config``."""

    notifiers: Mapping[str, NotifierConfig] = field(default_factory=dict)
    smtp: SmtpConfig | None = None
    declared: frozenset[str] = frozenset()  # every [notify.NAME] written, valid or not


# --- converters ---


def _duration(key: str, value: object) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise Bad(f'key "{key}" must be a duration longer than 0 like "90s", "30m", "6h" (a bare number is '
                  f"seconds), got {show(value)}")
    return seconds


def _url(key: str, value: object) -> str:
    text = _string(key, value)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in text):
        raise Bad(f'key "{key}" must be an http:// or https:// URL with a host, got {show(value)}')
    return text


_ADDRESS = re.compile(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+\.?[^@\s<>,;\"]*")


def _address(key: str, value: object) -> str:
    text = _string(key, value)
    if not _ADDRESS.fullmatch(text.strip()) or "\n" in text:
        raise Bad(f'key "{key}": {show(value)} is not a mail address like "ops@example.com"')
    return text.strip()


def _addresses(key: str, value: object) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise Bad(f'key "{key}" must be an address or a non-empty array of addresses, got {show(value)}')
    tails, good = [], []
    for item in items:
        try:
            good.append(_address(key, item))
        except Bad as exc:
            tails.extend(exc.tails)
    if tails:
        raise Bad(*tails)
    return tuple(good)


def _headers(key: str, value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise Bad(f'key "{key}" must be a table of strings like {{ Authorization = "Bearer ..." }}, got {show(value)}')
    tails = []
    for name, text in value.items():
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            tails.append(f'key "{key}": {show(name)} is not a valid HTTP header name')
        elif not isinstance(text, str):
            tails.append(f'key "{key}.{name}" must be a string, got {show(text)}')
        elif "\n" in text or "\r" in text:
            tails.append(f'key "{key}.{name}" must not contain a line break')
    if tails:
        raise Bad(*tails)
    return tuple(value.items())


def _choice(key: str, value: object, enum: type[Enum]) -> Any:
    text = _string(key, value)
    choices = [m.value for m in enum]  # type: ignore[attr-defined]
    if text not in choices:
        raise Bad(f'key "{key}" must be one of {", ".join(json.dumps(c) for c in choices)}, got {show(value)}')
    return enum(text)


def _names(key: str, value: object) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise Bad(f'key "{key}" must be a notifier name or an array of names like ["ops", "mail"], got {show(value)}')
    return tuple(dict.fromkeys(items))  # a name given twice would deliver twice


def _notify_on(key: str, value: object) -> frozenset[EventKind]:
    if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
        raise Bad(f'key "{key}" must be an array of events like ["failure", "recovery"], got {show(value)}')
    bad = [i for i in value if i not in NOTIFY_ON_CHOICES]
    if bad:
        raise Bad(*(f'key "{key}": unknown event {show(i)} (events: {", ".join(NOTIFY_ON_CHOICES)})' for i in bad))
    return frozenset(EventKind(i) for i in value)


def _listen(key: str, value: object) -> str:
    text = _string(key, value)
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise Bad(f'key "{key}" must be "HOST:PORT" such as "127.0.0.1:9101", got {show(value)}')
    return text


_Converter = Callable[[str, Any], Any]

JOB_FIELDS: dict[str, _Converter] = {
    "notify": _names, "notify_on": _notify_on,
    "notify_after": lambda k, v: _integer(k, v, 1), "remind_every": _duration, "slow_after": _duration,
    "ping": _url,
}
DAEMON_FIELDS: dict[str, _Converter] = {"metrics_listen": _listen, "metrics_file": _string}
NOTIFIER_FIELDS: dict[str, _Converter] = {
    "webhook": _url, "format": lambda k, v: _choice(k, v, WebhookFormat), "headers": _headers,
    "mail": _addresses, "command": _string, "timeout": _duration,
    "retries": lambda k, v: _integer(k, v, 0, 10),
}
SMTP_FIELDS: dict[str, _Converter] = {
    "host": _string, "port": lambda k, v: _integer(k, v, 1, 65535), "starttls": _boolean, "from": _address,
    "username": _string, "password_file": _string, "timeout": _duration,
}
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def split_job_alerts(merged: dict[str, Any]) -> JobAlerts:
    """Take the alert keys out of a job's converted (and defaults-merged) keys. Mutates ``merged``."""
    keys = {key: merged.pop(key) for key in JOB_FIELDS if key in merged}
    return JobAlerts(**keys) if keys else NO_ALERTS


def job_problems(alerts: JobAlerts, declared: Iterable[str]) -> list[str]:
    """Tails for notifier names a job uses that no ``[notify.NAME]`` table declares (a declared but
    broken notifier is reported at its table, not again at every job)."""
    declared = sorted(declared)
    tails = []
    for name in alerts.notify:
        if name not in declared:
            close = suggest(name, declared)
            defined = ", ".join(declared) or "none; add a [notify.NAME] table"
            tails.append(f'key "notify": unknown notifier {show(name)}{close} (defined: {defined})')
    return tails


def check_alerting(data: dict[str, Any], problem: Callable[[str | None, str], None]) -> Alerting:
    """Validate the top-level ``notify`` and ``smtp`` tables; report through ``problem(where, tail)``."""
    notifiers: dict[str, NotifierConfig] = {}
    raw_notify = data.get("notify", {})
    if not isinstance(raw_notify, dict):
        problem(None, f'"notify" must be tables of notifiers (write [notify.NAME]), got {show(raw_notify)}')
        raw_notify = {}
    for name, raw in raw_notify.items():
        where = f"[notify.{name}]"
        if not _NAME.fullmatch(name):
            problem(where, 'the notifier name may only contain letters, digits, "_", "." and "-" (at most 64)')
            continue
        if not isinstance(raw, dict):
            problem(None, f'"notify.{name}" must be a table (write [notify.{name}]), got {show(raw)}')
            continue
        notifier = _notifier(name, raw, lambda tail, w=where: problem(w, tail))
        if notifier is not None:
            notifiers[name] = notifier
    smtp = None
    raw_smtp = data.get("smtp")
    if raw_smtp is not None:
        if isinstance(raw_smtp, dict):
            smtp = _smtp(raw_smtp, lambda tail: problem("[smtp]", tail))
        else:
            problem(None, f'"smtp" must be a table (write [smtp]), got {show(raw_smtp)}')
    return Alerting(notifiers, smtp, frozenset(raw_notify))


def convert(raw: dict[str, Any], fields: Mapping[str, _Converter], problem: Callable[[str], None]) -> dict[str, Any] | None:
    good: dict[str, Any] = {}
    ok = True
    for key, value in raw.items():
        converter = fields.get(key)
        if converter is None:
            problem(f'unknown key "{key}"' + suggest(key, fields))
            ok = False
            continue
        try:
            good[key] = converter(key, value)
        except Bad as exc:
            for tail in exc.tails:
                problem(tail)
            ok = False
    return good if ok else None


def _notifier(name: str, raw: dict[str, Any], problem: Callable[[str], None]) -> NotifierConfig | None:
    good = convert(raw, NOTIFIER_FIELDS, problem)
    kinds = [k for k in NotifierKind if k.value in raw]
    if len(kinds) != 1:
        got = "none" if not kinds else " and ".join(f'"{k.value}"' for k in kinds)
        problem(f'a notifier needs exactly one of "webhook", "mail" or "command", got {got}')
        return None
    kind = kinds[0]
    for key in ("format", "headers"):
        if key in raw and kind is not NotifierKind.WEBHOOK:
            problem(f'key "{key}" only applies to a "webhook" notifier')
            good = None
    if good is None:
        return None
    value = good.pop(kind.value)
    return NotifierConfig(name=name, kind=kind, **{kind.value: value}, **good)


def _smtp(raw: dict[str, Any], problem: Callable[[str], None]) -> SmtpConfig | None:
    good = convert(raw, SMTP_FIELDS, problem)
    if "host" not in raw:
        problem('missing key "host"')
        good = None
    if ("username" in raw) != ("password_file" in raw):
        problem('keys "username" and "password_file" go together (the password is read from the file)')
        good = None
    if good is None:
        return None
    if "from" in good:
        good["sender"] = good.pop("from")
    return SmtpConfig(**good)


def check_lines(jobs: Iterable[Any], alerting: Alerting) -> list[str]:
    """``ku check``'s account of who gets told what: one line per job with alert keys, then notifiers
    no job uses. ``jobs`` are JobConfigs."""
    lines, used = [], set()
    for job in jobs:
        alerts: JobAlerts = job.alerts
        if alerts is NO_ALERTS:
            continue
        used.update(alerts.notify)
        parts = [", ".join(f"{name} ({alerting.notifiers[name].describe()})" for name in alerts.notify
                           if name in alerting.notifiers) or "no notifiers"]
        if alerts.notify:
            on = [kind.value for kind in EventKind if kind in alerts.notify_on]
            parts.append("on " + ", ".join(on))
            if alerts.notify_after > 1:
                parts.append(f"after {alerts.notify_after} failures in a row")
            if alerts.remind_every is not None:
                parts.append(f"reminders every {spoken_duration(alerts.remind_every)}")
            if alerts.slow_after is not None:
                parts.append(f"slow after {spoken_duration(alerts.slow_after)}")
        if alerts.ping:
            parts.append(f"ping {alerts.ping}")
        lines.append(f'job "{job.name}" notifies: ' + "; ".join(parts))
    for name in sorted(set(alerting.notifiers) - used):
        lines.append(f'notifier "{name}" ({alerting.notifiers[name].describe()}) is used by no job')
    return lines
