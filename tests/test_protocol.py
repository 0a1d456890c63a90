"""protocol.parse_request and dumps on hostile input: every bad line is a ProtocolError, never another
exception (which would kill the connection's greenlet and leave the client without an answer)."""

from __future__ import annotations

import json

import pytest

from koku.core import protocol
from koku.errors import ProtocolError


@pytest.mark.parametrize("line, message", [
    (b'{"Run":"\\ud800"}', "lone surrogate"),
    (b'{"Pause":"ok\\udfff"}', "lone surrogate"),
    (b"[" * 100_000, "nested too deeply"),
    (b'{"Run":' * 50_000 + b'"x"' + b"}" * 50_000, "nested too deeply"),
    (b'{"PauseFor":{"name":"a","seconds":1e300}}', "at most 315360000"),
    (b'{"PauseFor":{"name":"a","seconds":1e309}}', "at most 315360000"),
    (b'{"PauseFor":{"name":"a","seconds":NaN}}', "NaN is not a number"),
    (b'{"PauseFor":{"name":"a","seconds":Infinity}}', "Infinity is not a number"),
    (b'{"PauseFor":{"name":"a","seconds":-Infinity}}', "-Infinity is not a number"),
    (b'{"PauseFor":{"name":"a","seconds":0}}', "positive number"),
    (b'\xff\xfe', "not JSON"),
])
def test_hostile_lines_are_protocol_errors(line: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message.replace("(", r"\(")):
        protocol.parse_request(line)


def test_longest_pause_is_accepted() -> None:
    req = protocol.parse_request(json.dumps({"PauseFor": {"name": "a", "seconds": protocol.MAX_SECONDS}}))
    assert req.seconds == protocol.MAX_SECONDS


def test_dumps_never_fails_on_a_lone_surrogate() -> None:
    line = protocol.dumps({"Error": "unknown job \"\ud800\""})
    assert line.endswith(b"\n")
    assert json.loads(line) == {"Error": "unknown job \"\ud800\""}
