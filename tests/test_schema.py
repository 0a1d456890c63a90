"""docs/protocol.schema.json itself: it accepts the documented shapes and rejects answers that break them.
(Real answers are checked wherever the protocol tests read one: tests/schema.py.)"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from schema import SCHEMA_PATH, check_request, check_response

STATUS = {
    "name": "backup", "state": "failing", "last_run": "2026-11-28T02:00:00+00:00", "last_exit": 2,
    "next_run": "2026-11-29T02:00:00+00:00", "schedule": "0 2 * * *", "tz": None, "zone": "Etc/UTC",
    "command": "backup.sh", "description": "", "on_error": "backoff", "pid": None, "pids": [],
    "running_since": None, "last_outcome": "failure", "last_description": "exit status 2", "last_signal": None,
    "last_duration_s": 1.5, "consecutive_failures": 1, "skips_left": 1, "paused_until": None, "skipped": 0,
    "runs": 7, "file": "/etc/koku/config.toml",
}
RECORD = {
    "run": 7, "trigger": "schedule", "scheduled": "2026-11-28T02:00:00+00:00", "started": "2026-11-28T02:00:00+00:00",
    "ended": "2026-11-28T02:00:01+00:00", "duration_s": 1.5, "outcome": "failure", "description": "exit status 2",
    "exit_code": 2, "signal": None, "pid": 4242, "tail": ["oops"], "notifications": [],
}


def test_the_schema_file_is_json_that_names_its_version() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    assert "version 1" in schema["title"]
    assert schema["$defs"]["DaemonStatus"]["properties"]["protocol"] == {"const": 1}


@pytest.mark.parametrize("answer", [
    {"Ok": "pong"}, {"Error": "unknown job \"x\""}, {"Status": [STATUS]}, {"Status": []},
    {"Started": {"name": "backup", "run": 8}}, {"Finished": RECORD}, {"History": [RECORD]},
    {"Log": {"path": "/x/logs/backup.log", "lines": ["a"], "offset": 10}}, {"Output": {"text": "hi\n", "cut": 0}},
    {"Metrics": "# HELP koku_build_info ...\n"},
])
def test_documented_answers_fit(answer: dict) -> None:
    check_response(answer)


def _broken(mutate):
    status = copy.deepcopy(STATUS)
    mutate(status)
    return {"Status": [status]}


@pytest.mark.parametrize("answer, where", [
    (_broken(lambda s: s.update(state="sleeping")), "Status/0/state"),  # kagaya knows five states only
    (_broken(lambda s: s.pop("last_exit")), "Status/0"),  # a field kagaya reads, gone
    (_broken(lambda s: s.update(last_exit="2")), "Status/0/last_exit"),  # retyped
    (_broken(lambda s: s.update(next_run="tomorrow")), "Status/0/next_run"),
    (_broken(lambda s: s.update(surprise=1)), "Status/0"),  # a field nobody documented
    ({"Finished": {**RECORD, "outcome": "exploded"}}, "Finished/outcome"),
    ({"Okay": "pong"}, "(top)"),
    ({"Ok": "pong", "Error": "both"}, "(top)"),
])
def test_an_answer_that_breaks_the_schema_fails(answer: dict, where: str) -> None:
    with pytest.raises(AssertionError) as info:
        check_response(answer)
    assert f"breaks docs/protocol.schema.json: at {where}:" in str(info.value)


def test_every_request_in_protocol_md_fits() -> None:
    """The request column of docs/protocol.md's "Requests" tables, placeholders filled in: the prose and
    the schema describe the same requests."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    section = text[text.index("## Requests"):text.index("## Example exchange")]
    fill = [("number > 0, at most 315360000 (10 years)", "60"), ('"<name>"', '"backup"'),
            ('"<notifier>"', '"ops"'), (": str", ': "backup"'), (": int", ": 3")]
    cells = re.findall(r"^\| `([^`]+)` \|", section, re.M)
    for cell in cells:
        for placeholder, value in fill:
            cell = cell.replace(placeholder, value)
        check_request(json.loads(cell))
    assert len(cells) >= 18


@pytest.mark.parametrize("request_", [{"Run": ""}, {"Run": 5}, {"PauseFor": {"name": "x", "seconds": 0}},
                                      {"Log": {"name": "x", "bogus": 1}}, "Nope"])
def test_bad_requests_do_not_fit(request_) -> None:
    with pytest.raises(AssertionError):
        check_request(request_)
