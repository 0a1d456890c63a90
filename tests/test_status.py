"""What `ku status` tells a user about how each job's last run ended (issue 12, item 1)."""

from __future__ import annotations

import os
import pty
import signal
import subprocess

import pytest
import tomli_w

from conftest import KU, alive, wait_for

pytestmark = pytest.mark.e2e

RED = "\033[31m"

JOBS = [
    {"name": "ok", "cron": "@yearly", "command": "true"},
    {"name": "bad", "cron": "@yearly", "command": "exit 3"},
    {"name": "tmo", "cron": "@yearly", "command": "sleep 30", "timeout": "1s"},
    {"name": "sig", "cron": "@yearly", "command": "kill -TERM $$"},
    {"name": "err", "cron": "@yearly", "command": "true", "dir": "/nonexistent/koku-test"},
    {"name": "never", "cron": "@yearly", "command": "true"},
]

EXPECTED = {"ok": "0", "bad": "3", "tmo": "timeout", "sig": "SIGTERM", "err": "error", "never": "\u2014"}


def write(kenv, jobs=JOBS):
    kenv.write_config(tomli_w.dumps({"job": jobs, "daemon": {"kill_grace": "1s", "shutdown_grace": "2s"}}))


def exit_column(table: str) -> dict[str, str]:
    rows = [line.split() for line in table.splitlines()[1:]]
    return {row[0]: row[4] if row[2] != "\u2014" else row[3] for row in rows}


def run_in_pty(kenv, *args: str, env: dict[str, str] | None = None) -> str:
    """Run `ku` with its stdout on a terminal, as a user at a shell would; returns what it wrote."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(KU + list(args), env=env or kenv.env, stdout=slave, stderr=subprocess.PIPE,
                                cwd=kenv.work)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO once the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(30) == 0, proc.stderr.read()
        proc.stderr.close()
    finally:
        os.close(master)
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_status_exit_column_says_how_the_last_run_ended(kenv):
    write(kenv)
    kenv.start()
    for name in ("ok", "bad", "tmo", "sig", "err"):
        kenv.ku("run", name, "--wait", timeout=30)
    res = kenv.ku("status")
    assert res.returncode == 0, res.stderr
    assert exit_column(res.stdout) == EXPECTED, res.stdout
    assert RED not in res.stdout  # not a terminal: no colour codes in a pipe
    job = kenv.status("sig")
    assert job["last_exit"] is None and job["last_signal"] == signal.SIGTERM  # kagaya's field keeps its meaning


def test_status_failures_stand_out_on_a_terminal_unless_no_color(kenv):
    write(kenv)
    kenv.start()
    for name in ("ok", "bad", "tmo"):
        kenv.ku("run", name, "--wait", timeout=30)
    coloured = run_in_pty(kenv, "status")
    lines = {line.split()[0]: line for line in coloured.splitlines()[1:] if line.strip()}
    assert f"{RED}3\033[0m" in lines["bad"] and f"{RED}timeout\033[0m" in lines["tmo"], coloured
    assert "\033[" not in lines["ok"]
    plain = run_in_pty(kenv, "status", env={**kenv.env, "NO_COLOR": "1"})
    assert "\033[" not in plain and exit_column(plain)["bad"] == "3"


def test_status_shows_interrupted_after_a_daemon_crash(kenv):
    write(kenv, [{"name": "long", "cron": "@yearly", "command": "sleep 30"}])
    pid = kenv.start()
    kenv.ku("run", "long")
    child = wait_for(lambda: kenv.status("long")["pid"], 10, what="the run's pid")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 10)
    try:
        kenv.start()
        assert exit_column(kenv.ku("status").stdout) == {"long": "interrupted"}
    finally:
        try:
            os.killpg(child, signal.SIGKILL)  # the orphaned run: a crash leaves it to whoever restarts
        except ProcessLookupError:
            pass
