"""The real `ku` command in a temp home, as a new user would try it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import tomli_w

from conftest import KU, wait_for

JOBS = [
    {"name": "hello", "cron": "* * * * * *", "command": "echo hello from $KOKU_JOB"},
    {"name": "fails", "cron": "@yearly", "command": "echo about to fail; echo oops >&2; exit 7"},
]


def write(kenv, jobs=JOBS):
    kenv.write_config(tomli_w.dumps({"job": jobs, "daemon": {"kill_grace": "1s", "shutdown_grace": "2s"}}))


def test_init_then_check_in_an_empty_home(kenv):
    res = kenv.ku("init")
    assert res.returncode == 0, res.stderr
    assert kenv.config.exists()
    res = kenv.ku("check")
    assert res.returncode == 0, res.stderr
    assert "backup" in res.stdout and "cleanup" in res.stdout
    again = kenv.ku("init")
    assert again.returncode == 2 and "already exists" in again.stderr and "--force" in again.stderr
    assert kenv.ku("init", "--force").returncode == 0


def test_check_dst_example_from_the_issue(kenv):
    kenv.write_config('[[job]]\nname = "nightly"\ncron = "30 2 * * *"\ncommand = "true"\ntz = "America/New_York"\n')
    res = kenv.ku("check", "--json", "--next", "2", "--from", "2026-03-08T01:00:00-05:00")
    assert res.returncode == 0, res.stderr
    (job,) = json.loads(res.stdout)
    assert job["next"] == ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
    assert job["tz"] == "America/New_York"
    assert any("does not exist" in w or "DST" in w or "gap" in w for w in job["warnings"]), job["warnings"]
    table = kenv.ku("check", "--next", "2", "--from", "2026-03-08T01:00:00-05:00")
    assert "2026-03-08 03:00:00 -04:00" in table.stdout and "warning:" in table.stdout


@pytest.mark.parametrize("job, fragment", [
    ({"name": "x", "cron": "* * * * *", "comand": "true"}, 'job "x": unknown key "comand" (did you mean "command"?)'),
    ({"name": "x", "command": "true"}, 'job "x": missing key "cron"'),
    ({"name": "x", "cron": "0 0 30 2 *", "command": "true"}, "can never fire"),
    ({"name": "x", "cron": "61 * * * *", "command": "true"}, 'job "x": key "cron"'),
    ({"name": "x", "cron": "* * * * *", "command": "true", "timeout": "soon"}, 'job "x": key "timeout"'),
    ({"name": "x", "cron": "* * * * *", "command": "true", "on_error": "panic"}, 'job "x": key "on_error"'),
    ({"name": "x", "cron": "* * * * *", "command": "true", "tz": "Mars/Base"}, 'job "x": key "tz"'),
    ({"name": "x y", "cron": "* * * * *", "command": "true"}, 'key "name"'),
    ({"name": "x", "cron": "* * * * *", "command": "true", "overlap": "yes"}, 'job "x": key "overlap"'),
])
def test_a_broken_config_exits_2_naming_job_and_key(kenv, job, fragment):
    kenv.write_config(tomli_w.dumps({"job": [job]}))
    res = kenv.ku("check")
    assert res.returncode == 2
    assert fragment in res.stderr, res.stderr
    assert res.stderr.startswith("koku: error: ") and "Traceback" not in res.stderr


def test_commands_without_a_daemon_exit_3_and_say_how_to_start(kenv):
    write(kenv)
    for args in (["status"], ["run", "hello"], ["daemon", "status"], ["daemon", "stop"], ["reload"]):
        res = kenv.ku(*args)
        assert res.returncode == 3, (args, res.stderr)
        assert "ku daemon start" in res.stderr and "daemon.sock" in res.stderr


def test_usage_errors_exit_2(kenv):
    assert kenv.ku("frobnicate").returncode == 2
    assert kenv.ku("log", "x", "-n", "many").returncode == 2
    res = kenv.ku("pause", "x", "--for", "soonish")
    assert res.returncode == 2 and "soonish" in res.stderr


def test_status_run_wait_log_history_reload_stop(kenv):
    write(kenv)
    kenv.start()
    again = kenv.ku("daemon", "start")
    assert again.returncode == 0 and f"already running (pid {kenv.daemon_pid()})" in again.stdout

    wait_for(lambda: kenv.status("hello")["last_exit"] == 0, 5)
    table = kenv.ku("status").stdout.splitlines()
    assert table[0].split() == ["NAME", "STATE", "LAST", "RUN", "EXIT", "NEXT", "RUN"]
    fails_row = next(line for line in table if line.startswith("fails"))
    assert fails_row.split()[1:] == ["idle", "\u2014", "\u2014"] + fails_row.split()[4:]
    as_json = json.loads(kenv.ku("status", "--json").stdout)
    assert [j["name"] for j in as_json] == ["hello", "fails"]
    one = json.loads(kenv.ku("status", "fails", "--json").stdout)
    assert one["name"] == "fails" and one["schedule"] == "@yearly"

    res = kenv.ku("run", "fails", "--wait")
    assert res.returncode == 7
    assert res.stdout.splitlines() == ["about to fail", "oops"]
    assert "exit status 7" in res.stderr

    log = kenv.ku("log", "fails", "-n", "3")
    assert log.returncode == 0 and log.stdout.splitlines()[:2] == ["about to fail", "oops"]
    hist = kenv.ku("history", "fails", "--json")
    (record,) = json.loads(hist.stdout)
    assert record["exit_code"] == 7 and record["trigger"] == "manual"
    assert "exit status 7" in kenv.ku("history", "fails").stdout

    # A broken config on reload: every error printed, exit 2, the old config keeps running.
    good = kenv.config.read_text()
    write(kenv, JOBS + [{"name": "new", "cron": "bogus", "command": "true", "comand": "x"}])
    res = kenv.ku("reload")
    assert res.returncode == 2
    assert 'job "new": key "cron"' in res.stderr and 'unknown key "comand"' in res.stderr
    assert [j["name"] for j in kenv.request("Status")["Status"]] == ["hello", "fails"]
    runs = kenv.status("hello")["runs"]
    wait_for(lambda: kenv.status("hello")["runs"] > runs, 5, what="old config still running")
    kenv.config.write_text(good.replace('name = "fails"', 'name = "renamed"'))
    res = kenv.ku("reload")
    assert res.returncode == 0 and "added renamed" in res.stdout and "removed fails" in res.stdout
    assert kenv.ku("daemon", "status").returncode == 0

    pid = kenv.daemon_pid()
    res = kenv.ku("daemon", "stop")
    assert res.returncode == 0 and f"stopped (pid {pid})" in res.stdout
    assert not (kenv.state / "daemon.sock").exists() and not (kenv.state / "daemon.pid").exists()


def test_log_follow_prints_new_output(kenv):
    write(kenv)
    kenv.start()
    proc = subprocess.Popen(KU + ["log", "hello", "-f", "-n", "0"], env=kenv.env, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("---") or line.startswith("hello from hello")
        lines = [proc.stdout.readline() for _ in range(4)]
        assert any(l.startswith("hello from hello") for l in lines)
    finally:
        proc.terminate()
        proc.wait(5)


def test_client_commands_do_not_import_gevent_or_croniter(kenv):
    write(kenv)
    kenv.start()
    code = (
        "import sys; from koku.client.cli import main\n"
        "for args in (['status'], ['status', '--json'], ['history', 'hello'], ['pause', 'hello'],"
        " ['resume', 'hello'], ['log', 'hello'], ['daemon', 'status'], ['--version']):\n"
        "    assert main(args) == 0, args\n"
        "print(sorted(m for m in ('gevent', 'greenlet', 'croniter') if m in sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], env=kenv.env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_daemon_refuses_to_start_on_a_broken_config(kenv):
    kenv.write_config(tomli_w.dumps({"job": [{"name": "x", "cron": "nope", "command": "true"}]}))
    res = kenv.ku("daemon", "start")
    assert res.returncode == 2 and 'job "x": key "cron"' in res.stderr
    assert kenv.daemon_pid() is None


def test_daemon_run_in_the_foreground_stops_on_sigterm(kenv):
    write(kenv)
    proc = subprocess.Popen(KU + ["daemon", "run", "--log-format", "json"], env=kenv.env, stderr=subprocess.PIPE,
                            text=True, cwd=kenv.work)
    try:
        wait_for(lambda: (kenv.state / "daemon.sock").exists(), 10)
        wait_for(lambda: kenv.status("hello")["runs"] >= 1, 5)
        proc.terminate()
        assert proc.wait(15) == 0
        records = [json.loads(line) for line in proc.stderr.read().splitlines()]
        assert records[0]["msg"] == "daemon started" and records[-1]["msg"] == "daemon stopped"
        finished = [r for r in records if r["msg"] == "run finished"]
        assert finished and {"job", "run", "exit", "duration", "outcome", "next"} <= set(finished[0])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_check_resolves_a_relative_dir_against_the_config_not_the_cwd(kenv):
    """`ku check` run from elsewhere: an existing relative dir is fine; a missing one is warned about once."""
    (kenv.config.parent / "scripts").mkdir(parents=True)
    kenv.write_config('[[job]]\nname = "here"\ncron = "@daily"\ncommand = "true"\ndir = "scripts"\n'
                      '[[job]]\nname = "gone"\ncron = "@daily"\ncommand = "true"\ndir = "nope"\n')
    res = kenv.ku("check")  # kenv.ku runs from kenv.work, not the config's dir
    assert res.returncode == 0, res.stderr
    warnings = [line for line in (res.stdout + res.stderr).splitlines() if "warning" in line]
    missing = kenv.config.parent / "nope"
    assert warnings == [f'warning: job "gone": key "dir": directory "nope" ({missing}) does not exist'], warnings
    (job_here, job_gone) = json.loads(kenv.ku("check", "--json").stdout)
    assert job_here["warnings"] == [] and len(job_gone["warnings"]) == 1
