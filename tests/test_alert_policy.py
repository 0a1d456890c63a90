"""Alert config validation and the alert policy on a fake clock (no daemon, no processes).

The runner is the real one, driven through the scheduler as the daemon drives it; a fake executor ends
each run at once with the outcome the test sets, and the policy's events are collected.
"""

from __future__ import annotations

import random
from datetime import datetime, timezone
from typing import Any

import pytest
import tomli_w

from koku.core.alerts import AlertPolicy, Decision, PolicyEvents, make_event, ping_body, ping_url, summary
from koku.core.clock import FakeClock
from koku.core.config import parse_config
from koku.core.model import JobMemory, Outcome, RunRecord, RunResult, Trigger
from koku.core.notifyconf import EventKind, NotifierKind, WebhookFormat
from koku.core.runner import Context, JobRunner
from koku.core.scheduler import Scheduler
from koku.errors import ConfigError

UTC = timezone.utc
NOTIFIERS = {"ops": {"webhook": "https://hooks.example.com/x"}, "mail": {"mail": ["ops@example.com"]}}


def config(job: dict[str, Any], notify: dict[str, Any] | None = None, **top: Any) -> str:
    base = {"name": "x", "cron": "* * * * * *", "command": "false"}
    base.update(job)
    return tomli_w.dumps({"notify": NOTIFIERS if notify is None else notify, **top, "job": [base]})


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return info.value.problems


# --- config ---


def test_full_alert_config_parses() -> None:
    text = config({"notify": ["ops", "mail"], "notify_on": ["failure", "slow"], "notify_after": 3,
                   "remind_every": "6h", "slow_after": "30m", "ping": "https://hc-ping.com/abc"},
                  notify={"ops": {"webhook": "https://h.example/x", "format": "slack",
                                  "headers": {"Authorization": "Bearer abc"}, "timeout": "3s"},
                          "mail": {"mail": "ops@example.com"}, "page": {"command": "/bin/page"}},
                  smtp={"host": "127.0.0.1", "port": 2525, "starttls": True, "from": "koku@h"},
                  daemon={"metrics_listen": "127.0.0.1:9101", "metrics_file": "/tmp/koku.prom"})
    cfg = parse_config(text)
    alerts = cfg.jobs[0].alerts
    assert alerts.notify == ("ops", "mail") and alerts.notify_after == 3
    assert alerts.notify_on == {EventKind.FAILURE, EventKind.SLOW}
    assert (alerts.remind_every, alerts.slow_after, alerts.ping) == (21600, 1800, "https://hc-ping.com/abc")
    ops, mail, page = (cfg.alerting.notifiers[n] for n in ("ops", "mail", "page"))
    assert (ops.kind, ops.format, ops.headers, ops.timeout) == (NotifierKind.WEBHOOK, WebhookFormat.SLACK,
                                                                (("Authorization", "Bearer abc"),), 3)
    assert mail.mail == ("ops@example.com",) and page.command == "/bin/page"
    assert cfg.alerting.smtp is not None and cfg.alerting.smtp.sender == "koku@h" and cfg.alerting.smtp.port == 2525
    assert (cfg.daemon.metrics_listen, cfg.daemon.metrics_file) == ("127.0.0.1:9101", "/tmp/koku.prom")


def test_defaults_set_notify_for_every_job() -> None:
    cfg = parse_config(tomli_w.dumps({"notify": NOTIFIERS, "defaults": {"notify": ["ops"]},
                                      "job": [{"name": "a", "cron": "* * * * *", "command": "true"},
                                              {"name": "b", "cron": "* * * * *", "command": "true", "notify": "mail"}]}))
    assert [j.alerts.notify for j in cfg.jobs] == [("ops",), ("mail",)]


def test_every_alert_problem_is_reported_at_once() -> None:
    text = config({"notify": ["ops", "opz"], "notify_on": ["failure", "slwo"], "notify_after": 0,
                   "remind_every": "soon", "ping": "hc-ping.com/x"},
                  notify={"ops": {"webhook": "ftp://x", "format": "xml"}, "m": {"mail": ["nope"]},
                          "both": {"mail": "a@b.c", "command": "x"}, "none": {"timeout": "3s"},
                          "c": {"command": "x", "headers": {"A": "b"}}, "w": {"webhook": "http://h/", "wat": 1}},
                  smtp={"port": 0, "username": "u"}, daemon={"metrics_listen": "localhost"})
    assert problems_of(text) == [
        'config.toml: [daemon]: key "metrics_listen" must be "HOST:PORT" such as "127.0.0.1:9101", got "localhost"',
        'config.toml: [notify.ops]: key "webhook" must be an http:// or https:// URL with a host, got "ftp://x"',
        'config.toml: [notify.ops]: key "format" must be one of "json", "slack", got "xml"',
        'config.toml: [notify.m]: key "mail": "nope" is not a mail address like "ops@example.com"',
        'config.toml: [notify.both]: a notifier needs exactly one of "webhook", "mail" or "command", got "mail" and "command"',
        'config.toml: [notify.none]: a notifier needs exactly one of "webhook", "mail" or "command", got none',
        'config.toml: [notify.c]: key "headers" only applies to a "webhook" notifier',
        'config.toml: [notify.w]: unknown key "wat"',
        'config.toml: [smtp]: key "port" must be between 1 and 65535, got 0',
        'config.toml: [smtp]: missing key "host"',
        'config.toml: [smtp]: keys "username" and "password_file" go together (the password is read from the file)',
        'config.toml: job "x": key "notify_on": unknown event "slwo" (events: failure, recovery, stopped, start, '
        'success, slow, skipped)',
        'config.toml: job "x": key "notify_after" must be at least 1, got 0',
        'config.toml: job "x": key "remind_every" must be a duration longer than 0 like "90s", "30m", "6h" (a bare '
        'number is seconds), got "soon"',
        'config.toml: job "x": key "ping" must be an http:// or https:// URL with a host, got "hc-ping.com/x"',
        'config.toml: job "x": key "notify": unknown notifier "opz" (did you mean "ops"?) (defined: both, c, m, '
        'none, ops, w)',
    ]


def test_unknown_notifier_with_none_defined() -> None:
    assert problems_of(config({"notify": ["ops"]}, notify={})) == [
        'config.toml: job "x": key "notify": unknown notifier "ops" (defined: none; add a [notify.NAME] table)']


# --- policy, through the real runner ---


class FakeExecutor:
    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.outcome: Outcome | None = Outcome.FAILURE  # None: the run keeps going

    def start(self, runner: JobRunner, record: RunRecord) -> None:
        if self.outcome is not None:
            code = 0 if self.outcome is Outcome.SUCCESS else 2
            runner.finish_run(record, RunResult(self.outcome, f"exit status {code}", code, None, 99,
                                                self.clock.monotonic(), self.clock.monotonic(), ("out",)))

    def cancel(self, runner: JobRunner, run: int, grace: float) -> None:
        pass


class World:
    def __init__(self, **job: Any):
        self.clock = FakeClock(datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC))
        self.scheduler = Scheduler(self.clock)
        self.executor = FakeExecutor(self.clock)
        self.events: list[tuple[str, int | None, bool]] = []
        self.policy = AlertPolicy(self.clock)
        self.sink = PolicyEvents(self.policy, self._emit)
        cfg = parse_config(config({"notify": ["ops"], **job}))
        ctx = Context(clock=self.clock, scheduler=self.scheduler, daemon=cfg.daemon, executor=self.executor,
                      changed=lambda name: None, rng=random.Random(1), events=self.sink)
        self.runner = JobRunner(cfg.jobs[0], JobMemory(), ctx)
        self.runner.activate(startup=True)

    def _emit(self, runner: JobRunner, record: RunRecord | None, decision: Decision, extra: dict[str, Any]) -> None:
        self.events.append((decision.kind.value, record.run if record else None, decision.reminder))

    def run_for(self, seconds: float) -> None:
        """Drive the scheduler like the daemon does, one tick per due instant."""
        end = self.clock.monotonic() + seconds
        while self.clock.monotonic() < end:
            delay = self.scheduler.tick()
            self.sink.check_slow(lambda name: self.runner if name == self.runner.cfg.name else None)
            nxt = self.policy.next_deadline()
            if nxt is not None:
                delay = min(delay, max(0.0, nxt - self.clock.monotonic()))
            self.clock.sleep(min(max(delay, 0.001), end - self.clock.monotonic()))
        self.scheduler.tick()

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.events]


def test_storm_job_failing_every_second_for_10s_sends_one_alert() -> None:
    w = World()
    w.run_for(10)
    assert w.runner.mem.runs >= 10
    assert w.events == [("failure", 1, False)]


def test_recovery_after_failures_then_silence_then_fresh_alert() -> None:
    w = World()
    w.run_for(3)
    w.executor.outcome = Outcome.SUCCESS
    w.run_for(3)
    w.executor.outcome = Outcome.FAILURE
    w.run_for(2)
    assert w.kinds() == ["failure", "recovery", "failure"]


def test_notify_after_waits_for_n_failures_in_a_row() -> None:
    w = World(notify_after=3)
    w.run_for(2)
    assert w.events == []
    w.run_for(5)
    assert w.events == [("failure", 3, False)]


def test_success_below_notify_after_is_no_recovery() -> None:
    w = World(notify_after=3)
    w.run_for(2)
    w.executor.outcome = Outcome.SUCCESS
    w.run_for(2)
    assert w.events == []


def test_remind_every_sends_one_reminder_per_period() -> None:
    w = World(remind_every="5s")
    w.run_for(12.5)
    assert w.kinds() == ["failure", "failure", "failure"]
    assert [r for _, _, r in w.events] == [False, True, True]
    runs = [run for _, run, _ in w.events]
    assert runs[1] - runs[0] == 5 and runs[2] - runs[1] == 5


def test_stopped_event_when_on_error_stop_stops_the_job() -> None:
    w = World(on_error="stop", max_failures=3)
    w.run_for(6)
    assert w.kinds() == ["failure", "stopped"]
    assert w.runner.mem.stopped and w.runner.mem.runs == 3


def test_slow_once_per_run() -> None:
    w = World(notify_on=["slow"], slow_after="2s", cron="0 0 * * * *")
    w.executor.outcome = None
    w.runner.run_now()
    w.run_for(10)
    assert w.events == [("slow", 1, False)]


def test_slow_after_alone_asks_for_slow_events() -> None:
    w = World(slow_after="2s", cron="0 0 * * * *")  # notify_on left at its default
    w.executor.outcome = None
    w.runner.run_now()
    w.run_for(5)
    assert w.events == [("slow", 1, False)]


def test_slow_not_sent_for_a_run_that_ended_in_time() -> None:
    w = World(notify_on=["slow"], slow_after="2s", cron="0 0 * * * *")
    w.executor.outcome = None
    record = w.runner.run_now()
    w.run_for(1)
    w.runner.finish_run(record, RunResult(Outcome.SUCCESS, "exit status 0", 0, None, 9, 0.0, 1.0, ()))
    w.run_for(5)
    assert w.events == []


def test_start_success_and_skipped_only_when_asked() -> None:
    w = World(notify_on=["start", "success", "skipped"], cron="0 0 * * * *")
    w.executor.outcome = Outcome.SUCCESS
    w.runner.run_now()
    assert w.kinds() == ["start", "success"]
    w.executor.outcome = None
    w.runner.run_now()
    w.runner._maybe_start(Trigger.SCHEDULE, None)
    assert w.kinds() == ["start", "success", "start", "skipped"]
    quiet = World(cron="0 0 * * * *")
    quiet.executor.outcome = Outcome.SUCCESS
    quiet.runner.run_now()
    assert quiet.events == []


def test_restart_during_a_failure_streak_neither_realerts_nor_forgets_recovery() -> None:
    w = World()
    w.run_for(3)
    mem = w.runner.mem
    again = World()  # a new daemon: same memory, fresh policy
    again.runner.mem.consecutive_failures = mem.consecutive_failures
    again.run_for(3)
    assert again.events == []
    again.executor.outcome = Outcome.SUCCESS
    again.run_for(1.5)
    assert again.kinds() == ["recovery"]


# --- events and pings ---


def test_event_object_and_summary() -> None:
    record = RunRecord(run=7, trigger="schedule", scheduled=None, started="2026-03-01T12:00:00+00:00",
                       outcome="failure", description="exit status 2", exit_code=2, tail=["boom"])
    event = make_event(EventKind.FAILURE, "backup", "h1", "2026-03-01T12:00:01+00:00", "idle", 1, record.to_dict(),
                       "9.9")
    assert set(event) == {"event", "job", "host", "time", "state", "consecutive_failures", "run", "koku_version"}
    assert event["run"]["tail"] == ["boom"] and event["koku_version"] == "9.9"
    assert summary(event) == 'koku@h1: job "backup" failed (exit status 2), run 7'


@pytest.mark.parametrize("outcome,exit_code,kind,path", [
    ("success", 0, "end", "https://hc.example/u"),
    ("failure", 3, "end", "https://hc.example/u/3"),
    ("timeout", None, "end", "https://hc.example/u/fail"),
    (None, None, "start", "https://hc.example/u/start"),
])
def test_ping_urls(outcome: str | None, exit_code: int | None, kind: str, path: str) -> None:
    record = RunRecord(run=4, trigger="schedule", scheduled=None, started="2026-03-01T12:00:00+00:00",
                       outcome=outcome, exit_code=exit_code)
    url = ping_url("https://hc.example/u/", kind, "backup", record)
    base, _, rid = url.partition("?rid=")
    assert base == path and len(rid) == 36
    assert rid == ping_url("https://hc.example/u", "start", "backup", record).partition("?rid=")[2]


def test_ping_body_is_bounded_to_the_newest_bytes() -> None:
    record = RunRecord(run=1, trigger="manual", scheduled=None, started="", tail=["a" * 8000, "b" * 8000])
    body = ping_body(record, limit=10_000)
    assert len(body) == 10_000 and body.endswith(b"b" * 8000)


def test_skipped_once_per_blocking_run() -> None:
    w = World(notify_on=["skipped"], cron="* * * * * *")
    w.executor.outcome = None  # the first run never ends: every later slot is skipped
    w.run_for(5)
    assert w.runner.mem.skipped >= 4
    assert w.events == [("skipped", None, False)]
    first = next(iter(w.runner.active.values()))
    w.runner.finish_run(first, RunResult(Outcome.SUCCESS, "exit status 0", 0, None, 9, 0.0, 1.0, ()))
    w.run_for(2.5)  # the next run starts, and blocks again: a new skip is news
    assert w.kinds() == ["skipped", "skipped"]
