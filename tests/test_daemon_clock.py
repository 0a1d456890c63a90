"""The daemon's clocks: GeventClock waits on the hub with real timeouts; SteppedClock wakes waiting
greenlets only when a test moves it, so the whole daemon can run on it (tests/test_dst_runs.py)."""

from __future__ import annotations

from datetime import datetime, timezone

import gevent
import gevent.event
import pytest

from koku.daemon.clock import GeventClock, SteppedClock

pytestmark = pytest.mark.fast

START = datetime(2026, 11, 1, 4, 0, tzinfo=timezone.utc)


def test_gevent_clock_waits_until_ready_or_timeout():
    clock = GeventClock()
    ev = gevent.event.Event()
    t0 = clock.monotonic()
    assert clock.wait(ev, 0.05) is False
    assert 0.04 < clock.monotonic() - t0 < 1.0
    gevent.spawn_later(0.02, ev.set)  # the hub sets it while we wait
    t0 = clock.monotonic()
    assert clock.wait(ev, 5.0) is True
    assert clock.monotonic() - t0 < 2.0
    g = gevent.spawn(gevent.sleep, 0.01)
    assert clock.wait(g, 5.0) is True and g.dead


def test_stepped_clock_wakes_a_wait_only_when_advanced_past_its_deadline():
    clock = SteppedClock(START)
    ev = gevent.event.Event()
    results: list[bool] = []
    waiter = gevent.spawn(lambda: results.append(clock.wait(ev, 60.0)))
    waiter.name = "w"
    gevent.sleep(0.05)  # real time passes; fake time does not
    assert results == [] and clock.waiting("w") and clock.next_deadline() == 1060.0
    clock.advance(59.0)
    gevent.sleep(0.01)
    assert results == []
    clock.advance(1.0)
    waiter.join(timeout=2)
    assert results == [False] and not clock.waiting("w")
    assert clock.now() == datetime(2026, 11, 1, 4, 1, tzinfo=timezone.utc)


def test_stepped_clock_wait_returns_when_the_event_is_set_and_sleep_needs_advancing():
    clock = SteppedClock(START)
    ev = gevent.event.Event()
    results: list[bool] = []
    waiter = gevent.spawn(lambda: results.append(clock.wait(ev, 3600.0)))
    gevent.sleep(0.01)
    ev.set()
    waiter.join(timeout=2)
    assert results == [True] and clock.next_deadline() is None
    sleeper = gevent.spawn(clock.sleep, 5.0)
    gevent.sleep(0.05)
    assert not sleeper.dead
    clock.advance(5.0)
    sleeper.join(timeout=2)
    assert sleeper.dead


def test_stepped_clock_jump_moves_only_the_wall_clock_and_tells_listeners():
    clock = SteppedClock(START)
    told: list[datetime] = []
    clock.on_set(lambda: told.append(clock.now()))
    clock.jump(-7200)
    assert clock.now() == datetime(2026, 11, 1, 2, 0, tzinfo=timezone.utc)
    assert clock.monotonic() == 1000.0 and told == [clock.now()]
    with pytest.raises(ValueError):
        clock.advance(-1)
