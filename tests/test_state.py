"""state.json: atomic writes, a full disk, round trips."""

from __future__ import annotations

import errno
import json
import os

import pytest

from koku.core.model import JobMemory, RunRecord
from koku.core.state import StateStore


def test_round_trip_keeps_every_field(tmp_path):
    store = StateStore(tmp_path / "state.json")
    rec = RunRecord(run=3, trigger="manual", scheduled=None, started="2026-01-01T00:00:00+00:00",
                    ended="2026-01-01T00:00:01+00:00", duration_s=1.0, outcome="failure",
                    description="exit status 2", exit_code=2, pid=77, tail=["a", "b"])
    mem = JobMemory(paused=True, paused_until="2026-01-02T00:00:00+00:00", consecutive_failures=2,
                    skips_left=1, skipped=4, runs=3, last_run=rec, history=[rec], in_flight=[rec])
    store.save({"x": mem})
    loaded, warnings = store.load()
    assert warnings == [] and loaded["x"] == mem


def test_a_full_disk_leaves_the_old_state_and_no_temp_file(tmp_path, monkeypatch):
    store = StateStore(tmp_path / "state.json")
    store.save({"x": JobMemory(runs=1)})
    before = (tmp_path / "state.json").read_bytes()

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError):
        store.save({"x": JobMemory(runs=2)})
    monkeypatch.undo()
    assert (tmp_path / "state.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


@pytest.mark.parametrize("content", [b"", b"[]", b'{"jobs": 3}', b"\xff\xfe", b'{"jobs": {"x": {"runs": "many"}}}'])
def test_unreadable_state_never_raises(tmp_path, content):
    path = tmp_path / "state.json"
    path.write_bytes(content)
    loaded, warnings = StateStore(path).load()
    if content.startswith(b'{"jobs": {'):
        assert loaded["x"].runs == 0  # a bad field falls back to its default, with a warning naming it
        assert warnings == [f'{path}: job "x": runs: invalid value \'many\'; dropped']
    else:
        assert loaded == {} and "corrupt" in warnings[0]
        assert (tmp_path / "state.json.corrupt-1").read_bytes() == content


def test_only_changed_jobs_are_encoded_again_and_the_file_is_always_whole(tmp_path):
    store = StateStore(tmp_path / "state.json")
    jobs = {"a": JobMemory(runs=1), "b": JobMemory(runs=1)}
    store.save(jobs, {"daemon_pid": 1})
    jobs["a"].runs = 2
    jobs["b"].runs = 2  # changed but not reported: the cached fragment is written
    store.save(jobs, {"daemon_pid": 1}, changed={"a"})
    data = json.loads((tmp_path / "state.json").read_text())
    assert data["daemon_pid"] == 1 and data["format"] == 1
    assert data["jobs"]["a"]["runs"] == 2 and data["jobs"]["b"]["runs"] == 1
    store.save(jobs, None, changed=None)
    assert json.loads((tmp_path / "state.json").read_text())["jobs"]["b"]["runs"] == 2
    del jobs["a"]
    store.save(jobs, None, changed=set())
    assert list(json.loads((tmp_path / "state.json").read_text())["jobs"]) == ["b"]
