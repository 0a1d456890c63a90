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
