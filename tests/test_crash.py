"""Crash safety and the singleton (issue 10, items 8-15): the real daemon, killed, reloaded, starved.

Each test is named after what broke. Every one of them failed on the code before its fix.
"""

from __future__ import annotations

import json
import math
import random
import os
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import KU, alive, wait_for
from test_daemon import EVERY_SECOND, config, lines, vm

pytestmark = pytest.mark.e2e


def state_of(kenv) -> dict:
    return json.loads((kenv.state / "state.json").read_text())


def koku_daemons(kenv) -> list[int]:
    """Pids of `koku daemon run` processes for this temp home (a second daemon would show here)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
            with open(f"/proc/{entry}/environ", "rb") as fh:
                environ = fh.read().split(b"\0")
        except OSError:
            continue
        if b"daemon" in argv and b"run" in argv and f"HOME={kenv.home}".encode() in environ and alive(int(entry)):
            found.append(int(entry))
    return found


# ----- item 12: shutdown save race ------------------------------------------------------------------
def test_repeated_stops_never_log_cannot_write_state(kenv):
    # A run cancelled at stop makes the saver write while shutdown ends; many jobs make that write long.
    started = kenv.work / "started"
    jobs = [{"name": "slow", "cron": "@yearly", "command": f"echo $KOKU_RUN_ID >> {started}; sleep 30",
             "overlap": True}]
    jobs += [{"name": f"j{i}", "cron": "@yearly", "command": "true"} for i in range(3000)]
    kenv.write_config(config(*jobs, daemon={"shutdown_grace": "0s", "kill_grace": "0s"}))
    for cycle in range(6):
        pid = kenv.start()
        for _ in range(3):
            kenv.request({"Run": "slow"})
        # Counted from a file: each Status of 3,001 jobs (checked against the schema) takes seconds.
        wait_for(lambda: len(lines(started)) == 3 * (cycle + 1), 30, interval=0.2, what="three runs")
        assert kenv.ku("daemon", "stop").returncode == 0
        wait_for(lambda: not alive(pid), 30)
    log = kenv.daemon_log()
    assert log.count("daemon stopped") == 6
    assert "cannot write state" not in log
    assert not [p for p in kenv.state.iterdir() if ".tmp" in p.name]


# ----- item 13: valid JSON, bad values ----------------------------------------------------------------
def test_bad_values_in_state_json_are_dropped_with_a_warning_and_the_daemon_starts(kenv):
    kenv.write_config(config(
        {"name": "a", "cron": "@yearly", "command": "true"},
        {"name": "b", "cron": EVERY_SECOND, "command": "true", "on_error": "backoff"},
        {"name": "c", "cron": "@yearly", "command": "true"},
    ))
    kenv.state.mkdir(parents=True)
    run = {"run": 4, "trigger": "manual", "scheduled": None, "started": "2026-01-01T00:00:00+00:00"}
    (kenv.state / "state.json").write_text(json.dumps({"format": 1, "jobs": {
        "a": {"runs": 4, "in_flight": [{**run, "pid": 1}, {**run, "run": 5, "pid": -7}]},
        "b": {"runs": 4, "consecutive_failures": 3, "skips_left": 10 ** 12},
        "c": {"runs": 4, "in_flight": [{**run, "pid": "abc"}], "paused_until": "soon", "runs_x": 1},
    }}))
    kenv.start()
    log = kenv.daemon_log()
    for job, field in (("a", "in_flight[0].pid"), ("a", "in_flight[1].pid"), ("b", "skips_left"),
                       ("c", "in_flight[0].pid"), ("c", "paused_until")):
        assert f'job \\"{job}\\": {field}: invalid value' in log, (job, field, log)  # logfmt escapes quotes
    hist = kenv.request({"History": {"name": "a", "limit": 5}})["History"]
    assert [r["outcome"] for r in hist] == ["interrupted", "interrupted"] and all(r["pid"] is None for r in hist)
    assert kenv.status("b")["skips_left"] == 0 and kenv.status("c")["state"] == "idle"
    assert kenv.status("a")["runs"] == 5  # the highest run id seen is kept: ids never repeat
# ----- item 11: reload is all or nothing ----------------------------------------------------------------
def _failed_once_then_backoff(kenv, via: str) -> None:
    job = {"name": "flaky", "cron": "@yearly", "command": "exit 1"}
    kenv.write_config(config(job, {"name": "other", "cron": "@yearly", "command": "true"}))
    pid = kenv.start()
    assert kenv.ku("run", "flaky", "--wait").returncode == 1
    kenv.write_config(config({**job, "on_error": "backoff"},
                             {"name": "other", "cron": "@monthly", "command": "true"},
                             {"name": "new", "cron": "@yearly", "command": "true"}))
    if via == "sighup":
        os.kill(pid, signal.SIGHUP)
        wait_for(lambda: "config reloaded" in kenv.daemon_log() or not alive(pid), 10, what="the reload")
    else:
        res = kenv.ku("reload")
        assert res.returncode == 0, res.stderr
        assert "changed flaky, other" in res.stdout and "added new" in res.stdout
    assert alive(pid), kenv.daemon_log()
    jobs = {j["name"]: j for j in kenv.request("Status")["Status"]}
    assert list(jobs) == ["flaky", "other", "new"]
    assert jobs["flaky"]["state"] == "failing" and jobs["flaky"]["on_error"] == "backoff"
    assert jobs["other"]["schedule"] == "@monthly"
    assert "Traceback" not in kenv.daemon_log()


@pytest.mark.parametrize("via", ["sighup", "ku reload"])
def test_reload_to_backoff_after_a_failure_keeps_the_daemon_and_applies_everything(kenv, via):
    _failed_once_then_backoff(kenv, via)


@pytest.mark.parametrize("via", ["sighup", "ku reload"])
def test_reload_of_5000_nested_brackets_is_rejected_and_the_old_config_runs(kenv, via):
    out = kenv.work / "ticks"
    kenv.write_config(config({"name": "tick", "cron": EVERY_SECOND, "command": f"echo x >> {out}"}))
    pid = kenv.start()
    wait_for(out.exists, 5)
    kenv.config.write_text(kenv.config.read_text() + "\nx = " + "[" * 5000 + "\n")
    if via == "sighup":
        os.kill(pid, signal.SIGHUP)
        wait_for(lambda: "reload rejected" in kenv.daemon_log() or not alive(pid), 10, what="the reload")
    else:
        res = kenv.ku("reload")
        assert res.returncode == 2 and "nested too deeply" in res.stderr, res.stderr
    assert alive(pid), kenv.daemon_log()
    assert "nested too deeply" in kenv.daemon_log()
    n = len(out.read_text().split())
    wait_for(lambda: len(out.read_text().split()) >= n + 2, 5, what="the old config to keep running")
    assert [j["name"] for j in kenv.request("Status")["Status"]] == ["tick"]


# ----- item 8: run ids durable before the child starts ------------------------------------------------
def test_kill_9_after_second_boundaries_never_runs_a_slot_twice_nor_without_a_record(kenv):
    out = kenv.work / "runs"
    jobs = [{"name": f"j{i:02}", "cron": EVERY_SECOND,
             "command": f'echo "$KOKU_JOB $KOKU_RUN_ID $KOKU_SCHEDULED_TIME" >> {out}'} for i in range(20)]
    kenv.write_config(config(*jobs, daemon={"history": 10000}))
    rng = random.Random(10)
    for _ in range(12):
        pid = kenv.start()
        time.sleep(0.5)
        now = time.time()
        time.sleep(math.ceil(now) - now + rng.uniform(0.0, 0.02))  # within 20 ms after a second boundary
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not alive(pid), 5)
    pid = kenv.start()
    assert kenv.ku("daemon", "stop").returncode == 0
    wait_for(lambda: not alive(pid), 30)
    executed = [tuple(line.split()) for line in out.read_text().splitlines()]
    runs = Counter((job, run) for job, run, _slot in executed)
    slots = Counter((job, slot) for job, _run, slot in executed)
    state = state_of(kenv)["jobs"]
    records = {(job, r["run"]) for job, mem in state.items() for r in mem["history"]}
    assert all(mem["in_flight"] == [] for mem in state.values())
    twice = [key for key, n in runs.items() if n > 1] + [key for key, n in slots.items() if n > 1]
    unrecorded = [(job, int(run)) for job, run, _slot in executed if (job, int(run)) not in records]
    assert len(executed) > 20
    assert twice == [] and unrecorded == [], (len(twice), len(unrecorded), twice[:5], unrecorded[:5])


# ----- item 9: orphans of a crash vs overlap = false ----------------------------------------------------
def job_groups(kenv, job: str) -> set[int]:
    """Process groups of live processes running ``job`` for this temp home (found by their environment)."""
    groups = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                environ = fh.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if f"KOKU_JOB={job}".encode() in environ and f"HOME={kenv.home}".encode() in environ and fields[0] != b"Z":
            groups.add(int(fields[2]))
    return groups


def test_orphans_of_a_kill_9_are_killed_at_restart_so_overlap_false_holds(kenv):
    kenv.write_config(config({"name": "orph", "cron": EVERY_SECOND, "command": "sleep 30"},
                             daemon={"kill_grace": "1s"}))
    pid = kenv.start()
    wait_for(lambda: job_groups(kenv, "orph"), 5, what="a run")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 5)
    orphans = job_groups(kenv, "orph")
    assert len(orphans) == 1
    kenv.start()
    most, new_run = 0, False
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        groups = job_groups(kenv, "orph")
        most = max(most, len(groups))
        if groups - orphans and not new_run:
            new_run = True
            deadline = min(deadline, time.monotonic() + 2.5)  # watch a few more scheduled slots
        time.sleep(0.05)
    assert new_run, "no run started after the restart"
    assert most == 1, "a run overlapped the orphan of the crash"
    assert not (job_groups(kenv, "orph") & orphans), "the orphan is still alive"
    hist = kenv.request({"History": {"name": "orph", "limit": 5}})["History"]
    interrupted = [r for r in hist if r["outcome"] == "interrupted"]
    assert len(interrupted) == 1 and f"process group {min(orphans)}" in interrupted[0]["description"]
    assert "terminated" in interrupted[0]["description"] and interrupted[0]["pid"] == min(orphans)


# ----- item 10: a singleton lock that cannot be deleted ----------------------------------------------
def test_muzan_stop_sigterm_and_deleted_files_never_let_a_second_daemon_start(kenv):
    done = kenv.work / "done"
    kenv.write_config(config({"name": "long", "cron": "@yearly", "command": f"sleep 4; touch {done}"},
                             daemon={"shutdown_grace": "20s"}))
    first = kenv.start()
    kenv.request({"Run": "long"})
    wait_for(lambda: kenv.status("long")["state"] == "running", 5)
    sock, pidfile = kenv.state / "daemon.sock", kenv.state / "daemon.pid"
    os.kill(first, signal.SIGTERM)  # muzan's stop: SIGTERM and both files deleted at once
    sock.unlink()
    pidfile.unlink()
    res = kenv.ku("daemon", "start")
    assert koku_daemons(kenv) == [first], res.stdout + res.stderr
    assert f"pid {first}" in res.stdout + res.stderr
    # The first daemon, still in its shutdown grace, binds its socket and writes its pid file again.
    wait_for(lambda: sock.exists() and kenv.daemon_pid() == first, 5, what="daemon.sock and daemon.pid again")
    assert kenv.request("DaemonStatus")["DaemonStatus"]["pid"] == first
    # Files that are not its own (another writer replaced them) are never deleted on its way out.
    foreign = kenv.state / "foreign.pid"
    foreign.write_text("12345\n")
    os.replace(foreign, pidfile)
    other = socket.socket(socket.AF_UNIX)
    other.bind(str(kenv.state / "other.sock"))
    os.replace(kenv.state / "other.sock", sock)
    wait_for(lambda: not alive(first), 15, what="the first daemon to finish its run and exit")
    assert pidfile.read_text() == "12345\n" and sock.is_socket()
    other.close()
    sock.unlink()
    assert done.exists() and state_of(kenv)["jobs"]["long"]["last_run"]["outcome"] == "success"
    pidfile.unlink()
    second = kenv.start()
    assert second != first and koku_daemons(kenv) == [second]
    assert kenv.request("DaemonStatus")["DaemonStatus"]["pid"] == second


def test_deleting_the_state_dir_does_not_let_a_second_daemon_start(kenv):
    kenv.write_config(config({"name": "x", "cron": "@yearly", "command": "true"}))
    first = kenv.start()
    shutil.rmtree(kenv.state)
    res = kenv.ku("daemon", "start")
    assert koku_daemons(kenv) == [first], res.stdout + res.stderr
    assert f"pid {first}" in res.stdout + res.stderr
    wait_for(lambda: kenv.daemon_pid() == first, 5, what="the pid file again")


# ----- item 15: removed jobs are pruned ----------------------------------------------------------------
def test_removed_jobs_are_forgotten_after_the_retention(kenv):
    keep = {"name": "keep", "cron": "@yearly", "command": "true"}
    daemon = {"forget_removed_after": "4s"}
    many = [{"name": f"gone{i}", "cron": EVERY_SECOND if i == 7 else "@yearly", "command": "echo hi"}
            for i in range(20000)]
    kenv.write_config(config(keep, daemon=daemon))
    pid = kenv.start()
    log = kenv.state / "logs/gone7.log"
    peaks, afters = [], []
    for _ in range(2):  # a second cycle forgets as well (its stamps are fresh, not the first cycle's)
        kenv.write_config(config(keep, *many, daemon=daemon))
        assert kenv.ku("reload", timeout=120).returncode == 0
        wait_for(log.exists, 5, what="a removed job's log")
        wait_for(lambda: len(state_of(kenv)["jobs"]) == 20001, 20, what="20,001 jobs saved")
        big = (kenv.state / "state.json").stat().st_size
        peaks.append(vm(pid, "VmRSS"))
        kenv.write_config(config(keep, daemon=daemon))
        assert kenv.ku("reload", timeout=120).returncode == 0
        time.sleep(1.0)
        assert len(state_of(kenv)["jobs"]) == 20001  # kept until the retention has passed
        wait_for(lambda: len(state_of(kenv)["jobs"]) == 1, 15, what="the removed jobs to be forgotten")
        assert not log.exists() and (kenv.state / "logs/daemon.log").exists()
        assert (kenv.state / "state.json").stat().st_size < big / 1000
        time.sleep(3.0)  # the trim after forgetting
        afters.append(vm(pid, "VmRSS"))
    # RSS is reported, not asserted: the daemon keeps no reference to a forgotten job (tracemalloc: about
    # 100 kB more after a second 5,000-job cycle, the dicts' capacity), but the allocator returns only
    # part of the pages to the system.
    print("RSS kB: peaks", peaks, "after forgetting", afters)


# ----- item 14: start on a full disk -------------------------------------------------------------------
@pytest.fixture
def full_disk(kenv):
    """A 64 KiB tmpfs, filled up, as the state dir (root only)."""
    mnt = kenv.root / "full"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {res.stderr.strip()}")
    filler = mnt / "filler"
    try:
        with open(filler, "wb") as fh:
            while True:
                fh.write(b"x" * 4096)
                fh.flush()
    except OSError:
        pass
    try:
        yield mnt, filler
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_start_on_a_full_disk_runs_logs_and_retries_until_there_is_room(kenv, full_disk):
    mnt, filler = full_disk
    out = kenv.work / "ticks"
    kenv.write_config(config({"name": "tick", "cron": EVERY_SECOND, "command": f"echo x >> {out}"}))
    env = {**kenv.env, "KOKU_STATE_DIR": str(mnt)}
    err = kenv.root / "daemon.err"
    with open(err, "wb") as fh:
        proc = subprocess.Popen(KU + ["daemon", "run"], env=env, stdout=fh, stderr=fh, cwd=kenv.work)
    try:
        kenv.daemon_pids.add(proc.pid)
        wait_for(lambda: len(lines(out)) >= 2 or proc.poll() is not None, 15, what="runs on a full disk")
        assert proc.poll() is None, err.read_text()
        log = err.read_text()
        assert "cannot write state; will retry" in log and "No space left on device" in log, log
        assert "Traceback" not in log
        assert not (mnt / "state.json").exists()
        filler.unlink()  # room again: the state is written within a retry
        wait_for(lambda: (mnt / "state.json").exists(), 15, what="state.json once there is room")
        wait_for(lambda: (mnt / "daemon.pid").exists(), 5, what="daemon.pid once there is room")
        assert "state written again" in err.read_text()
        assert json.loads((mnt / "state.json").read_text())["jobs"]["tick"]["runs"] >= 2
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(20) == 0, err.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
