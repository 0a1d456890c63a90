"""Never stall the hub: the scheduler's tick budget, the start queue's order, the Status cache.

The stalls themselves are measured by the bench's loop-lag probe (bench/hub.py); these tests pin the
mechanisms down on a fake clock, in-process.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import gevent
import pytest

from koku.core import protocol
from koku.core.clock import FakeClock
from koku.core.model import Outcome, RunRecord
from koku.core.scheduler import Scheduler
from koku.daemon.lagprobe import LagProbe
from koku.daemon.starter import StartQueue
from koku.daemon.statuscache import StatusCache
from test_runner import World, at

UTC = timezone.utc


def test_a_tick_with_a_budget_yields_and_still_fires_every_due_timer_once():
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    sched = Scheduler(clock)
    fired: list[int] = []

    def job(i: int):
        def callback() -> None:
            fired.append(i)
            clock.advance(0.001)  # each due run costs a millisecond (croniter, logging)
        return callback

    for i in range(100):
        sched.add(clock.now(), job(i), label=f"j{i}")
    ticks = 0
    while True:
        ticks += 1
        delay = sched.tick(budget=0.005)
        if delay > 0:
            break
    assert sorted(fired) == list(range(100))
    assert ticks >= 100 // 6  # it gave the loop a turn about every 5 ms of work
    assert sched.tick() > 0 and len(fired) == 100  # nothing left over, nothing fired twice


class RecordingExecutor:
    def __init__(self):
        self.order: list[str] = []

    def start(self, runner, record):
        self.order.append(f"{runner.cfg.name}:{record.trigger}")

    def cancel(self, runner, run, grace):
        raise AssertionError("only queued runs are cancelled here")

    def running(self):
        return []


def _world_with(jobs: list[dict]) -> World:
    w = World(at("2026-03-02T09:59:59+00:00"))
    for job in jobs:
        w.add(**job)
    return w


def test_the_start_queue_starts_the_run_with_the_earliest_deadline_first():
    # An every-second job queued behind daily jobs due in the same second would lose its next runs
    # (overlap = false skips them while it waits): it goes first; a catch-up run goes before both, and a
    # manual run is not queued at all (RunFollow reads its output stream as soon as it is started).
    w = World(at("2026-03-02T09:59:59+00:00"))
    daily = [w.add(name=f"daily{i}", cron="0 0 10 * * *", command="true") for i in range(3)]
    sec = w.add(name="sec", cron="* * * * * *", command="true")
    manual = w.add(name="manual", cron="@yearly", command="true")
    rec = RecordingExecutor()
    queue = StartQueue(rec, w.clock)
    for runner in daily + [sec]:
        runner.next_scheduled = runner.cfg.schedule.next_after(at("2026-03-02T10:00:00+00:00"))
        queue.start(runner, RunRecord(run=1, trigger="schedule", scheduled=None, started=""))
    queue.start(manual, RunRecord(run=1, trigger="catch_up", scheduled=None, started=""))
    queue.start(manual, RunRecord(run=2, trigger="manual", scheduled=None, started=""))
    assert rec.order == ["manual:manual"]
    g = gevent.spawn(queue.loop)
    try:
        gevent.sleep(0.05)
    finally:
        g.kill()
    assert rec.order == ["manual:manual", "manual:catch_up", "sec:schedule", "daily0:schedule", "daily1:schedule",
                         "daily2:schedule"]


def test_runs_still_queued_at_shutdown_end_as_cancelled_not_started():
    w = _world_with([{"name": "a", "cron": "@yearly", "command": "true"}])
    runner = w.runners["a"]
    queue = StartQueue(RecordingExecutor(), w.clock)
    runner.ctx.executor = queue
    runner.next_scheduled = None
    record = RunRecord(run=1, trigger="reboot", scheduled=None, started="")
    runner.active[1] = record
    queue.start(runner, record)  # queued: the starter greenlet is not running
    assert runner.active
    queue.cancel_queued()
    assert not runner.active
    assert runner.mem.last_run.run == record.run
    assert runner.mem.last_run.outcome == Outcome.CANCELLED.value


def test_the_status_answer_is_the_same_bytes_and_encodes_each_job_once_until_it_changes():
    w = _world_with([{"name": f"j{i}", "cron": "0 0 10 * * *", "command": "true"} for i in range(5)])
    cache = StatusCache(w.clock)
    runners = list(w.runners.values())
    expected = protocol.dumps({"Status": [r.status() for r in runners]})
    assert cache.answer(runners) == expected
    assert cache.encoded == 5
    assert cache.answer(runners) == expected
    assert cache.encoded == 5  # the second answer is only a join
    runners[2].pause(None)
    cache.discard("j2")  # what the daemon's changed callback does
    got = json.loads(cache.answer(runners))["Status"]
    assert [j["state"] for j in got] == ["idle", "idle", "paused", "idle", "idle"]
    assert cache.encoded == 6


def test_the_status_answer_yields_to_the_loop_while_it_encodes_many_jobs():
    w = _world_with([{"name": f"j{i}", "cron": "0 0 10 * * *", "command": "true"} for i in range(50)])
    clock = w.clock
    runners = list(w.runners.values())
    original = runners[0].status.__func__

    def slow_status(self):
        clock.advance(0.001)  # a millisecond per job: 50 ms in all
        return original(self)

    ticks = []
    probe = gevent.spawn(lambda: [ticks.append(1) or gevent.idle() for _ in iter(int, 1)])
    try:
        type(runners[0]).status = slow_status
        StatusCache(clock).answer(runners)
    finally:
        type(runners[0]).status = original
        probe.kill()
    assert len(ticks) >= 50 // 6  # another greenlet ran about every 5 ms of encoding


def test_the_lag_probe_reports_how_late_its_sleeps_wake_and_starts_a_new_window():
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    probe = LagProbe(clock)
    late = iter([0.0, 0.002, 0.030, 0.001])

    def sleep(seconds: float) -> None:
        clock.advance(seconds + next(late))

    clock.sleep = sleep  # type: ignore[method-assign]
    with pytest.raises(StopIteration):
        probe.run()
    got = probe.take()
    assert got["samples"] == 4 and got["max_ms"] == 30.0 and got["p50_ms"] == 1.0 and got["p99_ms"] == 30.0
    assert probe.take()["samples"] == 0


STATUS_CASES = [
    [],
    [{"name": "backup", "state": "idle", "last_run": "2026-01-01T00:00:00+00:00", "last_exit": 0,
      "last_outcome": "success", "next_run": None}],
    [{"name": "a", "state": "running", "last_run": None, "next_run": "2026-01-02T00:00:00+00:00"},
     {"name": "a-much-longer-job-name.x", "state": "failing", "last_run": "2026-01-01T00:00:00+00:00",
      "last_exit": 2, "last_outcome": "failure", "next_run": "2026-01-02T00:00:00+00:00"},
     {"name": "t", "state": "stopped", "last_outcome": "timeout", "last_exit": None, "next_run": None},
     {"name": "k", "state": "idle", "last_outcome": "failure", "last_exit": None, "last_signal": 15}],
]


@pytest.mark.parametrize("color", [False, True])
@pytest.mark.parametrize("jobs", STATUS_CASES)
def test_the_status_table_without_prettytable_prints_what_prettytable_prints(jobs, color):
    from koku.client import table
    expected = table._table(["NAME", "STATE", "LAST RUN", "EXIT", "NEXT RUN"])
    for job in jobs:
        state = job["state"]
        exit_text = table.exit_cell(job)
        if color and exit_text != table.DASH:
            outcome = job.get("last_outcome")
            colour = table.RED if outcome in table._FAILED else table.YELLOW if outcome in table._CUT_SHORT else None
            exit_text = table._paint(exit_text, colour)
        if color and state in ("failing", "stopped"):
            state = table._paint(state, table.RED)
        expected.add_row([job["name"], state, table.local_time(job.get("last_run")), exit_text,
                          table.local_time(job.get("next_run"))])
    assert table.status_table(jobs, color=color) == (table._render(expected) if jobs else "")


def test_the_status_table_falls_back_to_prettytable_for_wide_characters():
    from koku.client import table
    jobs = [{"name": "日本", "state": "idle", "next_run": None}]
    assert table._columns(["NAME"], [["日本"]]) is None
    assert "日本" in table.status_table(jobs)


def test_ku_status_imports_neither_prettytable_nor_wcwidth():
    import subprocess
    import sys
    code = ("import sys; from koku.client import table; "
            "table.status_table([{'name': 'a', 'state': 'idle', 'next_run': None}]); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('prettytable', 'wcwidth')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_brief_status_answer_holds_what_the_table_prints_and_is_cached_apart():
    from koku.daemon.statuscache import BRIEF
    w = _world_with([{"name": f"j{i}", "cron": "0 0 10 * * *", "command": "true"} for i in range(3)])
    cache = StatusCache(w.clock)
    runners = list(w.runners.values())
    full = json.loads(cache.answer(runners))["Status"]
    brief = json.loads(cache.answer(runners, brief=True))["StatusBrief"]
    assert [list(j) for j in brief] == [list(BRIEF)] * 3
    assert brief == [{k: j.get(k) for k in BRIEF} for j in full]
    runners[1].pause(None)
    cache.discard("j1")
    assert json.loads(cache.answer(runners, brief=True))["StatusBrief"][1]["state"] == "paused"
    assert json.loads(cache.answer(runners))["Status"][1]["state"] == "paused"
