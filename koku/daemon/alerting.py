"""The daemon's events sink: the runner reports run starts, ends and skips here; this applies the
alert policy (core/alerts.py), builds the events, queues deliveries (notify.py) and pings, notes them in
the run's record, counts for the metrics, and watches for slow runs in one named greenlet.

Nothing here may block the caller: the runner calls in from the scheduler and run greenlets.

The senders (notify_send.py: urllib, ssl, smtplib, email; ~6 MB of RSS) are imported only by a daemon
whose config has a notifier or a ping (``prepare``, at start and after a reload), so that a daemon
without alerts does not carry them, and one with alerts does not import on the hub mid-run.
"""

from __future__ import annotations

import os
import socket
from functools import partial
from typing import Any, Callable

import gevent
import gevent.event

from koku import __version__
from koku.core import logfmt
from koku.core.alerts import AlertPolicy, Decision, PolicyEvents, make_event, ping_body, ping_url
from koku.core.clock import Clock
from koku.core.config import Config
from koku.core.model import Outcome, RunRecord
from koku.core.notifyconf import NO_ALERTS, EventKind, NotifierConfig
from koku.core.runner import JobRunner, iso
from koku.core.stats import RunStats
from koku.daemon.notify import Delivery, Dispatcher
from koku.errors import DeliveryError

NOTIFY_GRACE = 5.0  # seconds pending notifications get at daemon shutdown
PING_TIMEOUT = 10.0  # seconds per ping attempt
PING_RETRIES = 3
SLOW_CHECK_MAX = 60.0  # seconds between looks for slow runs at most (the clock is re-read each time)
USER_AGENT = f"koku/{__version__}"


class DaemonAlerts:
    def __init__(self, clock: Clock, config: Callable[[], Config], runner: Callable[[str], JobRunner | None]):
        self.clock = clock
        self._config = config  # a callable: reload replaces the config
        self._runner = runner
        self.host = socket.gethostname()
        self.policy = AlertPolicy(clock)
        self.events = PolicyEvents(self.policy, self._emit)
        self.dispatcher = Dispatcher(clock)
        self.stats = RunStats()
        self.on_run_ended: Callable[[], None] = lambda: None  # the metrics file writer listens here
        self._base_env = dict(os.environ)
        self._wake = gevent.event.Event()
        self._watcher: gevent.Greenlet | None = None
        self._stopped = False

    # ----- the runner's reports (RunEvents) ---------------------------------------------------
    def run_started(self, runner: JobRunner, record: RunRecord) -> None:
        self.stats.started(runner.cfg.name, record.started, record.scheduled)
        alerts = runner.cfg.alerts
        if alerts is NO_ALERTS:
            return
        self.events.run_started(runner, record)
        if alerts.slow_after is not None:
            self._wake.set()
        if alerts.ping:
            self._ping(runner, record, "start")

    def run_finished(self, runner: JobRunner, record: RunRecord, failures_before: int, stopped_before: bool) -> None:
        self.stats.finished(runner.cfg.name, record.outcome, record.ended, record.duration_s)
        alerts = runner.cfg.alerts
        if alerts is not NO_ALERTS:
            self.events.run_finished(runner, record, failures_before, stopped_before)
            # A run cancelled by shutdown neither succeeded nor failed: Healthchecks keeps waiting.
            if alerts.ping and record.outcome != Outcome.CANCELLED.value:
                self._ping(runner, record, "end")
        self.on_run_ended()

    def run_skipped(self, runner: JobRunner, scheduled: str | None, reason: str) -> None:
        if runner.cfg.alerts is not NO_ALERTS:
            self.events.run_skipped(runner, scheduled, reason)

    # ----- events -----------------------------------------------------------------------------
    def _emit(self, runner: JobRunner, record: RunRecord | None, decision: Decision, extra: dict[str, Any]) -> None:
        job = runner.cfg.name
        event = make_event(decision.kind, job, self.host, iso(self.clock.now()) or "", runner.state.value,
                           runner.mem.consecutive_failures, record.to_dict() if record else None, __version__, **extra)
        logfmt.info("alert event", job=job, run=record.run if record else None, event=decision.kind.value,
                    notify=",".join(runner.cfg.alerts.notify))
        config = self._config()
        for name in runner.cfg.alerts.notify:
            notifier = config.alerting.notifiers.get(name)
            if notifier is None:  # cannot happen with a validated config; a bug must not stop the others
                continue
            self._queue(runner, record, name, decision.kind.value, partial(self._send, notifier, event),
                        notifier.retries)

    def prepare(self, config: Config) -> None:
        """Import the senders now if ``config`` can send anything."""
        if config.alerting.notifiers or any(job.alerts.ping for job in config.jobs):
            self._senders()

    @staticmethod
    def _senders() -> Any:
        from koku.daemon import notify_send

        return notify_send

    def _send(self, notifier: NotifierConfig, event: dict[str, Any]) -> str:
        config = self._config()
        return self._senders().deliver(self.clock, notifier, event, smtp=config.alerting.smtp, host=self.host,
                                   shell=config.daemon.shell, base_env=self._base_env, user_agent=USER_AGENT)

    def _ping(self, runner: JobRunner, record: RunRecord, kind: str) -> None:
        assert runner.cfg.alerts.ping is not None
        url = ping_url(runner.cfg.alerts.ping, kind, runner.cfg.name, record)
        body = ping_body(record) if kind == "end" else b""
        headers = {"User-Agent": USER_AGENT, "Content-Type": "text/plain; charset=utf-8"}
        send = partial(self._post, url, body, headers)
        self._queue(runner, record, "ping", kind, send, PING_RETRIES)

    def _post(self, url: str, body: bytes, headers: dict[str, str]) -> str:
        return self._senders().post(self.clock, url, body, headers, PING_TIMEOUT)

    def _queue(self, runner: JobRunner, record: RunRecord | None, target: str, kind: str, send: Callable[[], str],
               retries: int) -> None:
        entry: dict[str, Any] = {"notifier": target, "event": kind, "delivered": None}
        if record is not None:
            runner.note_notification(record, entry)

        def done(delivered: bool, answer: str) -> None:
            self.stats.notified(target, "delivered" if delivered else "failed")
            if record is not None:
                runner.note_notification(record, entry, delivered=delivered, answer=answer)

        self.dispatcher.submit(Delivery(runner.cfg.name, target, kind, send, retries, done))

    # ----- `ku notify test` -------------------------------------------------------------------
    def test(self, name: str) -> tuple[bool, str]:
        """Send a test event through notifier ``name`` now, once. Returns (delivered, answer or reason)."""
        notifier = self._config().alerting.notifiers.get(name)
        if notifier is None:
            known = ", ".join(sorted(self._config().alerting.notifiers)) or "none"
            return False, f'unknown notifier "{name}" (defined: {known})'
        event = make_event(EventKind.TEST, "", self.host, iso(self.clock.now()) or "", "idle", 0, None, __version__,
                           notifier=name)
        try:
            answer = self._send(notifier, event)
        except DeliveryError as exc:
            self.stats.notified(name, "failed")
            return False, f"{name} ({notifier.describe()}): not delivered: {exc.reason}"
        self.stats.notified(name, "delivered")
        return True, f"{name} ({notifier.describe()}): delivered: {answer}"

    # ----- slow runs --------------------------------------------------------------------------
    def start(self) -> None:
        self.prepare(self._config())
        self._watcher = gevent.Greenlet(self._watch_slow)
        self._watcher.name = "alerts:slow"
        self._watcher.link_exception(self._watcher_died)
        self._watcher.start()

    def _watch_slow(self) -> None:
        while not self._stopped:
            self.events.check_slow(self._runner)
            deadline = self.policy.next_deadline()
            wait = SLOW_CHECK_MAX if deadline is None else max(0.0, deadline - self.clock.monotonic())
            self._wake.clear()
            self.clock.wait(self._wake, min(wait, SLOW_CHECK_MAX))

    def _watcher_died(self, glet: gevent.Greenlet) -> None:
        logfmt.error("slow-run watcher died; restarting it in 1s", reason=repr(glet.exception))
        if not self._stopped:
            self._watcher = gevent.Greenlet(self._restart_later)
            self._watcher.name = "alerts:slow"
            self._watcher.link_exception(self._watcher_died)
            self._watcher.start()

    def _restart_later(self) -> None:
        # A second's pause, so that a watcher that dies at once cannot spin.
        self.clock.sleep(1.0)
        self._watch_slow()

    def forget(self, job: str) -> None:
        self.policy.forget(job)

    def close(self, grace: float) -> None:
        """Daemon shutdown: stop watching, give pending deliveries ``grace`` seconds."""
        self._stopped = True
        if self._watcher is not None:
            self._watcher.unlink(self._watcher_died)
            self._watcher.kill(block=False)
        self.dispatcher.close(grace)
