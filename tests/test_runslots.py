"""Retries, max_running (daemon and job), start_deadline, catch_up modes and jitter_mode = "hash", on a
fake clock with a fake executor that the tests finish by hand (no processes, no sleeping)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
import tomli_w

from koku.core.admission import Admission
from koku.core.clock import FakeClock
from koku.core.config import CatchUp, parse_config
from koku.core.model import JobMemory, JobState, Outcome, RunRecord, RunResult
from koku.core.runner import Context, JobRunner
from koku.core.runpolicy import hash_delay, host_name
from koku.core.scheduler import Scheduler
from koku.errors import RunRefused

T0 = datetime(2026, 1, 10, 10, 0, 0, tzinfo=timezone.utc)


class Executor:
    """Leaves every run running; ``end(name, outcome)`` finishes the oldest one of a job."""

    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.started: list[tuple[str, RunRecord, datetime]] = []
        self.running: dict[str, list[tuple[JobRunner, RunRecord]]] = {}
        self.script: dict[str, list[Outcome]] = {}  # outcomes to end runs with at once, in order

    def start(self, runner: JobRunner, record: RunRecord) -> None:
        self.started.append((runner.cfg.name, record, self.clock.now()))
        planned = self.script.get(runner.cfg.name)
        if planned:
            runner.finish_run(record, result(planned.pop(0), self.clock))
        else:
            self.running.setdefault(runner.cfg.name, []).append((runner, record))

    def cancel(self, runner: JobRunner, run: int, grace: float) -> None:
        pass

    def end(self, name: str, outcome: Outcome = Outcome.SUCCESS) -> None:
        runner, record = self.running[name].pop(0)
        runner.finish_run(record, result(outcome, self.clock))

    def names(self) -> list[str]:
        return [name for name, _, _ in self.started]


def result(outcome: Outcome, clock: FakeClock) -> RunResult:
    code = {Outcome.SUCCESS: 0, Outcome.FAILURE: 1}.get(outcome)
    return RunResult(outcome=outcome, description=f"exit status {code}" if code is not None else outcome.value,
                     exit_code=code, signal=None, pid=4242, started_mono=clock.monotonic(),
                     ended_mono=clock.monotonic(), tail=())


class World:
    def __init__(self, start: datetime = T0, daemon: dict | None = None):
        self.clock = FakeClock(start)
        self.scheduler = Scheduler(self.clock)
        self.executor = Executor(self.clock)
        daemon_cfg = parse_config(tomli_w.dumps({"daemon": daemon or {}})).daemon
        self.ctx = Context(clock=self.clock, scheduler=self.scheduler, daemon=daemon_cfg, executor=self.executor,
                           changed=lambda name: None, rng=random.Random(7),
                           admission=Admission(daemon_cfg.max_running))
        self.runners: dict[str, JobRunner] = {}

    def add(self, mem: JobMemory | None = None, startup: bool = True, **job) -> JobRunner:
        job.setdefault("command", "true")
        cfg = parse_config(tomli_w.dumps({"job": [job]})).jobs[0]
        runner = JobRunner(cfg, mem or JobMemory(), self.ctx)
        runner.activate(startup=startup)
        self.runners[cfg.name] = runner
        return runner

    def run_for(self, seconds: float) -> None:
        until = self.clock.now() + timedelta(seconds=seconds)
        while True:
            delay = self.scheduler.tick()
            if self.clock.now() >= until:
                return
            self.clock.sleep(min(delay, (until - self.clock.now()).total_seconds()) or 0.001)


def offsets(world: World, name: str) -> list[float]:
    return [(at - T0).total_seconds() for n, _, at in world.executor.started if n == name]


# ----- retries ------------------------------------------------------------------------------------------
def test_a_failed_run_is_retried_with_doubling_delay_and_keeps_every_attempt():
    w = World()
    job = w.add(name="r", cron="0 * * * *", tz="UTC", retries=2, retry_delay="10s")
    w.executor.script["r"] = [Outcome.FAILURE, Outcome.FAILURE, Outcome.SUCCESS]
    w.run_for(3600 + 60)
    assert offsets(w, "r") == [3600, 3610, 3630]  # slot, +10 s, +20 s more
    [record] = job.mem.history
    assert [a["outcome"] for a in record.attempts] == ["failure", "failure"]
    assert [a["started"] for a in record.attempts] == ["2026-01-10T11:00:00+00:00", "2026-01-10T11:00:10+00:00"]
    assert (record.outcome, record.started, record.run) == ("success", "2026-01-10T11:00:30+00:00", 1)
    assert job.mem.consecutive_failures == 0 and job.state is JobState.IDLE


def test_retries_exhausted_count_once_for_on_error():
    w = World()
    job = w.add(name="r", cron="0 * * * *", tz="UTC", retries=2, retry_delay="1s", on_error="stop", max_failures=2)
    w.executor.script["r"] = [Outcome.FAILURE] * 3
    w.run_for(3600 + 10)
    [record] = job.mem.history
    assert len(record.attempts) == 2 and record.outcome == "failure"
    assert job.mem.consecutive_failures == 1 and not job.mem.stopped


def test_between_attempts_the_job_is_not_running_and_status_says_when_it_retries():
    w = World()
    job = w.add(name="r", cron="0 * * * *", tz="UTC", retries=1, retry_delay="30s")
    w.run_for(3600)
    w.executor.end("r", Outcome.FAILURE)
    status = job.status()
    assert status["state"] == "idle" and status["retry_at"] == "2026-01-10T11:00:30+00:00"
    assert job.pending(1)


def test_a_retry_never_overlaps_the_next_scheduled_run_of_an_overlap_false_job():
    w = World()
    job = w.add(name="m", cron="*/1 * * * *", tz="UTC", retries=3, retry_delay="20s")
    w.run_for(60)
    w.executor.end("m", Outcome.FAILURE)  # 10:01:00 fails: retry at :20
    w.run_for(20)
    w.executor.end("m", Outcome.FAILURE)  # 10:01:20 fails: next retry would be 10:02:00, the next slot
    assert not job.retrying and job.mem.history[-1].outcome == "failure"
    assert len(job.mem.history[-1].attempts) == 1
    assert job.mem.consecutive_failures == 1
    # A retry still running when the next slot falls due: that scheduled run is skipped, as today.
    w.run_for(40)  # 10:02:00 starts
    w.executor.end("m", Outcome.FAILURE)
    w.run_for(20)  # retry starts 10:02:20, and runs past 10:03:00
    w.run_for(41)
    assert job.mem.skipped == 1
    assert offsets(w, "m") == [60, 80, 120, 140]


# ----- max_running ---------------------------------------------------------------------------------------
def test_daemon_max_running_queues_runs_in_order_of_their_slot_without_a_new_state():
    w = World(daemon={"max_running": 2})
    for name in ("a", "b", "c"):
        w.add(name=name, cron="0 * * * *", tz="UTC")
    late = w.add(name="d", cron="30 11 * * *", tz="UTC")
    w.run_for(3600)
    assert w.executor.names() == ["a", "b"]
    c = w.runners["c"].status()
    assert c["state"] == "idle" and c["queued_since"] == "2026-01-10T11:00:00+00:00"
    w.run_for(1800)  # d falls due at 11:30 and waits behind c, whose slot is older
    assert late.status()["queued_since"] == "2026-01-10T11:30:00+00:00"
    w.executor.end("b")
    assert w.executor.names() == ["a", "b", "c"]
    assert w.runners["c"].status()["queued_since"] is None and w.runners["c"].state is JobState.RUNNING
    w.executor.end("a")
    assert w.executor.names()[-1] == "d"
    assert w.runners["c"].mem.in_flight and w.runners["c"].active[1].queued == "2026-01-10T11:00:00+00:00"


def test_a_waiting_run_past_start_deadline_is_skipped_and_recorded():
    w = World(daemon={"max_running": 1})
    w.add(name="hog", cron="0 * * * *", tz="UTC")
    job = w.add(name="w", cron="0 * * * *", tz="UTC", start_deadline="10m")
    w.run_for(3600 + 601)
    assert w.executor.names() == ["hog"]
    [skipped] = job.mem.history
    assert skipped.outcome == "skipped" and skipped.scheduled == "2026-01-10T11:00:00+00:00"
    assert skipped.description == "skipped: waited 10m for a free slot (max_running), past start_deadline 10m"
    assert not job.waiting and job.status()["queued_since"] is None
    assert job.mem.consecutive_failures == 0
    w.executor.end("hog")
    assert w.executor.names() == ["hog"]  # nothing left to start


def test_job_max_running_caps_an_overlap_true_job():
    w = World()
    job = w.add(name="o", cron="* * * * * *", tz="UTC", overlap=True, max_running=2)
    w.run_for(5)
    assert len(job.active) == 2 and len(job.waiting) == 3
    w.executor.end("o")
    assert len(job.active) == 2 and len(job.waiting) == 2
    assert job.state is JobState.RUNNING


def test_manual_runs_wait_for_a_slot_too_and_a_waiting_run_counts_for_overlap():
    w = World(daemon={"max_running": 1})
    w.add(name="hog", cron="0 * * * *", tz="UTC")
    job = w.add(name="x", cron="0 * * * *", tz="UTC")
    w.run_for(3600)
    assert len(job.waiting) == 1  # x's 11:00 run waits behind hog
    with pytest.raises(RunRefused):
        job.run_now()  # overlap = false: the waiting run is in flight
    w.run_for(3600)  # 12:00: x still waits, so its next slot is skipped as an overlap
    assert job.mem.skipped == 1
    w.executor.end("hog")
    assert w.executor.names()[-1] == "x"
    manual = w.add(name="m", cron="@yearly", tz="UTC")
    record = manual.run_now()  # x holds the one slot
    assert manual.pending(record.run) and manual.status()["queued_since"] == "2026-01-10T12:00:00+00:00"
    w.executor.end("x")
    assert w.executor.names()[-1] == "m" and w.executor.started[-1][1] is record


# ----- missed runs --------------------------------------------------------------------------------------
def missed_memory(minutes_ago: int) -> JobMemory:
    mem = JobMemory()
    mem.next_run = (T0 - timedelta(minutes=minutes_ago)).isoformat()
    return mem


def test_catch_up_all_runs_every_missed_slot_one_after_another_up_to_the_limit():
    w = World()
    job = w.add(missed_memory(10), name="c", cron="* * * * *", tz="UTC", catch_up="all", catch_up_limit=3)
    assert [r.scheduled for _, r, _ in w.executor.started] == ["2026-01-10T09:50:00+00:00"]
    w.executor.end("c")
    w.executor.end("c")
    assert [r.scheduled for _, r, _ in w.executor.started] == [
        "2026-01-10T09:50:00+00:00", "2026-01-10T09:51:00+00:00", "2026-01-10T09:52:00+00:00"]
    w.executor.end("c")
    assert len(w.executor.started) == 3 and not job._backlog


def test_catch_up_true_is_once_false_is_skip():
    for value, starts in ((True, 1), (False, 0), ("once", 1), ("skip", 0)):
        w = World()
        job = w.add(missed_memory(10), name="c", cron="* * * * *", tz="UTC", catch_up=value)
        assert job.cfg.catch_up is (CatchUp.ONCE if starts else CatchUp.SKIP)
        assert len(w.executor.started) == starts, value


def test_start_deadline_skips_and_records_a_run_missed_while_the_daemon_was_down():
    w = World()
    job = w.add(missed_memory(30), name="c", cron="0 * * * *", tz="UTC", catch_up="once", start_deadline="10m")
    assert w.executor.started == []
    [skipped] = job.mem.history
    assert skipped.outcome == "skipped" and skipped.trigger == "catch_up"
    assert skipped.description.startswith("skipped: could not start within start_deadline 10m of its slot")
    w2 = World()
    w2.add(missed_memory(5), name="c", cron="0 * * * *", tz="UTC", catch_up="once", start_deadline="10m")
    assert len(w2.executor.started) == 1  # within the deadline: caught up


def test_start_deadline_skips_a_run_whose_timer_fired_late_after_a_clock_jump():
    w = World()
    job = w.add(name="j", cron="0 * * * *", tz="UTC", start_deadline="1m")
    w.run_for(3599)
    w.clock.advance(300)  # suspended across the slot
    w.scheduler.tick()
    assert w.executor.started == []
    assert job.mem.history[-1].outcome == "skipped"


# ----- jitter_mode = "hash" ---------------------------------------------------------------------------
def test_hash_jitter_is_stable_across_restarts_and_spread_across_hosts_and_jobs():
    starts = []
    for _ in range(2):  # two daemon starts
        w = World()
        w.add(name="backup", cron="0 * * * *", tz="UTC", jitter="10m", jitter_mode="hash")
        w.executor.script["backup"] = [Outcome.SUCCESS] * 3
        w.run_for(3 * 3600 + 600)
        starts.append(offsets(w, "backup"))
    delay = hash_delay("backup", 600, host_name())
    assert starts[0] == starts[1]
    assert starts[0] == pytest.approx([3600 + delay, 7200 + delay, 10800 + delay], abs=1e-3)
    assert 0 <= delay < 600
    across_hosts = {round(hash_delay("backup", 600, f"host{i}")) for i in range(20)}
    assert len(across_hosts) > 15 and all(0 <= d < 600 for d in across_hosts)
    assert hash_delay("backup", 600, "h") != hash_delay("restore", 600, "h")


def test_the_scheduler_says_when_a_timer_added_from_outside_is_due_before_its_next_wake():
    clock = FakeClock(T0)
    woken: list[str] = []
    sched = Scheduler(clock, on_earlier=lambda: woken.append("wake"))
    sched.add(T0 + timedelta(hours=1), lambda: None, "later")
    assert woken == ["wake"]  # the first timer is the earliest
    sched.add(T0 + timedelta(hours=2), lambda: None, "even later")
    assert woken == ["wake"]
    sched.add(T0 + timedelta(seconds=5), lambda: None, "retry")
    assert woken == ["wake", "wake"]
