"""docs/protocol.schema.json as a test helper: every answer the protocol tests receive goes through
``check_response`` (tests/test_socket.py's Conn, conftest.read_line, the public-API test), so a change of
the wire shape that the schema does not allow fails the suite."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema.exceptions

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "protocol.schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text())

_formats = jsonschema.FormatChecker()


@_formats.checks("date-time", raises=ValueError)
def _is_time(value: object) -> bool:
    # The daemon writes ISO 8601 with an offset ("2026-11-28T12:34:55+00:00"); fromisoformat checks it
    # without the optional rfc3339 package jsonschema would need.
    return not isinstance(value, str) or datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None


def _validator(ref: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": ref, "$defs": SCHEMA["$defs"]}, format_checker=_formats)


_RESPONSE = _validator("#/$defs/Response")
_REQUEST = _validator("#/$defs/Request")


def _problems(validator: jsonschema.Draft202012Validator, value: Any) -> list[str]:
    # best_match walks into oneOf: it names the branch of the answer's own tag, not all ten.
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return []
    return [f"at {'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"]


SAMPLE = 40  # entries of a long list answer that are checked: the first ones and the last ones


def _sampled(value: Any) -> Any:
    # A Status of 3,000 jobs took 7 s to validate on a loaded machine, once per poll of a test's wait; the
    # entries all come from one function, so the first and last few stand for the rest.
    if isinstance(value, dict) and len(value) == 1:
        (tag, body), = value.items()
        if isinstance(body, list) and len(body) > SAMPLE:
            return {tag: body[: SAMPLE // 2] + body[-SAMPLE // 2:]}
    return value


def check_response(value: Any) -> Any:
    """Raise AssertionError (naming where) unless ``value`` is an answer the schema allows; returns it."""
    problems = _problems(_RESPONSE, _sampled(value))
    assert not problems, f"answer breaks docs/protocol.schema.json: {problems[0]}\n{json.dumps(value)[:500]}"
    return value


def check_request(value: Any) -> Any:
    problems = _problems(_REQUEST, value)
    assert not problems, f"request breaks docs/protocol.schema.json: {problems[0]}"
    return value
