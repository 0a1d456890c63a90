"""Run the real koku daemon on a SteppedClock: ``python stepped_daemon.py CONFIG STATE_DIR START END``.

The daemon is koku's own ``Daemon`` (config, state dir, pid lock, control socket, scheduler and saver
greenlets, real ``/bin/sh`` children), only its clock is fake. Time moves in discrete steps: once the
daemon is idle (no run in flight, the scheduler greenlet waiting on the clock), the clock is advanced
to the earliest deadline any greenlet waits for, never past END. So the daemon sees exactly the
waits it asked for, hours pass in a second, and a run that starts late or early shows in its record.

START and END are ISO 8601 instants. Prints one JSON line with the number of steps at the end; the
daemon's own log goes to stderr. Used by tests/test_dst_runs.py.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import gevent

from koku.core import logfmt
from koku.core.paths import StatePaths
from koku.daemon.clock import SteppedClock
from koku.daemon.lifecycle import Daemon

IDLE_LIMIT = 20.0  # real seconds the daemon may take to settle after one step


def wait_idle(daemon: Daemon, clock: SteppedClock, runner: gevent.Greenlet) -> None:
    waited = 0.0
    while True:
        if runner.dead:
            raise SystemExit(f"the daemon stopped by itself: {runner.exception!r}")
        executor = daemon.executor
        if executor is not None and not executor.running() and clock.waiting("scheduler"):
            return
        gevent.sleep(0.001)
        waited += 0.001
        if waited > IDLE_LIMIT:
            raise SystemExit(f"the daemon did not settle within {IDLE_LIMIT}s at {clock.now().isoformat()}")


def main(config: str, state_dir: str, start: str, end: str) -> int:
    logfmt.setup("logfmt", sys.stderr)
    clock = SteppedClock(datetime.fromisoformat(start))
    until = datetime.fromisoformat(end)
    daemon = Daemon(Path(config), StatePaths(Path(state_dir)), clock=clock)
    runner = gevent.spawn(daemon.run)
    runner.name = "daemon"
    steps = 0
    wait_idle(daemon, clock, runner)
    while clock.now() < until:
        deadline = clock.next_deadline()
        left = (until - clock.now()).total_seconds()
        step = left if deadline is None else min(left, max(0.0, deadline - clock.monotonic()))
        clock.advance(step)
        steps += 1
        wait_idle(daemon, clock, runner)
    daemon.request_stop()
    runner.join(timeout=30)
    if not runner.dead:
        raise SystemExit("the daemon did not stop")
    print(json.dumps({"steps": steps, "now": clock.now().isoformat(), "result": runner.value}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
