"""The real `ku` where a new user meets it (issue 12, items 3, 4, 5, 9, 10)."""

from __future__ import annotations

import json

import pytest
import tomli_w

pytestmark = pytest.mark.e2e

DAEMON = {"kill_grace": "1s", "shutdown_grace": "2s"}
JOBS = [{"name": "hello", "cron": "@yearly", "command": "echo hello"}]


def write(kenv, jobs=JOBS, path=None):
    text = tomli_w.dumps({"job": jobs, "daemon": DAEMON})
    if path is None:
        return kenv.write_config(text)
    path.write_text(text)
    return path


# -- item 4: one daemon per state dir, and it says which config it runs ------------------------------------
def test_second_daemon_with_another_config_names_both_and_fails(kenv):
    write(kenv)
    pid = kenv.start()
    other = write(kenv, [{"name": "other", "cron": "@yearly", "command": "true"}], kenv.work / "other.toml")
    res = kenv.ku("--config", str(other), "daemon", "start")
    assert res.returncode == 1, res.stdout + res.stderr
    assert str(kenv.config) in res.stderr and str(other) in res.stderr and f"pid {pid}" in res.stderr, res.stderr
    assert res.stderr.startswith("koku: error: ") and "KOKU_STATE_DIR" in res.stderr
    # The same config again is not an error.
    same = kenv.ku("--config", str(kenv.config), "daemon", "start")
    assert same.returncode == 0 and f"already running (pid {pid})" in same.stdout


def test_reload_with_another_config_says_so(kenv):
    write(kenv)
    kenv.start()
    other = write(kenv, [{"name": "other", "cron": "@yearly", "command": "true"}], kenv.work / "other.toml")
    res = kenv.ku("--config", str(other), "reload")
    assert res.returncode == 1
    assert str(kenv.config) in res.stderr and str(other) in res.stderr, res.stderr
    assert [j["name"] for j in kenv.request("Status")["Status"]] == ["hello"]  # nothing was reloaded
    assert kenv.ku("--config", str(kenv.config), "reload").returncode == 0
    assert kenv.ku("reload").returncode == 0


# -- item 5: usage errors in words, a short usage, exit 2 ------------------------------------------------
@pytest.mark.parametrize("argv, first_line, usage_line", [
    (["stauts"], 'koku: unknown command "stauts" (did you mean "status"?)', "usage: ku <command> [options]; commands: init, check"),
    (["run"], 'koku: "ku run" needs <name> (a job name)', "  ku run <name> [--wait] [options]"),
    (["log"], 'koku: "ku log" needs <name> (a job name)', "  ku log <name> [-n N] [-f] [options]"),
    (["daemon", "strat"], 'koku: unknown command "daemon strat" (did you mean "daemon start"?)',
     "  ku daemon start [options]"),
    (["daemon"], 'koku: "ku daemon" needs one of: start, stop, status, run', "  ku daemon stop [options]"),
    (["run", "x", "--wiat"], 'koku: unknown option "--wiat" for "ku run" (did you mean "--wait"?)',
     "  ku run <name> [--wait] [options]"),
    (["pause", "x", "--for"], 'koku: option "--for" needs a value', "  ku pause <name>"),
    (["status", "a", "b"], 'koku: unexpected argument "b" for "ku status"', "  ku status [<name>] [options]"),
])
def test_usage_errors_say_what_is_wrong_with_a_short_usage(kenv, argv, first_line, usage_line):
    res = kenv.ku(*argv)
    assert res.returncode == 2
    lines = res.stderr.splitlines()
    assert lines[0] == first_line, res.stderr
    assert any(line.startswith(usage_line) for line in lines[1:]), res.stderr
    assert "Argument(" not in res.stderr and "Warning" not in res.stderr
    assert len(lines) <= 7, res.stderr  # short: not the whole usage text
    assert res.stdout == ""
