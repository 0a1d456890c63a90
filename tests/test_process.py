"""Real /bin/sh children. Every process group a test starts is checked at teardown: a live leftover is
killed by its group id and fails the test.

Orphaned grandchildren are reparented to PID 1, which in some containers never reaps them, so "gone"
here means "no such pid or a zombie".

The /proc readers below are this file's own on purpose, not koku.core.procinfo: a check that shares
the code it checks would share its bugs.
"""

from __future__ import annotations

import gc
import os
import signal
import stat
from pathlib import Path
from typing import Callable, Iterator

import gevent
import pytest

from koku.daemon.clock import GeventClock
from koku.core.joblog import JobLog
from koku.core.model import Outcome, RunResult
from koku.daemon.process import ProcessRun, describe_exit, group_alive, kill_group

CLOCK = GeventClock()
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C"}


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of a pid, or None if it does not exist."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2])


def _all_stats() -> Iterator[tuple[int, str, int, int]]:
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _proc_stat(int(name))
            if st is not None:
                yield (int(name), *st)


def live_members(pgid: int) -> list[int]:
    return [pid for pid, state, _ppid, pgrp in _all_stats() if pgrp == pgid and state not in "ZX"]


def my_children() -> list[int]:
    me = os.getpid()
    return [pid for pid, _state, ppid, _pgrp in _all_stats() if ppid == me]


def is_gone(pid: int) -> bool:
    st = _proc_stat(pid)
    return st is None or st[0] in "ZX"


def wait_gone(pid: int, within: float = 2.0) -> bool:
    deadline = CLOCK.monotonic() + within
    while not is_gone(pid):
        if CLOCK.monotonic() > deadline:
            return False
        gevent.sleep(0.02)
    return True


def wait_for_file(path: Path, within: float = 5.0) -> str:
    deadline = CLOCK.monotonic() + within
    while not (path.exists() and path.read_text().endswith("\n")):
        assert CLOCK.monotonic() < deadline, f"{path} never written"
        gevent.sleep(0.02)
    return path.read_text().strip()


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


Make = Callable[..., ProcessRun]


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Make]:
    """Build a ProcessRun with test defaults; every started group is checked and cleaned at teardown."""
    runs: list[ProcessRun] = []
    logs: list[JobLog] = []

    def factory(command: str, **kw: object) -> ProcessRun:
        log = kw.pop("log", None) or JobLog(tmp_path / "job.log", max_bytes=10_000_000, keep=1)
        logs.append(log)  # type: ignore[arg-type]
        kw.setdefault("shell", "/bin/sh")
        kw.setdefault("cwd", str(tmp_path))
        kw.setdefault("env", ENV)
        kw.setdefault("timeout", 10.0)
        kw.setdefault("kill_grace", 0.5)
        kw.setdefault("clock", CLOCK)
        run = ProcessRun(command, log=log, **kw)  # type: ignore[arg-type]
        runs.append(run)
        return run

    yield factory

    leftovers = []
    live_groups = {pgrp for _pid, state, _ppid, pgrp in _all_stats() if state not in "ZX"}
    for run in runs:
        if run.result is None and run.pid is not None:
            run.cancel(0.0)
            leftovers.append(f"run of pid {run.pid} still running")
        if run.pid is not None and run.pid in live_groups:
            alive = live_members(run.pid)
            if alive:
                kill_group(run.pid, signal.SIGKILL)
                leftovers.append(f"group {run.pid} left {alive}")
        if run.pid is not None and run.result is None:
            run.wait()
    for log in logs:
        log.close()
    assert not leftovers


def run_to_end(make: Make, command: str, **kw: object) -> RunResult:
    run = make(command, **kw)
    run.start()
    return run.wait()


# -- describe_exit ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, kwargs, expected",
    [
        ((0,), {}, "exit status 0"),
        ((2,), {}, "exit status 2"),
        ((-15,), {}, "terminated by SIGTERM"),
        ((-9,), {}, "killed by SIGKILL"),
        ((-11,), {}, "terminated by SIGSEGV"),
        ((-15,), {"timed_out": 5.0}, "timed out after 5s; terminated by SIGTERM"),
        ((-9,), {"timed_out": 5, "killed_after_grace": 10}, "timed out after 5s; killed by SIGKILL after 10s grace"),
        ((143,), {"timed_out": 0.5}, "timed out after 0.5s; exit status 143"),
        ((-9,), {"timed_out": 1800, "killed_after_grace": 10}, "timed out after 30m; killed by SIGKILL after 10s grace"),
        ((-15,), {"cancelled": True}, "terminated by SIGTERM (daemon shutdown)"),
        ((-9,), {"killed_after_grace": 3, "cancelled": True}, "killed by SIGKILL after 3s grace (daemon shutdown)"),
        ((None,), {"not_started": "dir /nope does not exist"}, "could not start: dir /nope does not exist"),
        ((None,), {"not_started": "shell /bin/nosh not found"}, "could not start: shell /bin/nosh not found"),
        ((None,), {"cancelled": True}, "not started (daemon shutdown)"),
        ((-200,), {}, "terminated by signal 200"),
    ],
)
def test_describe_exit(args: tuple, kwargs: dict, expected: str) -> None:
    assert describe_exit(*args, **kwargs) == expected


# -- exits ------------------------------------------------------------------------------------------


def test_exit_zero_is_success(make: Make) -> None:
    result = run_to_end(make, "echo hello")
    assert (result.outcome, result.description, result.exit_code, result.signal) == (
        Outcome.SUCCESS, "exit status 0", 0, None)
    assert result.tail == ("hello",)
    assert result.pid and result.started_mono is not None and result.ended_mono >= result.started_mono


def test_exit_two_is_failure(make: Make) -> None:
    result = run_to_end(make, "echo oops >&2; exit 2")
    assert (result.outcome, result.description, result.exit_code) == (Outcome.FAILURE, "exit status 2", 2)
    assert result.tail == ("oops",)


@pytest.mark.parametrize(
    "sig, description",
    [("TERM", "terminated by SIGTERM"), ("KILL", "killed by SIGKILL"), ("SEGV", "terminated by SIGSEGV")],
)
def test_killed_by_signal_is_failure(make: Make, sig: str, description: str) -> None:
    result = run_to_end(make, f"kill -{sig} $$")
    assert result.outcome is Outcome.FAILURE
    assert result.description == description
    assert result.exit_code is None and result.signal == getattr(signal, "SIG" + sig)


def test_missing_dir_is_error(make: Make, tmp_path: Path) -> None:
    run = make("echo never", cwd=str(tmp_path / "nope"))
    run.start()
    result = run.wait()
    assert result.outcome is Outcome.ERROR
    assert result.description == f"could not start: dir {tmp_path / 'nope'} does not exist"
    assert result.pid is None and run.pid is None and result.exit_code is None and result.tail == ()


def test_dir_that_is_a_file_is_error(make: Make, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = run_to_end(make, "true", cwd=str(tmp_path / "file"))
    assert result.outcome is Outcome.ERROR
    assert result.description == f"could not start: dir {tmp_path / 'file'} is not a directory"


def test_missing_shell_is_error(make: Make) -> None:
    result = run_to_end(make, "true", shell="/bin/nosh")
    assert (result.outcome, result.description) == (Outcome.ERROR, "could not start: shell /bin/nosh not found")


def test_shell_not_executable_is_permission_denied(make: Make, tmp_path: Path) -> None:
    shell = tmp_path / "noexec-sh"
    shell.write_text("#!/bin/sh\n")
    shell.chmod(stat.S_IRUSR | stat.S_IWUSR)  # even root cannot exec a file without any x bit
    result = run_to_end(make, "true", shell=str(shell))
    assert result.outcome is Outcome.ERROR
    assert result.description == f"could not start: permission denied: shell {shell}"


def test_fork_failure_is_error_and_closes_the_pipe(make: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import koku.daemon.process

    def no_fork(*args: object, **kwargs: object) -> None:
        raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))

    monkeypatch.setattr(koku.daemon.process, "Popen", no_fork)
    fds_before = len(os.listdir("/proc/self/fd"))
    result = run_to_end(make, "true")
    assert (result.outcome, result.description) == (
        Outcome.ERROR, "could not start: cannot fork: Resource temporarily unavailable")
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_nul_byte_in_env_is_error(make: Make) -> None:
    result = run_to_end(make, "true", env={**ENV, "BAD": "a\0b"})
    assert result.outcome is Outcome.ERROR
    assert result.description.startswith("could not start: invalid command or environment: ")


def test_env_and_cwd_reach_the_child(make: Make, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    env = {**ENV, "KOKU_TEST": "a b  c"}
    # cwd arrives resolved (koku.core.config.resolve_dir expands ~); ProcessRun uses it as given.
    result = run_to_end(make, 'pwd; echo "$KOKU_TEST"; echo "${HOME-unset}"', cwd=str(tmp_path / "sub"), env=env)
    assert result.tail == (str(tmp_path / "sub"), "a b  c", "unset")


def test_child_has_own_session_and_null_stdin(make: Make) -> None:
    # cat would block forever on an inherited stdin; /dev/null gives it EOF at once.
    result = run_to_end(make, "cat; awk '{print $5, $6}' /proc/$$/stat", timeout=5.0)
    assert result.outcome is Outcome.SUCCESS
    assert result.tail == (f"{result.pid} {result.pid}",)  # pgrp and session are the child's own


# -- timeouts ---------------------------------------------------------------------------------------


def test_timeout_kills_grandchild(make: Make, tmp_path: Path) -> None:
    start = CLOCK.monotonic()
    result = run_to_end(make, "sleep 300 & echo $! > gc.pid; wait", timeout=0.5, kill_grace=0.5)
    elapsed = CLOCK.monotonic() - start
    grandchild = int((tmp_path / "gc.pid").read_text())
    assert result.outcome is Outcome.TIMEOUT
    assert result.description == "timed out after 0.5s; terminated by SIGTERM"
    assert result.signal == signal.SIGTERM and result.exit_code is None
    assert wait_gone(grandchild, within=1.0)
    assert 0.5 <= elapsed < 3.0


def test_timeout_job_trapping_term_gets_kill_after_grace(make: Make, tmp_path: Path) -> None:
    start = CLOCK.monotonic()
    result = run_to_end(make, "trap '' TERM; sleep 300 & echo $! > gc.pid; wait", timeout=0.5, kill_grace=0.5)
    elapsed = CLOCK.monotonic() - start
    assert result.outcome is Outcome.TIMEOUT
    assert result.description == "timed out after 0.5s; killed by SIGKILL after 0.5s grace"
    assert result.signal == signal.SIGKILL
    assert wait_gone(int((tmp_path / "gc.pid").read_text()), within=1.0)
    assert 1.0 <= elapsed < 3.0


def test_grandchild_ignoring_term_is_killed_after_leader_exits(make: Make, tmp_path: Path) -> None:
    start = CLOCK.monotonic()
    result = run_to_end(
        make, "sh -c \"trap '' TERM; exec sleep 300\" & echo $! > gc.pid; wait", timeout=0.5, kill_grace=0.5
    )
    elapsed = CLOCK.monotonic() - start
    assert result.description == "timed out after 0.5s; terminated by SIGTERM"
    assert wait_gone(int((tmp_path / "gc.pid").read_text()), within=1.0)
    assert elapsed >= 1.0  # it had to wait out the grace before the KILL


def test_timeout_enforced_without_a_waiter(make: Make) -> None:
    run = make("sleep 300", timeout=0.3, kill_grace=0.2)
    run.start()
    deadline = CLOCK.monotonic() + 3.0
    while run.result is None and CLOCK.monotonic() < deadline:
        gevent.sleep(0.05)
    assert run.result is not None and run.result.outcome is Outcome.TIMEOUT


# -- cancellation -----------------------------------------------------------------------------------


def _cancel_after(run: ProcessRun, delay: float, grace: float) -> gevent.Greenlet:
    def cancel() -> None:
        gevent.sleep(delay)
        run.cancel(grace)

    return gevent.spawn(cancel)


def test_cancel_terminates_group(make: Make, tmp_path: Path) -> None:
    run = make("sleep 300 & echo $! > gc.pid; wait", timeout=None)
    run.start()
    canceller = _cancel_after(run, 0.2, 5.0)
    start = CLOCK.monotonic()
    result = run.wait()
    canceller.join()
    assert result.outcome is Outcome.CANCELLED
    assert result.description == "terminated by SIGTERM (daemon shutdown)"
    assert CLOCK.monotonic() - start < 2.0  # TERM worked; the 5 s grace was not waited out
    assert wait_gone(int((tmp_path / "gc.pid").read_text()))


def test_cancel_kills_after_grace(make: Make) -> None:
    run = make("trap '' TERM; sleep 300; echo unreachable", timeout=None)
    run.start()
    _cancel_after(run, 0.2, 0.3).join()
    result = run.wait()
    assert (result.outcome, result.description) == (
        Outcome.CANCELLED, "killed by SIGKILL after 0.3s grace (daemon shutdown)")


def test_cancel_shortens_timeout_grace_but_stays_timeout(make: Make) -> None:
    run = make("trap '' TERM; sleep 300; echo unreachable", timeout=0.2, kill_grace=60.0)
    run.start()
    _cancel_after(run, 0.5, 0.2)
    start = CLOCK.monotonic()
    result = run.wait()
    assert CLOCK.monotonic() - start < 3.0
    assert result.outcome is Outcome.TIMEOUT
    assert result.description.startswith("timed out after 0.2s; killed by SIGKILL after ")


def test_cancel_before_start_does_not_spawn(make: Make, tmp_path: Path) -> None:
    run = make("touch spawned")
    run.cancel(1.0)
    run.start()
    result = run.wait()
    assert (result.outcome, result.description, run.pid) == (
        Outcome.CANCELLED, "not started (daemon shutdown)", None)
    assert not (tmp_path / "spawned").exists()


def test_cancel_after_end_changes_nothing(make: Make) -> None:
    run = make("exit 3")
    run.start()
    result = run.wait()
    run.cancel(0.0)
    assert run.wait() is result and result.outcome is Outcome.FAILURE


# -- output -----------------------------------------------------------------------------------------


def test_output_goes_to_log_in_order_and_tail_keeps_last_20(make: Make, tmp_path: Path) -> None:
    log = JobLog(tmp_path / "o.log", max_bytes=1_000_000, keep=1)
    log.write_line("--- header")
    result = run_to_end(
        make, "i=1; while [ $i -le 100 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done", log=log
    )
    log.write_line("--- footer")
    log.close()
    expected = ["--- header"] + [f"{s}{i}" for i in range(1, 101) for s in ("out", "err")] + ["--- footer"]
    assert (tmp_path / "o.log").read_text().splitlines() == expected
    assert result.tail == tuple(expected[-21:-1])


def test_tail_caps_line_length(make: Make) -> None:
    result = run_to_end(make, "head -c 5000 /dev/zero | tr '\\0' x; echo; echo end")
    assert result.tail == ("x" * 1000, "end")


def test_huge_output_keeps_memory_flat_and_rotates(make: Make, tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    line = "koku output line 0123456789 abcdefghijklmnopqrstuvwxyz"
    command = f"yes '{line}' | head -c {{size}}; echo; echo done"
    # Warm up first so one-time allocations (gevent's hub, the read buffer) are not counted.
    run_to_end(make, command.format(size=5_000_000), log=JobLog(path, max_bytes=4_000_000, keep=2))
    gc.collect()
    before = rss_kb()
    log = JobLog(path, max_bytes=4_000_000, keep=2)
    result = run_to_end(make, command.format(size=200_000_000), log=log, timeout=60.0)
    log.close()
    growth_mb = (rss_kb() - before) / 1024
    assert result.outcome is Outcome.SUCCESS
    assert growth_mb < 20, f"RSS grew by {growth_mb:.1f} MB"
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("big.log"))
    assert names == ["big.log", "big.log.1", "big.log.2"]
    assert all((tmp_path / n).stat().st_size <= 4_000_000 for n in names)
    assert result.tail[-1] == "done" and result.tail[-3] == line
    assert (tmp_path / "big.log").read_text().endswith("\ndone\n")


def test_rotation_happens_during_a_run(make: Make, tmp_path: Path) -> None:
    path = tmp_path / "r.log"
    log = JobLog(path, max_bytes=2_000, keep=2)
    run = make(
        "i=0; while [ $i -lt 500 ]; do echo line $i; i=$((i+1)); done; echo > printed; sleep 300",
        log=log, timeout=None,
    )
    run.start()
    wait_for_file(tmp_path / "printed")
    deadline = CLOCK.monotonic() + 2.0
    while not (tmp_path / "r.log.2").exists() and CLOCK.monotonic() < deadline:
        gevent.sleep(0.02)
    assert run.result is None  # still running
    assert (tmp_path / "r.log.1").exists() and (tmp_path / "r.log.2").exists()
    assert not (tmp_path / "r.log.3").exists()
    run.cancel(0.5)
    run.wait()
    log.close()
    assert path.read_text().endswith("line 499\n")


# -- drain ------------------------------------------------------------------------------------------


def test_background_grandchild_holding_pipe_does_not_hang_wait(make: Make, tmp_path: Path) -> None:
    run = make("sleep 300 & echo $! > gc.pid; echo hi", drain=0.5)
    run.start()
    start = CLOCK.monotonic()
    result = run.wait()
    elapsed = CLOCK.monotonic() - start
    grandchild = int((tmp_path / "gc.pid").read_text())
    try:
        assert result.outcome is Outcome.SUCCESS and result.tail == ("hi",)
        assert 0.4 <= elapsed < 2.5
        assert not is_gone(grandchild)  # a normal exit does not kill what the job left behind
    finally:
        os.kill(grandchild, signal.SIGKILL)
    assert wait_gone(grandchild)


def test_drain_collects_late_output_until_eof(make: Make) -> None:
    start = CLOCK.monotonic()
    result = run_to_end(make, "(sleep 0.3; echo late) & echo early", drain=5.0)
    assert result.tail == ("early", "late")
    assert CLOCK.monotonic() - start < 2.0  # returned at EOF, not after the whole drain


# -- resources --------------------------------------------------------------------------------------


def test_many_runs_leave_no_zombies_or_fds(make: Make, tmp_path: Path) -> None:
    log = JobLog(tmp_path / "many.log", max_bytes=1_000_000, keep=1)
    run_to_end(make, "echo warm", log=log)  # gevent opens its watchers on first use
    log.close()
    fds_before = len(os.listdir("/proc/self/fd"))
    for i in range(300):
        result = run_to_end(make, f"echo {i}", log=log)
        log.close()
        assert result.outcome is Outcome.SUCCESS
    gevent.sleep(0.1)
    assert my_children() == []
    assert len(os.listdir("/proc/self/fd")) == fds_before
    assert (tmp_path / "many.log").read_text().splitlines()[-1] == "299"


def test_error_runs_leak_no_fds(make: Make, tmp_path: Path) -> None:
    run_to_end(make, "true")
    fds_before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        assert run_to_end(make, "true", shell="/bin/nosh").outcome is Outcome.ERROR
        assert run_to_end(make, "true", cwd=str(tmp_path / "nope")).outcome is Outcome.ERROR
    assert len(os.listdir("/proc/self/fd")) == fds_before
    assert my_children() == []


# -- groups -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("pgid", [0, 1, -1])
def test_kill_group_refuses_own_or_all_groups(pgid: int) -> None:
    with pytest.raises(ValueError):
        kill_group(pgid, signal.SIGTERM)
    with pytest.raises(ValueError):
        group_alive(pgid)


def test_group_alive_and_kill_group(make: Make) -> None:
    run = make("sleep 300", timeout=None)
    run.start()
    assert run.pid is not None
    assert group_alive(run.pid)
    assert kill_group(run.pid, signal.SIGKILL)
    result = run.wait()
    assert result.description == "killed by SIGKILL"
    assert wait_gone(run.pid)
    assert not group_alive(run.pid)


def test_kill_group_on_a_vanished_group_is_false(make: Make) -> None:
    result = run_to_end(make, "exit 0")  # a lone shell: once reaped, nothing holds its group id
    assert result.pid is not None
    assert not kill_group(result.pid, signal.SIGTERM)
    assert not group_alive(result.pid)


def test_spawn_uses_the_stdlib_c_path_and_leaves_nothing_for_it_to_reap(tmp_path: Path) -> None:
    # In a fresh interpreter, so modules imported by other tests do not count: gevent.subprocess (which
    # forks and runs Python in the child) must not be loaded at all, and the stdlib must not be left
    # holding Popen objects it would later waitpid() on (their pids may by then belong to other runs).
    import subprocess
    import sys

    code = f"""
import subprocess, sys, gevent
from pathlib import Path
from koku.daemon.clock import GeventClock
from koku.core.joblog import JobLog
from koku.daemon.process import ProcessRun
log = JobLog(Path({str(tmp_path)!r}) / "c.log", max_bytes=1_000_000, keep=1)
for i in range(20):
    run = ProcessRun("exit 3", shell="/bin/sh", cwd=None, env={{"PATH": "/usr/bin:/bin"}}, log=log,
                     timeout=5.0, kill_grace=0.5, clock=GeventClock())
    run.start()
    assert run.wait().exit_code == 3
    del run
import gc; gc.collect()
print("gevent.subprocess" in sys.modules, len(subprocess._active))
"""
    res = subprocess.run([sys.executable, "-W", "always::ResourceWarning", "-c", code], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["False", "0"]
    assert "still running" not in res.stderr  # Popen.__del__ would waitpid() the pid again
