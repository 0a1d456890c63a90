"""koku's public Python API, used as an outside program would: only names from ``koku.__all__``, against
a real daemon. Every answer the API receives is checked against docs/protocol.schema.json."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import tomli_w

import koku
from conftest import wait_for
from schema import check_response

pytestmark = pytest.mark.e2e

JOBS = [
    {"name": "hello", "cron": "@yearly", "command": "echo hello; sleep 0.2; echo from $KOKU_JOB"},
    {"name": "fails", "cron": "@yearly", "command": "echo oops >&2; exit 7"},
    {"name": "long", "cron": "@yearly", "command": "sleep 30"},
]


@pytest.fixture
def daemon(kenv, monkeypatch):
    from koku.client import client as socket_client

    original = socket_client.protocol.unpack_response

    def checked(value):  # every answer, as it comes off the socket
        return original(check_response(value))

    monkeypatch.setattr(socket_client.protocol, "unpack_response", checked)
    kenv.write_config(tomli_w.dumps({"job": JOBS, "daemon": {"kill_grace": "1s", "shutdown_grace": "2s"}}))
    kenv.start()
    return kenv


def test_public_names_import_without_gevent_or_croniter() -> None:
    code = ("import sys, koku\n"
            "from koku import connect, Client, JobStatus, RunRecord, DaemonInfo, KokuError, NotRunningError\n"
            "assert set(koku.__all__) <= set(dir(koku))\n"
            "print(sorted(m for m in ('gevent', 'greenlet', 'croniter', 'dateutil') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_client_method_against_a_real_daemon(daemon) -> None:
    with koku.connect(daemon.state) as k:
        jobs = k.status()
        assert [j["name"] for j in jobs] == ["hello", "fails", "long"]
        assert k.job("fails")["state"] == "idle"
        info = k.daemon_status()
        assert info["protocol"] == 1 and info["pid"] == daemon.daemon_pid() and info["jobs"] == 3

        chunks: list[str] = []
        record = k.run("hello", wait=True, on_output=chunks.append)
        assert record["outcome"] == "success" and record["exit_code"] == 0
        assert "".join(chunks) == "hello\nfrom hello\n"
        failed = k.run("fails", wait=True)
        assert failed["exit_code"] == 7 and failed["outcome"] == "failure"
        assert k.job("fails")["last_exit"] == 7

        run = k.run("long")
        assert isinstance(run, int) and run == 1
        wait_for(lambda: k.job("long")["state"] == "running", 10)
        assert "cancelling long run 1" in k.cancel("long")
        wait_for(lambda: k.job("long")["last_outcome"] == "cancelled", 10)

        assert k.pause("hello") == "paused hello"
        assert k.job("hello")["state"] == "paused"
        assert k.resume("hello") == "resumed hello"
        assert k.pause("hello", for_="2h").startswith("paused hello until ")
        assert k.job("hello")["paused_until"] is not None
        k.resume("hello")

        assert [r["run"] for r in k.history("fails", limit=5)] == [1]
        assert "from hello" in k.log("hello", lines=50)
        follow = k.follow("hello", lines=50)
        assert "from hello" in [next(follow) for _ in range(4)]

        with pytest.raises(koku.DaemonError, match='unknown job "nope"'):
            k.job("nope")
        with pytest.raises(koku.DaemonError, match='unknown job "nope"'):
            k.run("nope")

    daemon.write_config(tomli_w.dumps({"job": JOBS[:2]}))
    with koku.connect(daemon.state) as k:
        assert "removed long" in k.reload()
        daemon.write_config('[[job]]\nname = "x"\ncron = "* * * * *"\ncomand = "true"\n')
        with pytest.raises(koku.ConfigError) as info:
            k.reload()
        assert any('unknown key "comand"' in p for p in info.value.problems)
        assert [j["name"] for j in k.status()] == ["hello", "fails"]  # the old config keeps running


def test_connect_without_a_daemon_names_the_socket(tmp_path: Path) -> None:
    with pytest.raises(koku.NotRunningError, match=str(tmp_path / "daemon.sock")):
        koku.connect(tmp_path)


def test_load_config_and_preview_without_a_daemon(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[[job]]\nname = "nightly"\ncron = "30 2 * * *"\ncommand = "true"\ntz = "America/New_York"\n')
    config = koku.load_config(path)
    (job,) = config.jobs
    start = datetime(2026, 3, 8, 6, 0, tzinfo=timezone.utc)  # 01:00 EST, the night of the spring-forward gap
    by_job = koku.preview(job, start=start, n=2)
    by_expr = koku.preview("30 2 * * *", tz="America/New_York", start=start, n=2)
    assert [t.isoformat() for t in by_job.next] == ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
    assert by_expr.next == by_job.next
    assert any("2026-03-08" in w for w in by_expr.warnings)
    path.write_text('[[job]]\nname = "x"\ncron = "61 * * * *"\ncomand = "true"\n')
    with pytest.raises(koku.ConfigError) as info:
        koku.load_config(path)
    assert len(info.value.problems) >= 2  # every problem at once: the unknown key and the bad minute
    with pytest.raises(koku.ScheduleError):
        koku.preview("61 * * * *")


def test_api_docs_list_every_public_name() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()
    missing = [name for name in koku.__all__ if f"`{name}" not in text]
    assert missing == []
    for method in ("status", "job", "run", "cancel", "pause", "resume", "reload", "log", "follow", "history",
                   "daemon_status"):
        assert f"`{method}(" in text, method
    assert json.loads((Path(__file__).resolve().parent.parent / "docs" / "protocol.schema.json").read_text())


def test_the_readme_and_the_api_docs_point_to_each_other() -> None:
    root = Path(__file__).resolve().parent.parent
    assert "](docs/api.md)" in (root / "README.md").read_text()
    assert "](../README.md" in (root / "docs" / "api.md").read_text()
