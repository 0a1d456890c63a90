"""Daemon internals that end-to-end tests cannot reach: a crashing scheduler greenlet recovers."""

from __future__ import annotations

import os

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

    def flaky_tick(**kw):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real_tick(**kw)

    monkeypatch.setattr(daemon.scheduler, "tick", flaky_tick)
    runner = gevent.spawn(daemon.run)
    try:
        with gevent.Timeout(10):
            while len(calls) < 2:
                gevent.sleep(0.05)
        assert daemon.greenlets.get("scheduler").dead is False
    finally:
        daemon.request_stop()
        runner.join(10)
    assert runner.successful() and runner.value == 0


def test_peer_groups_from_proc_count_only_for_the_same_uid():
    from koku.daemon.peers import Peer, _proc_groups

    me = Peer(os.getpid(), os.getuid(), os.getgid())
    assert _proc_groups(me) == set(os.getgroups())
    assert _proc_groups(me._replace(uid=os.getuid() + 12345)) == set()  # a reused pid: not our peer
    assert _proc_groups(me._replace(pid=0)) == set()


def test_peer_groups_over_a_socketpair_are_our_own():
    import socket

    from koku.daemon.peers import peer_groups, peer_of

    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        peer = peer_of(a)
        assert peer is not None and peer.pid == os.getpid() and peer.uid == os.getuid()
        assert peer_groups(a, peer) == set(os.getgroups())
