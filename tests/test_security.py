"""Root safety, against the real daemon (this machine and CI run as root).

Each test reproduces an attack from issue 10 and asserts on what the attacker would observe: a file
written by planted code, a file overwritten through a symlink, a socket that stops answering.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import tomli_w

from conftest import KU, alive, read_line, wait_for

pytestmark = pytest.mark.e2e

EVERY_SECOND = {"name": "tick", "cron": "* * * * * *", "command": "echo tick"}


def config(kenv, jobs=(EVERY_SECOND,), **daemon) -> None:
    kenv.write_config(tomli_w.dumps({"job": list(jobs), "daemon": {"kill_grace": "1s", "shutdown_grace": "2s",
                                                                     **daemon}}))


def ku_in(kenv, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(KU + list(args), env=kenv.env, capture_output=True, text=True, timeout=60, cwd=cwd)


# ----- 1. code from the caller's working directory -----------------------------------------------

def test_daemon_start_does_not_run_koku_main_from_the_cwd(kenv):
    config(kenv)
    hostile = kenv.root / "hostile"
    (hostile / "koku").mkdir(parents=True)
    marker = kenv.root / "PWNED-main"
    (hostile / "koku" / "__main__.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    (hostile / "koku" / "__init__.py").write_text("")
    res = ku_in(kenv, hostile, "daemon", "start")
    pid = kenv.daemon_pid()
    if pid:
        kenv.daemon_pids.add(pid)
    assert not marker.exists(), "koku/__main__.py from the caller's cwd ran in the daemon"
    assert res.returncode == 0, res.stderr + res.stdout
    assert kenv.request("Ping") == {"Ok": "pong"}


def test_daemon_never_imports_from_the_cwd_and_leaves_it(kenv):
    config(kenv)
    hostile = kenv.root / "hostile"
    hostile.mkdir()
    marker = kenv.root / "PWNED-ctypes"
    # Shadows the stdlib's ctypes, which the daemon needs (malloc_trim) a second after start.
    (hostile / "ctypes.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    res = ku_in(kenv, hostile, "daemon", "start")
    assert res.returncode == 0, res.stderr + res.stdout
    pid = kenv.daemon_pid()
    kenv.daemon_pids.add(pid)
    wait_for(lambda: kenv.status("tick")["runs"] >= 2, 10, what="two runs")  # past the 1 s malloc_trim
    assert not marker.exists(), "ctypes.py from the caller's cwd ran in the daemon"
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"-I" in cmdline, cmdline


# ----- 7. requests that got no answer ------------------------------------------------------------

HOSTILE_LINES = [
    b'{"Run":"\\ud800"}',
    b"[" * 100_000,
    b'{"PauseFor":{"name":"tick","seconds":1e300}}',
    b'{"PauseFor":{"name":"tick","seconds":NaN}}',
    b'{"PauseFor":{"name":"tick","seconds":Infinity}}',
]


def test_hostile_requests_get_an_invalid_request_answer_on_a_usable_connection(kenv):
    config(kenv)
    kenv.start()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(kenv.state / "daemon.sock"))
        for line in HOSTILE_LINES:
            s.sendall(line + b"\n")
            reply = json.loads(read_line(s))
            assert list(reply) == ["Error"], (line[:60], reply)
            assert reply["Error"].startswith("invalid request: "), (line[:60], reply)
            s.sendall(b'"Ping"\n')
            assert json.loads(read_line(s)) == {"Ok": "pong"}, line[:60]
    assert kenv.status("tick")["state"] == "idle"  # not paused by any of them
    assert "Traceback" not in kenv.daemon_log()
