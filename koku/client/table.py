"""Tables for people: prettytable rendering, local times, durations. Client side: no gevent, no croniter."""

from __future__ import annotations

import os
import signal
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Iterable

from koku.core.durations import format_duration

DASH = "\u2014"


@lru_cache(maxsize=4096)  # a big status table repeats the same few next-run instants many times
def local_time(value: str | None) -> str:
    """An ISO 8601 instant as the local wall time of the machine ``ku`` runs on, to the second."""
    if not value:
        return DASH
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return value
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def zoned_time(dt: datetime) -> str:
    """A time in its own zone with the offset, for `ku check` previews."""
    return dt.strftime("%Y-%m-%d %H:%M:%S %z")[:-2] + ":" + dt.strftime("%z")[-2:]


def _table(headers: list[str]) -> Any:
    # Imported here: prettytable and the wcwidth it loads cost `ku status` ~15 ms of start-up, and the
    # status table does without them (_columns).
    from prettytable import PrettyTable, TableStyle

    table = PrettyTable(headers)
    table.set_style(TableStyle.PLAIN_COLUMNS)
    table.align = "l"
    table.left_padding_width = 0
    table.right_padding_width = 2
    return table


def _render(table: Any) -> str:
    return "\n".join(line.rstrip() for line in table.get_string().splitlines())


def _cell(value: Any) -> str:
    return DASH if value is None else str(value)


RED, YELLOW, RESET = "\033[31m", "\033[33m", "\033[0m"
# Outcomes that are a problem with the job (red) and endings that are not the job's fault (yellow).
_FAILED = {"failure", "timeout", "error"}
_CUT_SHORT = {"interrupted", "cancelled"}


def use_color(stream: Any) -> bool:
    """Colour only for a terminal, and never when NO_COLOR is set to anything (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


def exit_cell(job: dict[str, Any]) -> str:
    """How the last finished run ended, in one word: its exit code, ``SIGTERM``, ``timeout``, ``error``,
    ``interrupted`` or ``cancelled``; a dash while running or before any run."""
    outcome = job.get("last_outcome")
    if job.get("state") == "running" or outcome is None:
        return DASH
    if outcome in ("timeout", "error", "interrupted", "cancelled"):
        return outcome
    if job.get("last_exit") is not None:
        return str(job["last_exit"])
    if job.get("last_signal"):
        return _signal_name(int(job["last_signal"]))
    return outcome


def _paint(text: str, colour: str | None) -> str:
    return f"{colour}{text}{RESET}" if colour else text


def _columns(headers: list[str], rows: list[list[str]]) -> str | None:
    """What ``_render(_table(headers))`` prints for ``rows`` (left-aligned columns, two spaces apart,
    trailing spaces cut), built directly: prettytable measures every cell with wcwidth, 0.5 s of
    ``ku status`` at 10,000 jobs. None when a cell holds more than printable ASCII, the dash and koku's
    colour codes (its width would need measuring)."""
    if not rows:
        return ""
    visible = []  # each row's cells as they show on screen (colour codes cut)
    for row in rows:
        joined = "".join(row)
        if "\x1b" in joined:
            row = [c.replace(RED, "").replace(YELLOW, "").replace(RESET, "") for c in row]
            joined = "".join(row)
        if DASH in joined:
            joined = joined.replace(DASH, "-")
        if not (joined.isascii() and joined.isprintable()):
            return None
        visible.append(row)
    widths = [max(len(h), *map(len, column)) + 2 for h, column in zip(headers, zip(*visible))]
    layout = "".join(f"%-{w}s" for w in widths)  # one C-level format per row
    lines = []
    for row, shown in zip([headers, *rows], [headers, *visible]):
        if row is shown:
            lines.append((layout % tuple(row)).rstrip())
        else:
            lines.append("".join(c + " " * (w - len(v)) for c, v, w in zip(row, shown, widths)).rstrip())
    return "\n".join(lines)


def status_table(jobs: Iterable[dict[str, Any]], color: bool = False) -> str:
    headers = ["NAME", "STATE", "LAST RUN", "EXIT", "NEXT RUN"]
    rows = []
    for job in jobs:
        exit_text = exit_cell(job)
        state = job["state"]
        exit_colour = state_colour = None
        if color and exit_text != DASH:
            outcome = job.get("last_outcome")
            exit_colour = RED if outcome in _FAILED else YELLOW if outcome in _CUT_SHORT else None
        if color and state in ("failing", "stopped"):
            state_colour = RED
        rows.append([str(job["name"]), _paint(state, state_colour), local_time(job.get("last_run")),
                     _paint(exit_text, exit_colour), local_time(job.get("next_run"))])
    fast = _columns(headers, rows)
    if fast is not None:
        return fast
    table = _table(headers)
    for row in rows:
        table.add_row(row)
    return _render(table)


def job_details(job: dict[str, Any]) -> str:
    rows = [
        ("name", job["name"]),
        ("state", job["state"]),
        ("schedule", job.get("schedule")),
        ("tz", job.get("zone") or job.get("tz") or "local"),  # "zone": the name `ku check` shows
        ("command", job.get("command")),
        ("description", job.get("description") or None),
        ("file", job.get("file")),
        ("user", job.get("user")),
        ("on_error", job.get("on_error")),
        ("pid", ", ".join(str(p) for p in job.get("pids") or []) or None),
        ("running since", local_time(job.get("running_since")) if job.get("running_since") else None),
        ("last run", local_time(job.get("last_run"))),
        ("last outcome", job.get("last_description")),
        ("last exit", job.get("last_exit")),
        ("last duration", format_duration(job.get("last_duration_s")) if job.get("last_duration_s") is not None else None),
        ("next run", local_time(job.get("next_run"))),
        ("waiting since", local_time(job.get("queued_since")) if job.get("queued_since") else None),
        ("retry at", local_time(job.get("retry_at")) if job.get("retry_at") else None),
        ("paused until", local_time(job.get("paused_until")) if job.get("paused_until") else None),
        ("failures in a row", job.get("consecutive_failures")),
        ("skipped (overlap)", job.get("skipped")),
        ("runs", job.get("runs")),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k + ':':<{width + 1}} {_cell(v)}" for k, v in rows)


def _notified(entry: dict[str, Any]) -> str:
    status = {True: "sent", False: "FAILED", None: "pending"}.get(entry.get("delivered"), "?")
    return f"{entry.get('notifier')}:{entry.get('event')} {status}"


def history_table(records: Iterable[dict[str, Any]]) -> str:
    records = list(records)
    notified = any(r.get("notifications") for r in records)  # the column only where alerts are set up
    table = _table(["RUN", "TRIGGER", "STARTED", "DURATION", "OUTCOME", "EXIT", "DESCRIPTION"]
                   + (["NOTIFIED"] if notified else []))
    for r in records:
        row = [r["run"], r.get("trigger"), local_time(r.get("started")), format_duration(r.get("duration_s")),
               r.get("outcome") or "running", _cell(r.get("exit_code")), r.get("description") or ""]
        if notified:
            row.append("\n".join(_notified(n) for n in r.get("notifications") or []))
        table.add_row(row)
    return _render(table)


def check_table(previews: Iterable[Any], files: dict[str, str] | None = None) -> str:
    table = _table(["NAME", "SCHEDULE", "TZ", "NEXT RUNS"] + (["FILE"] if files else []))
    for p in previews:
        runs = "\n".join(zoned_time(dt) for dt in p.next) or ("at daemon start" if p.cron.strip() == "@reboot" else DASH)
        table.add_row([p.name, p.cron, p.tz, runs] + ([files.get(p.name, "")] if files else []))
    return _render(table)


def daemon_status(info: dict[str, Any]) -> str:
    rows = [
        ("pid", info.get("pid")),
        ("uptime", format_duration(info.get("uptime_s"))),
        ("started", local_time(info.get("started"))),
        ("version", info.get("version")),
        ("config", info.get("config")),
        ("jobs", info.get("jobs")),
        ("running", info.get("running")),
        ("socket", info.get("socket")),
        ("containment", " ".join(str(info[k]) for k in ("containment", "cgroup") if info.get(k))),
    ]
    return "\n".join(f"{k + ':':<9} {_cell(v)}" for k, v in rows)
