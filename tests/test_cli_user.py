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


# -- item 3: ku run --wait streams the run's output live; Ctrl-C says the run goes on; ku cancel ----------
def _popen_ku(kenv, *args, **kw):
    import subprocess

    from conftest import KU

    return subprocess.Popen(KU + list(args), env=kenv.env, cwd=kenv.work, text=True, **kw)


def test_run_wait_streams_output_as_it_comes(kenv):
    import subprocess
    import time

    write(kenv, [{"name": "slow", "cron": "@yearly", "command": "echo first; sleep 4; echo second"}])
    kenv.start()
    t0 = time.monotonic()
    proc = _popen_ku(kenv, "run", "slow", "--wait", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == "first\n"
        assert time.monotonic() - t0 < 3.5  # before the run ends (4 s): live, not at the end
        assert kenv.status("slow")["state"] == "running"
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rest == "second\n" and proc.returncode == 0
    assert "slow run 1: exit status 0" in err


def test_run_wait_prints_only_its_own_run(kenv):
    write(kenv, [{"name": "multi", "cron": "@yearly", "overlap": True,
                  "command": 'for i in $(seq 1 30); do echo "run $KOKU_RUN_ID line $i"; sleep 0.05; done'}])
    kenv.start()
    assert kenv.ku("run", "multi").returncode == 0  # run 1, in the background
    res = kenv.ku("run", "multi", "--wait")
    assert res.returncode == 0, res.stderr
    # All 30 lines (not the last 20 of the record), none of run 1's, no log header or footer.
    assert res.stdout.splitlines() == [f"run 2 line {i}" for i in range(1, 31)]


def test_run_wait_says_when_output_was_cut(kenv):
    import subprocess
    import time

    write(kenv, [{"name": "loud", "cron": "@yearly", "command": "yes koku | head -c 20000000; echo; echo done"}])
    kenv.start()
    proc = _popen_ku(kenv, "run", "loud", "--wait", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # Nobody reads for a while: the pipe and then the socket fill, the daemon's bounded stream rolls on.
        from conftest import wait_for

        wait_for(lambda: kenv.status("loud")["last_outcome"] == "success", 60, what="the run to end")
        time.sleep(0.5)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "bytes of output not shown here" in err and "ku log loud" in err, err
    assert len(out) < 20_000_000 and out.endswith("\ndone\n")


def test_ctrl_c_leaves_the_run_going_and_ku_cancel_stops_it_with_kill_after_grace(kenv):
    import signal
    import subprocess

    from conftest import alive, wait_for

    pidfile = kenv.work / "pid"
    # The job ignores SIGTERM, so only the SIGKILL after kill_grace (1 s) ends it.
    write(kenv, [{"name": "stubborn", "cron": "@yearly",
                  "command": f"trap '' TERM; echo $$ > {pidfile}; echo started; sleep 60"}])
    kenv.start()
    proc = _popen_ku(kenv, "run", "stubborn", "--wait", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == "started\n"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert "stubborn run 1 goes on" in err and "ku log stubborn -f" in err and "ku cancel stubborn" in err, err
    job_pid = int(pidfile.read_text())
    assert alive(job_pid) and kenv.status("stubborn")["state"] == "running"

    res = kenv.ku("cancel", "stubborn")
    assert res.returncode == 0 and "cancelling stubborn run 1" in res.stdout, res.stderr
    wait_for(lambda: not alive(job_pid), 10, what="the job to be killed")
    record = wait_for(lambda: kenv.request({"History": {"name": "stubborn", "limit": 1}})["History"], 10)[0]
    assert record["outcome"] == "cancelled"
    assert record["description"] == "killed by SIGKILL after 1s grace (ku cancel)", record["description"]
    job = kenv.status("stubborn")
    assert job["state"] == "idle" and job["consecutive_failures"] == 0  # a cancel is not a failure
    assert "cancelled" in kenv.ku("status").stdout


def test_cancel_refuses_idle_and_unknown_jobs(kenv):
    write(kenv)
    kenv.start()
    idle = kenv.ku("cancel", "hello")
    assert idle.returncode == 1 and 'job "hello" is not running' in idle.stderr
    unknown = kenv.ku("cancel", "nope")
    assert unknown.returncode == 1 and 'unknown job "nope"' in unknown.stderr


# -- item 10: shell completion generated from the usage text ---------------------------------------------
def _complete_in_bash(kenv, *words: str) -> list[str]:
    """Load `ku completion bash` into a real bash and ask it to complete ``words`` (the last is the one
    being typed), as bash's programmable completion does."""
    import os
    import shlex
    import subprocess

    from conftest import KU

    bin_dir = os.path.dirname(KU[0]) if len(KU) == 1 else None
    env = dict(kenv.env)
    if bin_dir:
        env["PATH"] = f"{bin_dir}:{env['PATH']}"
    array = " ".join(shlex.quote(w) for w in ("ku", *words))
    script = (f"source <(ku completion bash) || exit 9; COMP_WORDS=({array}); COMP_CWORD={len(words)}; "
              "_ku; printf '%s\\n' \"${COMPREPLY[@]}\"")
    res = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60, cwd=kenv.work)
    assert res.returncode == 0, res.stderr
    return [line for line in res.stdout.splitlines() if line]


@pytest.mark.skipif(__import__("shutil").which("bash") is None, reason="no bash on this machine")
def test_bash_completion_completes_commands_subcommands_options_and_job_names(kenv):
    assert _complete_in_bash(kenv, "sta") == ["status"]
    assert _complete_in_bash(kenv, "daemon", "st") == ["start", "stop", "status"]
    assert _complete_in_bash(kenv, "--config", "x.toml", "re") == ["resume", "reload"]
    assert _complete_in_bash(kenv, "run", "--w") == ["--wait"]
    assert _complete_in_bash(kenv, "daemon", "run", "--log-format", "") == ["logfmt", "json"]
    assert "cancel" in _complete_in_bash(kenv, "")
    assert _complete_in_bash(kenv, "completion", "") == ["bash", "zsh", "fish"]
    write(kenv, [{"name": n, "cron": "@yearly", "command": "true"} for n in ("backup", "backup-db", "cleanup")])
    assert _complete_in_bash(kenv, "run", "ba") == []  # no daemon: nothing to offer, and no error
    kenv.start()
    assert _complete_in_bash(kenv, "run", "ba") == ["backup", "backup-db"]
    assert _complete_in_bash(kenv, "log", "-n", "5", "") == ["backup", "backup-db", "cleanup"]
    assert _complete_in_bash(kenv, "run", "backup", "") == []  # one job name only


def test_completion_scripts_follow_the_usage_text():
    from koku.client.cli import USAGE
    from koku.client.completion import script

    extra = USAGE.replace("  ku reload [options]\n", "  ku reload [options]\n  ku frobnicate <name> [--hard] [options]\n")
    extra = extra.replace("Options:\n", "Options:\n  --hard                 Frobnicate hard.\n", 1)
    for shell in ("bash", "zsh", "fish"):
        text = script(shell, USAGE)
        for command in ("init", "check", "daemon", "status", "run", "cancel", "log", "history", "completion"):
            assert command in text, (shell, command)
        assert "status --json" in text  # job names from the running daemon
        assert "frobnicate" not in text
        changed = script(shell, extra)
        assert "frobnicate" in changed and "hard" in changed, shell  # a new command shows up by itself
    assert "complete -F _ku ku koku" in script("bash", USAGE)
    assert script("zsh", USAGE).startswith("#compdef ku koku")
    assert "complete -c koku" in script("fish", USAGE)


def test_ku_completion_prints_the_script(kenv):
    res = kenv.ku("completion", "bash")
    assert res.returncode == 0 and res.stdout.startswith("# bash completion for ku")
    bad = kenv.ku("completion", "tcsh")
    assert bad.returncode == 2 and "bash, zsh, fish" in bad.stderr


# -- item 9: the smaller ones ------------------------------------------------------------------------
def test_status_of_one_job_names_the_zone_as_ku_check_does(kenv):
    write(kenv, [{"name": "here", "cron": "@yearly", "command": "true"},
                 {"name": "there", "cron": "@yearly", "command": "true", "tz": "Europe/Berlin"}])
    check = json.loads(kenv.ku("check", "--json").stdout)
    zones = {p["name"]: p["tz"] for p in check}
    assert zones["there"] == "Europe/Berlin"
    kenv.start()
    for name in ("here", "there"):
        details = kenv.ku("status", name).stdout
        tz_line = next(line for line in details.splitlines() if line.startswith("tz:"))
        assert tz_line.split()[1] == zones[name], (details, zones)
        assert kenv.status(name)["zone"] == zones[name]
    assert kenv.status("here")["tz"] is None  # the config's value, for kagaya, unchanged


def test_log_and_version_accept_json(kenv):
    write(kenv)
    kenv.start()
    assert kenv.ku("run", "hello", "--wait").returncode == 0
    res = kenv.ku("log", "hello", "--json")
    assert res.returncode == 0, res.stderr
    body = json.loads(res.stdout)
    assert body["name"] == "hello" and "hello" in body["lines"] and body["path"].endswith("hello.log")
    version = kenv.ku("--version", "--json")
    assert version.returncode == 0
    info = json.loads(version.stdout)
    assert set(info) == {"version", "native"} and info["version"] in kenv.ku("--version").stdout


def test_init_with_koku_config_pointing_at_a_directory_says_so(kenv):
    target = kenv.work / "confdir"
    target.mkdir()
    kenv.env["KOKU_CONFIG"] = str(target)
    for args in (["init"], ["init", "--force"]):
        res = kenv.ku(*args)
        assert res.returncode == 2
        assert f"{target} (from $KOKU_CONFIG) is a directory" in res.stderr, res.stderr
        assert "--force" not in res.stderr
    assert list(target.iterdir()) == []


def test_a_missing_config_given_with_dash_dash_config_mentions_it(kenv):
    for args in (["check"], ["daemon", "start"]):
        res = kenv.ku("--config", "/nope/x.toml", *args)
        assert res.returncode == 2
        assert "/nope/x.toml (given with --config) does not exist" in res.stderr, res.stderr
        assert '"ku --config /nope/x.toml init"' in res.stderr
    default = kenv.ku("check")
    assert default.returncode == 2 and '"ku init"' in default.stderr and "--config" in default.stderr


def _shell_env(kenv):
    import os

    from conftest import KU

    env = dict(kenv.env)
    if len(KU) == 1:
        env["PATH"] = f"{os.path.dirname(KU[0])}:{env['PATH']}"
    return env


@pytest.mark.skipif(__import__("shutil").which("fish") is None, reason="no fish on this machine")
def test_fish_completion_in_a_real_fish(kenv):
    import subprocess

    def complete(line: str) -> list[str]:
        res = subprocess.run(["fish", "--no-config", "-c", f"ku completion fish | source; complete -C {line!r}"],
                             env=_shell_env(kenv), capture_output=True, text=True, timeout=60, cwd=kenv.work)
        assert res.returncode == 0, res.stderr
        return [line.split("\t")[0] for line in res.stdout.splitlines()]

    assert complete("ku sta") == ["status"]
    assert complete("ku daemon st") == ["start", "status", "stop"]
    assert complete("ku run --w") == ["--wait"]  # not import's --write
    write(kenv, [{"name": n, "cron": "@yearly", "command": "true"} for n in ("backup", "cleanup")])
    kenv.start()
    assert complete("ku run ba") == ["backup"]


@pytest.mark.skipif(__import__("shutil").which("zsh") is None, reason="no zsh on this machine")
def test_zsh_completion_function_in_a_real_zsh(kenv):
    import subprocess

    # zsh's completion widgets need a terminal; the function's own logic runs in a real zsh with the
    # completion system's builtins replaced by ones that print what they are offered (filtered by PREFIX).
    harness = r'''
compdef() { : }
_describe() { local item; for item in "${(@P)2}"; do item=${item%%:*}; [[ $item == ${PREFIX}* ]] && print -r -- $item; done }
compadd() { local a; local -a items; if [[ $1 == -a ]]; then items=("${(@P)2}"); else [[ $1 == -- ]] && shift; items=("$@"); fi
  for a in $items; do [[ $a == ${PREFIX}* ]] && print -r -- $a; done }
_files() { print -r -- FILES }
source <(ku completion zsh) || exit 9
words=(${=WORDS}); CURRENT=${#words}; PREFIX=${words[-1]}
[[ $WORDS == *' ' ]] && { words+=(''); CURRENT=${#words}; PREFIX='' }
_ku
'''

    def complete(line: str) -> list[str]:
        env = {**_shell_env(kenv), "WORDS": line}
        res = subprocess.run(["zsh", "-f", "-c", harness], env=env, capture_output=True, text=True, timeout=60,
                             cwd=kenv.work)
        assert res.returncode != 9 and res.stderr == "", res.stderr  # the status is the last test's
        return res.stdout.split()

    assert complete("ku sta") == ["status"]
    assert complete("ku daemon st") == ["start", "stop", "status"]
    assert complete("ku run --w") == ["--wait"]
    write(kenv, [{"name": n, "cron": "@yearly", "command": "true"} for n in ("backup", "cleanup")])
    kenv.start()
    assert complete("ku log ") == ["backup", "cleanup"]


def test_run_wait_on_a_terminal_ends_output_without_newline_before_its_closing_line(kenv):
    from test_status import run_in_pty

    write(kenv, [{"name": "px", "cron": "@yearly", "command": "printf x"}])
    kenv.start()
    assert run_in_pty(kenv, "run", "px", "--wait") == "x\n"  # then "px run 1: exit status 0" on stderr
    assert kenv.ku("run", "px", "--wait").stdout == "x"  # into a pipe: the bytes as the job wrote them
