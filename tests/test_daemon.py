"""The real daemon with real children: second-level schedules, observed through files, the socket and state.json."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import datetime
from pathlib import Path

import tomli_w

from conftest import alive, wait_for

EVERY_SECOND = "* * * * * *"  # six fields, seconds first


def config(*jobs: dict, daemon: dict | None = None) -> str:
    doc: dict = {"job": list(jobs)}
    doc["daemon"] = {"kill_grace": "1s", "shutdown_grace": "2s", **(daemon or {})}
    return tomli_w.dumps(doc)


def lines(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


def vm(pid: int, key: str) -> int:
    """A /proc/<pid>/status figure in kB (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def test_runs_start_on_time(kenv):
    out = kenv.work / "starts"
    kenv.write_config(config({
        "name": "tick", "cron": EVERY_SECOND,
        "command": f'echo "$(date +%s.%N) $KOKU_SCHEDULED_TIME $KOKU_JOB $KOKU_RUN_ID" >> {out}',
    }))
    kenv.start()
    wait_for(lambda: len(out.read_text().splitlines()) >= 4 if out.exists() else False, 15, what="4 runs")
    rows = [line.split() for line in out.read_text().splitlines()]
    lateness = []
    for started, scheduled, job, run in rows:
        assert job == "tick"
        lateness.append(float(started) - datetime.fromisoformat(scheduled).timestamp())
    assert all(0 <= late < 0.5 for late in lateness), lateness
    runs = [int(r[3]) for r in rows]
    assert runs == sorted(runs) and len(set(runs)) == len(runs)
    scheduled = [datetime.fromisoformat(r[1]).timestamp() for r in rows]
    assert all(b - a == 1 for a, b in zip(scheduled, scheduled[1:])), scheduled


def test_timeout_kills_the_grandchild(kenv):
    gc = kenv.work / "gc.pid"
    kenv.write_config(config({
        "name": "hang", "cron": "@yearly", "timeout": "1s",
        # The shell's child ignores TERM, so only the group-wide KILL after the grace ends it.
        "command": f"sh -c 'trap \"\" TERM; sleep 300 & echo $! > {gc}; wait' ",
    }))
    kenv.start()
    t0 = time.monotonic()
    res = kenv.ku("run", "hang", "--wait", timeout=30)
    elapsed = time.monotonic() - t0
    assert res.returncode != 0
    assert "timed out after 1" in res.stderr, res.stderr
    assert 1.5 <= elapsed < 8, elapsed
    grandchild = int(gc.read_text())
    wait_for(lambda: not alive(grandchild), 5, what="grandchild to die")
    hist = kenv.request({"History": {"name": "hang", "limit": 1}})["History"][0]
    assert hist["outcome"] == "timeout"


def test_overlap_false_skips_and_true_overlaps(kenv):
    solo, both = kenv.work / "solo", kenv.work / "both"
    kenv.write_config(config(
        {"name": "solo", "cron": EVERY_SECOND, "command": f"echo x >> {solo}; sleep 2.5"},
        {"name": "both", "cron": EVERY_SECOND, "command": f"echo x >> {both}; sleep 2.5", "overlap": True},
    ))
    kenv.start()
    time.sleep(5.2)
    kenv.request({"Pause": "solo"})
    kenv.request({"Pause": "both"})
    solo_runs, both_runs = len(lines(solo)), len(lines(both))
    assert 1 <= solo_runs <= 3, solo_runs
    assert both_runs >= 4, both_runs
    assert kenv.status("solo")["skipped"] >= 2
    assert kenv.status("both")["skipped"] == 0
    assert "run skipped: still running" in kenv.daemon_log()


def test_backoff_skips_runs_and_recovers_on_success(kenv):
    starts, ok = kenv.work / "starts", kenv.work / "ok"
    kenv.write_config(config({
        "name": "flaky", "cron": EVERY_SECOND, "on_error": "backoff",
        "command": f"date +%s >> {starts}; test -e {ok}",
    }))
    kenv.start()
    # Failures 1, 2, 3 skip 1, 2, 4 runs: starts at t, t+2, t+5, t+10.
    wait_for(lambda: len(lines(starts)) >= 3, 15, what="3 failing runs")
    st = kenv.status("flaky")
    assert st["state"] in ("failing", "running")
    assert st["consecutive_failures"] >= 2
    times = [int(x) for x in lines(starts)]
    assert times[1] - times[0] == 2, times
    assert times[2] - times[1] == 3, times
    ok.touch()
    wait_for(lambda: kenv.status("flaky")["last_exit"] == 0, 15, what="a successful run")
    assert kenv.status("flaky")["consecutive_failures"] == 0
    n = len(lines(starts))
    time.sleep(2.2)
    assert len(lines(starts)) >= n + 2  # back on its every-second schedule
    assert kenv.status("flaky")["state"] in ("idle", "running")


def test_stop_holds_across_a_restart(kenv):
    starts = kenv.work / "starts"
    kenv.write_config(config({
        "name": "bad", "cron": EVERY_SECOND, "on_error": "stop", "max_failures": 2,
        "command": f"echo x >> {starts}; exit 3",
    }))
    kenv.start()
    wait_for(lambda: kenv.status("bad")["state"] == "stopped", 10, what="stopped")
    assert len(lines(starts)) == 2
    assert kenv.ku("daemon", "stop").returncode == 0
    kenv.start()
    time.sleep(2.2)
    st = kenv.status("bad")
    assert st["state"] == "stopped" and st["next_run"] is None
    assert len(lines(starts)) == 2
    assert kenv.ku("resume", "bad").returncode == 0
    wait_for(lambda: len(lines(starts)) >= 3, 5, what="a run after resume")


def test_pause_survives_restart_and_a_timed_pause_ends_by_itself(kenv):
    a, b = kenv.work / "a", kenv.work / "b"
    kenv.write_config(config(
        {"name": "a", "cron": EVERY_SECOND, "command": f"echo x >> {a}"},
        {"name": "b", "cron": EVERY_SECOND, "command": f"echo x >> {b}"},
    ))
    kenv.start()
    assert kenv.ku("pause", "a").returncode == 0
    assert kenv.ku("daemon", "stop").returncode == 0
    kenv.start()
    assert kenv.status("a")["state"] == "paused"
    n = len(lines(a))
    time.sleep(1.5)
    assert len(lines(a)) == n
    res = kenv.ku("pause", "b", "--for", "2s")
    assert res.returncode == 0, res.stderr
    assert kenv.status("b")["paused_until"]
    time.sleep(0.3)
    m = len(lines(b))
    time.sleep(1.0)
    assert len(lines(b)) == m
    wait_for(lambda: kenv.status("b")["state"] in ("idle", "running"), 5, what="timed pause to end")
    wait_for(lambda: len(lines(b)) > m, 5, what="runs after the timed pause")
    assert kenv.status("a")["state"] == "paused"


def test_kill_9_during_a_run_is_recorded_as_interrupted(kenv):
    marker = kenv.work / "started"
    kenv.write_config(config({"name": "long", "cron": "@yearly", "command": f"touch {marker}; sleep 30"}))
    pid = kenv.start()
    assert kenv.ku("run", "long").returncode == 0
    wait_for(marker.exists, 5)
    job_pid = kenv.status("long")["pid"]

    def saved_pid() -> int | None:
        flight = json.loads((kenv.state / "state.json").read_text())["jobs"].get("long", {}).get("in_flight")
        return flight[0].get("pid") if flight else None

    # The pid is saved by the state writer (threadpool, fsync) after the spawn; on a loaded box the job
    # can touch its marker first.
    wait_for(lambda: saved_pid() == job_pid, 5, what="the run's pid in state.json")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 5)
    state = json.loads((kenv.state / "state.json").read_text())  # valid JSON after kill -9
    # Saved before the child was spawned; its pid may or may not have reached the disk yet.
    assert [r["run"] for r in state["jobs"]["long"]["in_flight"]] == [1]
    assert alive(job_pid)
    kenv.start()
    hist = kenv.request({"History": {"name": "long", "limit": 5}})["History"]
    assert hist[0]["outcome"] == "interrupted" and hist[0]["pid"] == job_pid
    assert f"process group {job_pid} was still alive and was terminated" in hist[0]["description"]
    assert not alive(job_pid)  # killed at restart (README: orphans of a crash)
    assert kenv.status("long")["state"] == "idle"


def test_a_job_printing_1gb_leaves_the_daemon_memory_flat(kenv):
    kenv.write_config(config(
        {"name": "loud", "cron": "@yearly", "command": "yes 'koku carves time, line after line' | head -c 1000000000"},
        daemon={"log_max_bytes": "20MB", "log_keep": 1},
    ))
    pid = kenv.start()
    kenv.ku("status")
    before = vm(pid, "VmRSS")
    res = kenv.ku("run", "loud", "--wait", timeout=300)
    assert res.returncode == 0, res.stderr
    peak = vm(pid, "VmHWM")
    assert peak - before < 40_000, (before, peak)  # kB
    logs = sorted((kenv.state / "logs").glob("loud.log*"))
    assert [p.name for p in logs] == ["loud.log", "loud.log.1"]
    assert all(p.stat().st_size <= 21_000_000 for p in logs)
    assert res.stdout.splitlines()[-1].startswith("koku carves time")


def _children(pid: int) -> list[tuple[int, str]]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append((int(entry), fields[0]))
    return found


def test_a_thousand_runs_leave_no_zombies_and_no_extra_fds(kenv):
    kenv.write_config(config({"name": "quick", "cron": "@yearly", "command": "true", "overlap": True},
                             daemon={"history": 10}))
    pid = kenv.start()
    for _ in range(20):
        kenv.request({"Run": "quick"})
    wait_for(lambda: kenv.status("quick")["runs"] == 20 and kenv.status("quick")["state"] == "idle", 20)
    fds_before = len(os.listdir(f"/proc/{pid}/fd"))
    for _ in range(1000):
        assert "Ok" in kenv.request({"Run": "quick"})
    wait_for(lambda: kenv.status("quick")["runs"] == 1020 and kenv.status("quick")["state"] == "idle", 120,
             interval=0.2, what="1,000 runs to finish")
    time.sleep(0.3)
    assert [c for c in _children(pid) if c[1] == "Z"] == []
    assert len(os.listdir(f"/proc/{pid}/fd")) <= fds_before
    hist = kenv.request({"History": {"name": "quick", "limit": 100}})["History"]
    assert len(hist) == 10 and all(r["outcome"] == "success" for r in hist)


def test_sighup_reloads_and_a_removed_jobs_run_finishes(kenv):
    done = kenv.work / "done"
    kenv.write_config(config(
        {"name": "keep", "cron": "@yearly", "command": "true"},
        {"name": "going", "cron": "@yearly", "command": f"sleep 1.5; touch {done}"},
    ))
    pid = kenv.start()
    kenv.request({"Pause": "keep"})
    assert "Ok" in kenv.request({"Run": "going"})
    kenv.write_config(config(
        {"name": "keep", "cron": "@yearly", "command": "true"},
        {"name": "fresh", "cron": "@monthly", "command": "true"},
    ))
    os.kill(pid, signal.SIGHUP)
    wait_for(lambda: [j["name"] for j in kenv.request("Status")["Status"]] == ["keep", "fresh"], 5)
    assert kenv.status("keep")["state"] == "paused"  # unchanged job keeps its state
    wait_for(done.exists, 5, what="the removed job's run to finish")
    assert "config reloaded" in kenv.daemon_log() and "added=fresh" in kenv.daemon_log()


def test_shutdown_gives_running_jobs_the_grace_then_kills_their_groups(kenv):
    gc = kenv.work / "gc.pid"
    kenv.write_config(config({"name": "slow", "cron": "@yearly",
                              "command": f"sleep 300 & echo $! > {gc}; wait"},
                             daemon={"shutdown_grace": "1s", "kill_grace": "1s"}))
    kenv.start()
    kenv.request({"Run": "slow"})
    wait_for(gc.exists, 5)
    t0 = time.monotonic()
    assert kenv.ku("daemon", "stop").returncode == 0
    assert 0.9 <= time.monotonic() - t0 < 6
    wait_for(lambda: not alive(int(gc.read_text())), 5)
    state = json.loads((kenv.state / "state.json").read_text())
    last = state["jobs"]["slow"]["last_run"]
    assert last["outcome"] == "cancelled" and "daemon shutdown" in last["description"]
    assert state["jobs"]["slow"]["in_flight"] == []


def test_a_corrupt_state_file_is_moved_aside_and_the_daemon_starts(kenv):
    kenv.write_config(config({"name": "x", "cron": "@yearly", "command": "true"}))
    kenv.state.mkdir(parents=True)
    (kenv.state / "state.json").write_text("{ this is not json")
    kenv.start()
    assert (kenv.state / "state.json.corrupt-1").read_text() == "{ this is not json"
    assert "is corrupt" in kenv.daemon_log()
    assert kenv.status("x")["state"] == "idle"
    wait_for(lambda: json.loads((kenv.state / "state.json").read_text())["jobs"].get("x") is not None, 5)


def test_error_to_start_is_told_apart_from_failure(kenv):
    kenv.write_config(config(
        {"name": "nodir", "cron": "@yearly", "command": "true", "dir": "/nonexistent/koku"},
        {"name": "fails", "cron": "@yearly", "command": "exit 3"},
    ))
    kenv.start()
    res = kenv.ku("run", "nodir", "--wait")
    assert res.returncode == 1 and "could not start: dir /nonexistent/koku does not exist" in res.stderr
    assert kenv.ku("run", "fails", "--wait").returncode == 3
    outcomes = {n: kenv.request({"History": {"name": n, "limit": 1}})["History"][0]["outcome"] for n in ("nodir", "fails")}
    assert outcomes == {"nodir": "error", "fails": "failure"}


def test_no_new_runs_once_shutdown_has_begun(kenv):
    # overlap = true: without the guard, a second run would be accepted.
    kenv.write_config(config({"name": "slow", "cron": "@yearly", "command": "sleep 30", "overlap": True},
                             daemon={"shutdown_grace": "3s", "kill_grace": "1s"}))
    pid = kenv.start()
    kenv.request({"Run": "slow"})
    wait_for(lambda: kenv.status("slow")["state"] == "running", 5)
    assert "Ok" in kenv.request("Shutdown")
    assert kenv.request({"Run": "slow"}) == {"Error": "the daemon is shutting down; no new runs"}
    wait_for(lambda: not alive(pid), 15, what="the daemon to exit")
