"""The daemon's log lines: logfmt by default, JSON lines with ``--log-format json``.

Every line about a job carries ``job=`` and ``run=`` and, where known, ``exit=``, ``duration=``,
``outcome=``, ``next=``. Callers pass those as ``extra={"fields": {...}}`` through ``event()``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import IO, Any

log = logging.getLogger("koku")


def event(level: int, msg: str, **fields: Any) -> None:
    """Log one structured line. ``None`` fields are left out."""
    log.log(level, msg, extra={"fields": {k: v for k, v in fields.items() if v is not None}})


def info(msg: str, **fields: Any) -> None:
    event(logging.INFO, msg, **fields)


def warning(msg: str, **fields: Any) -> None:
    event(logging.WARNING, msg, **fields)


def error(msg: str, **fields: Any) -> None:
    event(logging.ERROR, msg, **fields)


def _quote(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if text and not any(c in text for c in ' "=\\\n\t') :
        return text
    return json.dumps(text, ensure_ascii=False)


def _stamp(record: logging.LogRecord) -> str:
    # record.created comes from time.time() inside logging itself; it only labels the line.
    return datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [f"time={_stamp(record)}", f"level={record.levelname.lower()}", f"msg={_quote(record.getMessage())}"]
        for key, value in getattr(record, "fields", {}).items():
            parts.append(f"{key}={_quote(value)}")
        if record.exc_info:
            parts.append(f"exception={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {"time": _stamp(record), "level": record.levelname.lower(), "msg": record.getMessage()}
        data.update(getattr(record, "fields", {}))
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def setup(fmt: str = "logfmt", stream: IO[str] | None = None, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
