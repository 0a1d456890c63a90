"""Daemon internals that end-to-end tests cannot reach: a crashing scheduler greenlet recovers."""

from __future__ import annotations

import gevent
import tomli_w

from koku.daemon.lifecycle import Daemon
from koku.core.paths import StatePaths


def test_a_crashed_scheduler_greenlet_is_restarted(tmp_path, monkeypatch):
    cfg = tmp_path / "config.toml"
    cfg.write_text(tomli_w.dumps({"job": [{"name": "x", "cron": "@yearly", "command": "true"}]}))
    daemon = Daemon(cfg, StatePaths(tmp_path / "state"))
    calls = []
    real_tick = daemon.scheduler.tick

    def flaky_tick():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real_tick()

    monkeypatch.setattr(daemon.scheduler, "tick", flaky_tick)
    runner = gevent.spawn(daemon.run)
    try:
        with gevent.Timeout(10):
            while len(calls) < 2:
                gevent.sleep(0.05)
        assert daemon._greenlets["scheduler"].dead is False
    finally:
        daemon.request_stop()
        runner.join(10)
    assert runner.successful() and runner.value == 0
