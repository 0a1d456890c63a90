"""The control socket's messages: newline-delimited JSON in serde's externally tagged enum form.

kagaya (through muzan) already speaks the first five requests, so their shape is fixed:
``"Status"``, ``{"Run": name}``, ``{"Pause": name}``, ``{"Resume": name}``, ``"Reload"``; answers are
``{"Status": [JobStatus, ...]}``, ``{"Ok": message}`` or ``{"Error": message}``. The rest are koku's own
additions in the same form. docs/protocol.md documents every one. Stdlib only: the client imports this.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from koku.errors import ProtocolError

# The wire format's version, in DaemonStatus: raised when a request or answer changes incompatibly (a field
# removed or retyped, a request's meaning changed); new requests and new fields keep it (docs/api.md).
VERSION = 1
MAX_LINE = 1024 * 1024  # bytes; a longer request line is refused, the connection stays usable
MAX_SECONDS = 10 * 365 * 86400  # the longest PauseFor; more overflows datetime arithmetic


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ProtocolError("expected a job name (a non-empty string)")
    if not _encodable(value):
        # A lone surrogate ("\ud800") decodes from JSON but cannot be echoed back as UTF-8.
        raise ProtocolError("job name is not valid Unicode (a lone surrogate)")
    return value


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _positive_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_SECONDS:
        # `not 0 < value` also catches NaN, which compares false with everything.
        raise ProtocolError(f"{what} must be a positive number of at most {MAX_SECONDS} (10 years)")
    return float(value)


def _no_constants(name: str) -> Any:
    raise ProtocolError(f"{name} is not a number koku accepts")


def _count(value: Any, what: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(f"{what} must be a non-negative integer")
    return value


def _object(value: Any, keys: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"expected an object with keys {', '.join(sorted(keys))}")
    unknown = set(value) - keys
    if unknown:
        raise ProtocolError(f"unknown field {sorted(unknown)[0]!r}")
    missing = required - set(value)
    if missing:
        raise ProtocolError(f"missing field {sorted(missing)[0]!r}")
    return value


class Request(NamedTuple):  # a NamedTuple, not a dataclass: dataclasses costs the client ~9 ms to import
    kind: str
    name: str | None = None
    seconds: float | None = None  # PauseFor
    lines: int | None = None  # Log
    offset: int | None = None  # Log (follow)
    limit: int | None = None  # History
    run: int | None = None  # Wait


# Requests without an argument: serde writes unit variants as a bare string.
UNIT_REQUESTS = {"Status", "StatusBrief", "Reload", "DaemonStatus", "Shutdown", "Ping", "Metrics"}
# Requests whose argument is a job name.
# (NotifyTest's argument is a notifier's name.)
NAME_REQUESTS = {"Run", "Pause", "Resume", "Trigger", "Cancel", "RunFollow", "NotifyTest"}


def _parse_tagged(kind: str, arg: Any) -> Request:
    if kind in UNIT_REQUESTS:
        if arg is not None:
            raise ProtocolError(f"{kind} takes no argument")
        return Request(kind)
    if kind in NAME_REQUESTS:
        return Request(kind, name=_name(arg))
    if kind == "PauseFor":
        obj = _object(arg, {"name", "seconds"}, {"name", "seconds"})
        return Request(kind, name=_name(obj["name"]), seconds=_positive_number(obj["seconds"], "seconds"))
    if kind == "Log":
        obj = _object(arg, {"name", "lines", "offset"}, {"name"})
        return Request(
            kind,
            name=_name(obj["name"]),
            lines=_count(obj.get("lines"), "lines", 20),
            offset=None if obj.get("offset") is None else _count(obj.get("offset"), "offset", 0),
        )
    if kind == "History":
        obj = _object(arg, {"name", "limit"}, {"name"})
        return Request(kind, name=_name(obj["name"]), limit=_count(obj.get("limit"), "limit", 20))
    if kind == "Wait":
        obj = _object(arg, {"name", "run"}, {"name", "run"})
        run = obj["run"]
        if isinstance(run, bool) or not isinstance(run, int):
            raise ProtocolError("run must be an integer")
        return Request(kind, name=_name(obj["name"]), run=run)
    raise ProtocolError(f"unknown request {kind!r}")


def parse_request(line: bytes | str) -> Request:
    """Decode one request line. Raises ProtocolError whose message starts with what is wrong."""
    try:
        value = json.loads(line, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not JSON ({exc})") from None
    except RecursionError:
        raise ProtocolError("nested too deeply") from None
    if isinstance(value, str):
        return _parse_tagged(value, None)
    if isinstance(value, dict) and len(value) == 1:
        ((kind, arg),) = value.items()
        # Tolerate {"Status": null}: some serializers write unit variants that way.
        if kind in UNIT_REQUESTS and arg is None:
            return Request(kind)
        return _parse_tagged(kind, arg)
    raise ProtocolError('expected a request such as "Status" or {"Run": "<name>"}')


def dumps(value: Any) -> bytes:
    """One message on the wire: compact JSON and a newline.

    Never raises for text: a lone surrogate that got this far is written as its JSON escape.
    """
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "backslashreplace") + b"\n"


def ok(message: str) -> dict[str, Any]:
    return {"Ok": message}


def error(message: str) -> dict[str, Any]:
    return {"Error": message}


def unpack_response(value: Any) -> tuple[str, Any]:
    """Split a response into (tag, body). Raises ProtocolError for anything else."""
    if isinstance(value, dict) and len(value) == 1:
        ((tag, body),) = value.items()
        return tag, body
    raise ProtocolError(f"unexpected response from the daemon: {str(value)[:200]}")
