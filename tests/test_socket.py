"""The control socket as kagaya's muzan client uses it: write JSON + newline, read one line.

Every request in docs/protocol.md is checked here against a real daemon, and so are the hostile cases:
garbage, unknown jobs, an over-long line, hundreds of clients at once beside idle and half-sent ones.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import threading
import time

import pytest
import tomli_w

from schema import check_response
from conftest import read_line, wait_for

JOBS = [
    {"name": "tick", "cron": "* * * * * *", "command": "echo tick $KOKU_RUN_ID"},
    {"name": "nightly", "cron": "30 2 * * *", "command": "echo nightly; exit 4", "tz": "America/New_York",
     "description": "the nightly one"},
]


@pytest.fixture
def daemon(kenv):
    kenv.write_config(tomli_w.dumps({"job": JOBS, "daemon": {"kill_grace": "1s", "shutdown_grace": "2s"}}))
    kenv.start()
    return kenv


class Conn:
    """One connection carrying many requests in turn."""

    def __init__(self, path, timeout=10.0):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(timeout)
        self.s.connect(str(path))
        self.buf = b""

    def send_raw(self, data: bytes):
        self.s.sendall(data)

    def recv(self):
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            assert chunk, "connection closed"
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return check_response(json.loads(line))  # every answer these tests see must fit the schema

    def ask(self, value):
        self.send_raw(json.dumps(value).encode() + b"\n")
        return self.recv()

    def close(self):
        self.s.close()


def sock(kenv):
    return kenv.state / "daemon.sock"


ISO_KEYS = ("last_run", "next_run")


def test_status_shape_is_what_kagaya_reads(daemon):
    wait_for(lambda: daemon.status("tick")["last_exit"] == 0, 5)
    reply = daemon.request("Status")
    assert list(reply) == ["Status"]
    jobs = reply["Status"]
    assert [j["name"] for j in jobs] == ["tick", "nightly"]
    for job in jobs:
        assert job["state"] in ("idle", "running", "paused", "failing", "stopped")
        assert job["last_exit"] is None or isinstance(job["last_exit"], int)
        for key in ISO_KEYS:
            if job[key] is not None:
                assert "+00:00" in job[key] or job[key].endswith("Z")
    nightly = jobs[1]
    assert nightly["next_run"].endswith(":30:00+00:00")  # 02:30 in New York, sent in UTC
    assert nightly["schedule"] == "30 2 * * *" and nightly["description"] == "the nightly one"


def test_run_pause_resume_reload_answers(daemon):
    c = Conn(sock(daemon))
    reply = c.ask({"Run": "nightly"})
    assert reply == {"Ok": "started nightly run 1"}
    wait_for(lambda: daemon.status("nightly")["last_exit"] == 4, 5)
    assert c.ask({"Pause": "tick"}) == {"Ok": "paused tick"}
    assert daemon.status("tick")["state"] == "paused"
    assert c.ask({"Resume": "tick"}) == {"Ok": "resumed tick"}
    assert daemon.status("tick")["state"] in ("idle", "running")
    assert c.ask("Reload") == {"Ok": f"reloaded {daemon.config}: no changes"}
    paused = c.ask({"PauseFor": {"name": "tick", "seconds": 3600}})
    assert paused["Ok"].startswith("paused tick until ")
    assert daemon.status("tick")["paused_until"]
    c.close()


def test_koku_requests_answers(daemon):
    c = Conn(sock(daemon))
    info = c.ask("DaemonStatus")["DaemonStatus"]
    assert info["pid"] == daemon.daemon_pid() and info["jobs"] == 2 and info["config"] == str(daemon.config)
    started = c.ask({"Trigger": "nightly"})["Started"]
    assert started == {"name": "nightly", "run": 1}
    finished = c.ask({"Wait": {"name": "nightly", "run": 1}})["Finished"]
    assert finished["exit_code"] == 4 and finished["outcome"] == "failure"
    assert finished["description"] == "exit status 4" and finished["tail"] == ["nightly"]
    # waiting on a finished run answers at once from history
    assert c.ask({"Wait": {"name": "nightly", "run": 1}})["Finished"]["run"] == 1
    assert "Error" in c.ask({"Wait": {"name": "nightly", "run": 99}})
    hist = c.ask({"History": {"name": "nightly", "limit": 5}})["History"]
    assert [h["run"] for h in hist] == [1]
    log = c.ask({"Log": {"name": "nightly", "lines": 3}})["Log"]
    assert log["lines"][1] == "nightly" and log["lines"][2].startswith("--- run=1 exit status 4")
    more = c.ask({"Log": {"name": "nightly", "lines": 0, "offset": log["offset"]}})["Log"]
    assert more["lines"] == [] and more["offset"] == log["offset"]
    assert c.ask("Ping") == {"Ok": "pong"}
    c.close()


@pytest.mark.parametrize("line, fragment", [
    (b"hello", "invalid request: not JSON"),
    (b"{\"Status\": ", "invalid request: not JSON"),
    (b"\"Bogus\"", "invalid request: unknown request 'Bogus'"),
    (b"{\"Run\": 5}", "invalid request: expected a job name"),
    (b"{\"Run\": \"tick\", \"x\": 1}", "invalid request: expected a request"),
    (b"[1, 2]", "invalid request: expected a request"),
    (b"{\"PauseFor\": {\"name\": \"tick\"}}", "invalid request: missing field 'seconds'"),
    (b"{\"PauseFor\": {\"name\": \"tick\", \"seconds\": -1}}", "invalid request: seconds must be a positive number"),
    (b"\xff\xfe", "invalid request: not JSON"),
    (b"", "invalid request: empty line"),
])
def test_malformed_requests_get_an_error_and_the_connection_stays_usable(daemon, line, fragment):
    c = Conn(sock(daemon))
    c.send_raw(line + b"\n")
    reply = c.recv()
    assert list(reply) == ["Error"] and reply["Error"].startswith(fragment), reply
    assert "Status" in c.ask("Status")
    c.close()


def test_unknown_job(daemon):
    for request in ({"Run": "x"}, {"Pause": "x"}, {"Resume": "x"}, {"History": {"name": "x"}}):
        assert daemon.request(request) == {"Error": "unknown job \"x\""}


def test_a_2_mib_line_is_refused_and_the_connection_goes_on(daemon):
    c = Conn(sock(daemon))
    c.send_raw(b'{"Run": "' + b"x" * (2 * 1024 * 1024) + b'"}\n')
    reply = c.recv()
    assert reply["Error"].startswith("invalid request: line longer than")
    assert "Status" in c.ask("Status")
    c.close()


def test_200_clients_beside_20_idle_and_one_half_line(daemon):
    idle = [Conn(sock(daemon)) for _ in range(20)]
    half = Conn(sock(daemon))
    half.send_raw(b'"Sta')
    runs_before = daemon.status("tick")["runs"]
    results: list[object] = []

    def client():
        try:
            c = Conn(sock(daemon), timeout=20)
            results.append(len(c.ask("Status")["Status"]))
            c.close()
        except Exception as exc:  # collected and asserted below
            results.append(exc)

    t0 = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - t0
    assert results == [2] * 200, [r for r in results if r != 2][:3]
    assert elapsed < 10, elapsed
    # the scheduler kept going meanwhile
    wait_for(lambda: daemon.status("tick")["runs"] >= runs_before + 2, 5)
    half.send_raw(b'tus"\n')
    assert "Status" in half.recv()
    for c in idle + [half]:
        c.close()


def _ask_as_nobody(path: str) -> bytes:
    """Connect as user nobody in a forked child; its answer (or error) comes back through a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        try:
            nobody = pwd.getpwnam("nobody")
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)
            s.connect(path)
            s.sendall(b'"Status"\n')
            os.write(w, read_line(s))
        except BaseException as exc:
            os.write(w, b"child failed: " + repr(exc).encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    return b"".join(chunks)


@pytest.mark.skipif(os.geteuid() != 0, reason="peer credentials are checked only when the daemon runs as root")
def test_as_root_only_root_and_socket_group_members_are_served(kenv):
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    import grp

    group = grp.getgrgid(nobody.pw_gid).gr_name
    for socket_group, allowed in ((None, False), (group, True)):
        daemon_cfg = {"kill_grace": "1s"} | ({"socket_group": socket_group} if socket_group else {})
        kenv.write_config(tomli_w.dumps({"job": JOBS[:1], "daemon": daemon_cfg}))
        kenv.start()
        # Let nobody reach the socket file at all, so the daemon's own check is what decides.
        for p in (kenv.root, kenv.home, kenv.home / ".local", kenv.home / ".local/state", kenv.state):
            os.chmod(p, 0o755)
        os.chmod(sock(kenv), 0o666)
        raw = _ask_as_nobody(str(sock(kenv)))
        assert not raw.startswith(b"child failed"), raw
        reply = json.loads(raw)
        if allowed:
            assert "Status" in reply
        else:
            assert reply == {"Error": "permission denied: not root or in socket_group"}
        assert kenv.ku("daemon", "stop").returncode == 0
