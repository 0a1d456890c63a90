"""Retries, max_running, start_deadline, catch_up = "all" and jitter_mode = "hash" in the real daemon."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from conftest import wait_for
from koku.core.runpolicy import hash_delay

pytestmark = pytest.mark.e2e


def history(kenv, name: str, limit: int = 50) -> list[dict]:
    return list(reversed(kenv.request({"History": {"name": name, "limit": limit}})["History"]))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_a_failing_run_is_retried_and_the_record_keeps_every_attempt(kenv):
    counter = kenv.work / "count"
    kenv.write_config(f'''[[job]]
name = "flaky"
cron = "@yearly"
retries = 3
retry_delay = "1s"
command = "n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; echo attempt $n; [ $n -ge 3 ]"
''')
    kenv.start()
    res = kenv.ku("run", "flaky", "--wait", "--json", timeout=60)
    assert res.returncode == 0, res.stderr
    record = json.loads(res.stdout)
    assert counter.read_text().strip() == "3"
    assert [a["exit_code"] for a in record["attempts"]] == [1, 1] and record["exit_code"] == 0
    starts = [at(a["started"]) for a in record["attempts"]] + [at(record["started"])]
    gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:])]
    assert 1 <= gaps[0] < 1.9 and 3 <= gaps[0] + gaps[1] < 4.5  # 1 s, then 2 s (plus the runs themselves)
    assert kenv.status("flaky")["consecutive_failures"] == 0
    log = (kenv.state / "logs/flaky.log").read_text()
    assert "run=1 attempt=2 manual started" in log and "run=1 attempt=3 manual started" in log


def test_max_running_queues_a_run_without_a_new_state_and_start_deadline_skips_and_records(kenv):
    out = kenv.work
    kenv.write_config(f'''[daemon]
max_running = 1

[[job]]
name = "hog"
cron = "@reboot"
command = "sleep 6; date +%s.%N > {out}/hog-end"

[[job]]
name = "next"
cron = "@reboot"
command = "date +%s.%N > {out}/next-start"

[[job]]
name = "tick"
cron = "* * * * * *"
start_deadline = "1s"
command = "true"
''')
    kenv.start()
    status = wait_for(lambda: (s := kenv.status("next"))["queued_since"] and s, timeout=30)
    assert status["state"] == "idle"  # kagaya's five states only: waiting is a field, not a state
    assert kenv.status("hog")["state"] == "running"
    wait_for(lambda: (out / "next-start").exists(), timeout=20, what="the queued run started")
    assert float((out / "next-start").read_text()) >= float((out / "hog-end").read_text())
    # (On a loaded box a tick timer may also fire over 1 s late: that skip has its own reason.)
    waited = wait_for(lambda: [r for r in history(kenv, "tick") if r["outcome"] == "skipped"
                               and r["description"].startswith("skipped: waited ")], timeout=10)
    assert "for a free slot (max_running), past start_deadline 1s" in waited[0]["description"]
    assert waited[0]["queued"] is not None
    wait_for(lambda: any(r["outcome"] == "success" for r in history(kenv, "tick")), timeout=15)


def test_catch_up_all_runs_the_missed_slots_oldest_first_up_to_the_limit(kenv):
    kenv.write_config('''[[job]]
name = "hourly"
cron = "0 * * * *"
tz = "UTC"
catch_up = "all"
catch_up_limit = 2
command = "true"
''')
    kenv.start()
    assert kenv.ku("daemon", "stop").returncode == 0
    # The daemon was "down" for three hours: the run it was waiting for is three hours back.
    state_file = kenv.state / "state.json"
    state = json.loads(state_file.read_text())
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    state["jobs"]["hourly"]["next_run"] = (now - timedelta(hours=3)).isoformat()
    state_file.write_text(json.dumps(state))
    kenv.start()
    runs = wait_for(lambda: len(h := history(kenv, "hourly")) >= 2 and h, timeout=20)
    assert [(r["trigger"], r["scheduled"]) for r in runs] == [
        ("catch_up", (now - timedelta(hours=3)).isoformat()), ("catch_up", (now - timedelta(hours=2)).isoformat())]
    assert at(runs[1]["started"]) >= at(runs[0]["ended"])  # overlap = false: one after another
    assert "catch_up_limit" in kenv.daemon_log()


def test_hash_jitter_gives_the_same_delay_every_run_and_after_a_restart(kenv):
    kenv.write_config('''[[job]]
name = "spread"
cron = "*/4 * * * * *"
jitter = "3s"
jitter_mode = "hash"
command = "true"
''')
    expected = hash_delay("spread", 3.0)

    def delays() -> list[float]:
        return [(at(r["started"]) - at(r["scheduled"])).total_seconds() for r in history(kenv, "spread")]

    kenv.start()
    wait_for(lambda: len(delays()) >= 2, timeout=20)
    assert kenv.ku("daemon", "stop").returncode == 0
    kenv.start()
    wait_for(lambda: len(delays()) >= 3, timeout=20)
    for delay in delays():
        assert expected - 0.05 <= delay <= expected + 1.5, (delays(), expected)  # start latency on a loaded box


def test_a_timed_pause_ends_on_time_although_the_next_run_is_far_away(kenv):
    # The scheduler sleeps towards its earliest timer in chunks of up to a minute; a timer added from a
    # request (the pause's end, like a retry) must wake it, or the pause lasted up to a minute longer.
    kenv.write_config('[[job]]\nname = "far"\ncron = "@yearly"\ncommand = "true"\n')
    kenv.start()
    assert kenv.ku("pause", "far", "--for", "2s").returncode == 0
    assert kenv.status("far")["state"] == "paused"
    wait_for(lambda: kenv.status("far")["state"] == "idle", timeout=12, what="the pause ended")
