"""The scheduler loop and job policies on a fake clock: DST changes, clock jumps, backoff, stop, pause.

No sleeping and no processes: a fake executor records what would start and the test ends runs by hand.
The scheduler is driven exactly as the daemon drives it (tick, sleep what tick says, tick again).
"""

from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest
import tomli_w

from koku.core.clock import FakeClock
from koku.core.config import parse_config
from koku.core.model import JobMemory, JobState, RunRecord
from koku.core.model import Outcome, RunResult
from koku.core.runner import Context, JobRunner
from koku.errors import RunRefused
from koku.core.scheduler import MAX_SLEEP, Scheduler

UTC = timezone.utc


class FakeExecutor:
    def __init__(self, clock: FakeClock, outcome: Outcome | None = Outcome.SUCCESS):
        self.clock = clock
        self.outcome = outcome  # finish each run at once with this; None leaves it running
        self.started: list[tuple[str, RunRecord]] = []

    def start(self, runner: JobRunner, record: RunRecord) -> None:
        self.started.append((runner.cfg.name, record))
        if self.outcome is not None:
            runner.finish_run(record, result(self.outcome, self.clock))

    def cancel(self, runner: JobRunner, run: int, grace: float) -> None:
        runner.finish_run(runner.active[run], result(Outcome.CANCELLED, self.clock))


def result(outcome: Outcome, clock: FakeClock) -> RunResult:
    code = {Outcome.SUCCESS: 0, Outcome.FAILURE: 1}.get(outcome)
    return RunResult(outcome=outcome, description=outcome.value, exit_code=code, signal=None, pid=4242,
                     started_mono=clock.monotonic(), ended_mono=clock.monotonic(), tail=())


class World:
    def __init__(self, start: datetime, outcome: Outcome | None = Outcome.SUCCESS):
        self.clock = FakeClock(start)
        # As the daemon wires it: a step back is handed to every job, which applies cronie's rule.
        self.scheduler = Scheduler(self.clock, on_step_back=lambda seconds: [
            r.clock_stepped_back(seconds) for r in self.runners.values()])
        self.executor = FakeExecutor(self.clock, outcome)
        self.runners: dict[str, JobRunner] = {}
        self.cfg = None

    def add(self, mem: JobMemory | None = None, startup: bool = True, daemon: dict | None = None, **job) -> JobRunner:
        doc = {"job": [job], "daemon": daemon or {}}
        self.cfg = parse_config(tomli_w.dumps(doc))
        ctx = Context(clock=self.clock, scheduler=self.scheduler, daemon=self.cfg.daemon, executor=self.executor,
                      changed=lambda name: None, rng=random.Random(7))
        runner = JobRunner(self.cfg.jobs[0], mem or JobMemory(), ctx)
        runner.activate(startup=startup)
        self.runners[runner.cfg.name] = runner
        return runner

    def run_until(self, until: datetime) -> None:
        """Drive the loop like the daemon does until the wall clock reaches ``until``."""
        while True:
            delay = self.scheduler.tick()
            if self.clock.now() >= until:
                return
            self.clock.sleep(min(delay, (until - self.clock.now()).total_seconds()) or 0.001)

    def starts(self, tz: str | None = None) -> list[datetime]:
        return [datetime.fromisoformat(r.started) for _, r in self.executor.started]

    def scheduled(self) -> list[str]:
        return [r.scheduled for _, r in self.executor.started]

    def scheduled_by_job(self) -> list[tuple[str, str]]:
        return [(n, r.scheduled) for n, r in self.executor.started]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_the_loop_sleeps_until_the_next_run_not_every_second():
    w = World(at("2026-01-10T10:00:30+00:00"))
    w.add(name="hourly", cron="0 * * * *", command="true", tz="UTC")
    w.run_until(at("2026-01-10T13:00:30+00:00"))
    assert w.scheduled() == ["2026-01-10T11:00:00+00:00", "2026-01-10T12:00:00+00:00", "2026-01-10T13:00:00+00:00"]
    # bounded chunks of at most a minute, and no busy loop: ~ 3h / 60 s wake-ups
    assert max(w.clock.slept) <= MAX_SLEEP
    assert len(w.clock.slept) < 3 * 60 + 10


def test_dst_gap_fixed_time_job_runs_once_after_the_jump():
    w = World(at("2026-03-08T01:00:00-05:00"))
    w.add(name="nightly", cron="30 2 * * *", command="true", tz="America/New_York")
    w.run_until(at("2026-03-10T00:00:00-04:00"))
    assert w.scheduled() == ["2026-03-08T07:00:00+00:00", "2026-03-09T06:30:00+00:00"]  # 03:00 EDT, then 02:30 EDT


def test_dst_fall_back_wildcard_runs_in_both_passes_fixed_time_once():
    w = World(at("2026-11-01T00:50:00-04:00"))
    w.add(name="half", cron="*/30 * * * *", command="true", tz="America/New_York")
    w.add(name="fixed", cron="30 1 * * *", command="true", tz="America/New_York")
    w.run_until(at("2026-11-01T02:10:00-05:00"))
    runs = [(n, r.scheduled) for n, r in w.executor.started]
    half = [s for n, s in runs if n == "half"]
    fixed = [s for n, s in runs if n == "fixed"]
    # 01:00 EDT, 01:30 EDT, 01:00 EST, 01:30 EST, 02:00 EST
    assert half == ["2026-11-01T05:00:00+00:00", "2026-11-01T05:30:00+00:00", "2026-11-01T06:00:00+00:00",
                    "2026-11-01T06:30:00+00:00", "2026-11-01T07:00:00+00:00"]
    assert fixed == ["2026-11-01T05:30:00+00:00"]


def test_clock_jump_forward_runs_a_missed_job_once_not_per_missed_instant():
    w = World(at("2026-05-01T12:00:30+00:00"))
    w.add(name="minutely", cron="* * * * *", command="true", tz="UTC")
    w.run_until(at("2026-05-01T12:02:30+00:00"))
    assert len(w.executor.started) == 2
    w.clock.jump(3 * 3600)  # NTP step / resume from suspend: three hours pass in an instant
    w.scheduler.tick()
    assert len(w.executor.started) == 3  # one catch-up run, not 180
    w.run_until(at("2026-05-01T15:04:45+00:00"))
    assert w.scheduled()[-2:] == ["2026-05-01T15:03:00+00:00", "2026-05-01T15:04:00+00:00"]


def test_clock_step_back_fixed_time_slots_do_not_run_twice():
    w = World(at("2026-05-01T12:00:30+00:00"))
    w.add(name="fixed", cron="1-59 12 * * *", command="true", tz="UTC")  # every minute of 12:xx, fixed-time
    w.run_until(at("2026-05-01T12:10:30+00:00"))
    assert len(w.executor.started) == 10
    w.clock.jump(-600)  # back to 12:00:30
    w.run_until(at("2026-05-01T12:12:30+00:00"))
    # 12:01 .. 12:10 already ran: after the step only 12:11 and 12:12 (reached again by real time) run.
    assert w.scheduled()[10:] == ["2026-05-01T12:11:00+00:00", "2026-05-01T12:12:00+00:00"]
    assert len(set(w.scheduled())) == len(w.scheduled())


def test_clock_step_back_2h_wildcard_jobs_keep_running_on_the_new_wall_clock():
    # Regression (issue 11, item 4): after a 2 h step back no job ran for 2 h, not even `* * * * * *`.
    w = World(at("2026-05-01T12:00:00.500000+00:00"))
    secs = w.add(name="secs", cron="* * * * * *", command="true", tz="UTC")
    # Fixed-time jobs whose slots today lie before the old time: both wait for tomorrow.
    w.add(name="daily", cron="0 12 * * *", command="true", tz="UTC")
    w.add(name="at1030", cron="30 10 * * *", command="true", tz="UTC")
    w.run_until(at("2026-05-01T12:00:10.500000+00:00"))
    assert w.scheduled().count("2026-05-01T12:00:10+00:00") == 1
    w.clock.jump(-7200)  # 10:00:10.5
    w.run_until(at("2026-05-01T10:00:15.500000+00:00"))
    after = [(n, r.scheduled) for n, r in w.executor.started[10:]]
    assert after == [("secs", f"2026-05-01T10:00:{s}+00:00") for s in range(11, 16)]
    assert secs.next_run() == at("2026-05-01T10:00:16+00:00")
    # The new wall clock passes 10:30 (and would pass 12:00) again: neither slot runs twice.
    w.run_until(at("2026-05-01T10:31:00+00:00"))
    assert [s for n, s in w.scheduled_by_job() if n != "secs"] == []


def test_clock_step_back_more_than_3h_is_a_set_clock_and_every_job_starts_afresh():
    w = World(at("2026-05-01T12:00:30+00:00"))
    w.add(name="at1030", cron="30 10 * * *", command="true", tz="UTC")
    w.run_until(at("2026-05-01T12:01:00+00:00"))
    w.clock.jump(-5 * 3600)  # 07:01
    w.run_until(at("2026-05-01T10:31:00+00:00"))
    assert w.scheduled() == ["2026-05-01T10:30:00+00:00"]


def test_backoff_skips_1_2_4_runs_then_recovers():
    w = World(at("2026-05-01T14:00:00+00:00"), outcome=Outcome.FAILURE)
    r = w.add(name="sync", cron="*/15 * * * *", command="false", tz="UTC", on_error="backoff")
    w.run_until(at("2026-05-01T14:15:10+00:00"))
    # The design's example: failed at 14:15 (first failure), skips one run, next is 14:45.
    assert r.state is JobState.FAILING
    assert r.status()["next_run"] == "2026-05-01T14:45:00+00:00"
    w.run_until(at("2026-05-01T18:00:10+00:00"))
    assert w.scheduled() == ["2026-05-01T14:15:00+00:00", "2026-05-01T14:45:00+00:00",
                             "2026-05-01T15:30:00+00:00", "2026-05-01T16:45:00+00:00"]
    w.executor.outcome = Outcome.SUCCESS
    w.run_until(at("2026-05-01T20:00:10+00:00"))
    assert w.scheduled()[4] == "2026-05-01T19:00:00+00:00"  # 8 skipped after the 4th failure
    assert r.state is JobState.IDLE and r.mem.consecutive_failures == 0
    w.run_until(at("2026-05-01T20:30:10+00:00"))
    assert w.scheduled()[5:] == ["2026-05-01T19:15:00+00:00", "2026-05-01T19:30:00+00:00",
                                 "2026-05-01T19:45:00+00:00", "2026-05-01T20:00:00+00:00",
                                 "2026-05-01T20:15:00+00:00", "2026-05-01T20:30:00+00:00"]


def test_backoff_never_skips_more_than_a_days_worth():
    mem = JobMemory(consecutive_failures=20)
    w = World(at("2026-05-01T00:00:00+00:00"), outcome=Outcome.FAILURE)
    r = w.add(mem=mem, name="hourly", cron="0 * * * *", command="false", tz="UTC", on_error="backoff")
    w.run_until(at("2026-05-01T01:00:10+00:00"))
    assert r.mem.skips_left == 24
    assert r.status()["next_run"] == "2026-05-02T02:00:00+00:00"


def test_stop_after_max_failures_and_resume():
    w = World(at("2026-05-01T00:00:00+00:00"), outcome=Outcome.FAILURE)
    r = w.add(name="bad", cron="* * * * *", command="false", tz="UTC", on_error="stop", max_failures=3)
    w.run_until(at("2026-05-01T00:10:00+00:00"))
    assert len(w.executor.started) == 3
    assert r.state is JobState.STOPPED and r.status()["next_run"] is None
    assert r.resume() == "resumed bad"
    assert r.state is JobState.IDLE and r.mem.consecutive_failures == 0
    w.run_until(at("2026-05-01T00:11:30+00:00"))
    assert len(w.executor.started) == 4


def test_continue_keeps_the_schedule_after_failures():
    w = World(at("2026-05-01T00:00:30+00:00"), outcome=Outcome.FAILURE)
    r = w.add(name="meh", cron="* * * * *", command="false", tz="UTC")
    w.run_until(at("2026-05-01T00:05:30+00:00"))
    assert len(w.executor.started) == 5
    assert r.state is JobState.IDLE and r.mem.consecutive_failures == 5


def test_timed_pause_ends_by_itself_and_manual_run_works_while_paused():
    w = World(at("2026-05-01T00:00:30+00:00"))
    r = w.add(name="p", cron="* * * * *", command="true", tz="UTC")
    r.pause(seconds=150)
    assert r.state is JobState.PAUSED and r.status()["next_run"] is None
    w.run_until(at("2026-05-01T00:02:59+00:00"))
    assert w.executor.started == []
    r.run_now()
    assert len(w.executor.started) == 1 and r.state is JobState.PAUSED
    w.run_until(at("2026-05-01T00:04:30+00:00"))
    assert r.state is JobState.IDLE
    # The pause ends at 00:03:00 sharp, so the run due at that instant runs.
    assert w.scheduled()[1:] == ["2026-05-01T00:03:00+00:00", "2026-05-01T00:04:00+00:00"]


def test_overlap_false_skips_due_runs_and_refuses_manual_runs():
    w = World(at("2026-05-01T00:00:30+00:00"), outcome=None)
    r = w.add(name="slow", cron="* * * * *", command="sleep 1000", tz="UTC")
    w.run_until(at("2026-05-01T00:03:30+00:00"))
    assert len(w.executor.started) == 1 and r.mem.skipped == 2
    with pytest.raises(RunRefused):
        r.run_now()
    assert r.state is JobState.RUNNING


def test_catch_up_runs_once_for_a_run_missed_while_down():
    mem = JobMemory(next_run="2026-05-01T02:00:00+00:00")
    w = World(at("2026-05-01T09:30:00+00:00"))
    w.add(mem=mem, name="nightly", cron="0 2 * * *", command="true", tz="UTC", catch_up=True)
    assert [r.trigger for _, r in w.executor.started] == ["catch_up"]
    mem2 = JobMemory(next_run="2026-05-01T02:00:00+00:00")
    w2 = World(at("2026-05-01T09:30:00+00:00"))
    w2.add(mem=mem2, name="nightly", cron="0 2 * * *", command="true", tz="UTC")  # catch_up = false
    assert w2.executor.started == []


def test_reboot_runs_at_start_and_not_on_reload():
    w = World(at("2026-05-01T09:30:00+00:00"))
    w.add(name="boot", cron="@reboot", command="true")
    assert [r.trigger for _, r in w.executor.started] == ["reboot"]
    w.add(name="boot2", cron="@reboot", command="true", startup=False)
    assert len(w.executor.started) == 1
    w.run_until(at("2026-05-02T09:30:00+00:00"))
    assert len(w.executor.started) == 1


def test_illegal_state_moves_are_refused():
    from koku.core.model import check_move
    from koku.errors import IllegalTransition

    check_move(JobState.IDLE, JobState.RUNNING)
    with pytest.raises(IllegalTransition):
        check_move(JobState.IDLE, JobState.STOPPED)
    with pytest.raises(IllegalTransition):
        check_move(JobState.FAILING, JobState.STOPPED)


def test_jitter_delays_each_run_within_the_window():
    w = World(at("2026-05-01T00:00:00+00:00"))
    w.add(name="j", cron="*/10 * * * *", command="true", tz="UTC", jitter="5m")
    w.run_until(at("2026-05-01T03:00:00+00:00"))
    delays = []
    for name, record in w.executor.started:
        delay = (datetime.fromisoformat(record.started) - datetime.fromisoformat(record.scheduled)).total_seconds()
        delays.append(delay)
    # 00:10 .. 02:50; the 03:00 run is jittered past the end of the window
    assert [s[11:16] for s in w.scheduled()] == [f"{m // 60:02d}:{m % 60:02d}" for m in range(10, 180, 10)]
    assert all(0 <= d < 300 for d in delays), delays
    assert len({round(d) for d in delays}) > 5  # really random, not a constant offset


def test_long_waits_end_early_so_kernel_timer_slack_cannot_make_a_run_late():
    # Linux may fire a 60 s epoll timeout up to 60 ms late; the loop asks for a bit less, then ticks again.
    w = World(at("2026-05-01T12:00:00.500000+00:00"))
    w.add(name="minutely", cron="* * * * *", command="true", tz="UTC")
    first = w.scheduler.tick()
    assert 59.3 < first < 59.5  # 59.5 s away, minus 0.2 %
    w.clock.sleep(first)
    second = w.scheduler.tick()
    assert 0 < second < 0.2 and w.executor.started == []
    w.clock.sleep(second)
    w.scheduler.tick()
    assert w.scheduled() == ["2026-05-01T12:01:00+00:00"]


@pytest.mark.parametrize("tz, day", [("America/New_York", "2026-11-01"), ("Europe/Berlin", "2026-10-25"),
                                     ("Australia/Lord_Howe", "2026-04-05")])
def test_dst_fall_back_second_pass_runs_start_in_the_second_pass_not_an_hour_early(tz, day):
    # Regression (issue 15): the runner added the jitter delay (0 s) to the run's local datetime, which
    # dropped fold, so each second-pass run started during the first pass, right after its twin.
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(tz)
    start = datetime.fromisoformat(f"{day}T00:00:00").replace(tzinfo=zone)
    w = World(start)
    w.add(name="hourly", cron="*/30 * * * *", command="true", tz=tz)
    w.run_until(datetime.fromisoformat(f"{day}T04:00:00").replace(tzinfo=zone))
    starts = w.starts()
    scheduled = [datetime.fromisoformat(s) for s in w.scheduled()]
    assert starts == scheduled
    gaps = {(b - a).total_seconds() for a, b in zip(scheduled, scheduled[1:])}
    assert gaps == {1800.0}  # every half hour of real time, through both passes
