"""Run the real koku daemon on a SteppedClock:
``python stepped_daemon.py CONFIG STATE_DIR START END [JUMP_AT JUMP_BY]``.

The daemon is koku's own ``Daemon`` (config, state dir, pid lock, control socket, scheduler and saver
greenlets, real ``/bin/sh`` children), only its clock is fake. Time moves in discrete steps: once the
daemon is idle (no run in flight, the scheduler greenlet waiting on the clock), the clock is advanced
to the earliest deadline any greenlet waits for, never past END. So the daemon sees exactly the
waits it asked for, hours pass in a second, and a run that starts late or early shows in its record.

START, END and JUMP_AT are ISO 8601 instants. With JUMP_AT, the wall clock alone is stepped by
JUMP_BY seconds (negative: back) the first time the clock reaches JUMP_AT, as an NTP step would;
END is then a wall time on the stepped clock. Prints one JSON line with the number of steps at the end; the
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


def wait_idle(daemon: Daemon, clock: SteppedClock, runner: gevent.Greenlet, since: int = 0) -> None:
    """Until no run is in flight and the scheduler waits on the clock (in a wait begun after the first
    ``since``: after a step its old wait may not have ended yet)."""
    waited = 0.0
    while True:
        if runner.dead:
            raise SystemExit(f"the daemon stopped by itself: {runner.exception!r}")
        executor = daemon.executor
        # Idle means nothing in flight and nothing handed to the starter either: a run queued there but
        # not spawned yet would otherwise be caught by the next step (or the stop) before it starts.
        if (executor is not None and not executor.running() and not daemon.starts.queued()
                and clock.waiting("scheduler", since)):
            return
        gevent.sleep(0.001)
        waited += 0.001
        if waited > IDLE_LIMIT:
            raise SystemExit(f"the daemon did not settle within {IDLE_LIMIT}s at {clock.now().isoformat()}")


def main(config: str, state_dir: str, start: str, end: str, jump_at: str | None = None,
         jump_by: str | None = None) -> int:
    logfmt.setup("logfmt", sys.stderr)
    clock = SteppedClock(datetime.fromisoformat(start))
    until = datetime.fromisoformat(end)
    jump = None if jump_at is None else (datetime.fromisoformat(jump_at), float(jump_by or 0))
    daemon = Daemon(Path(config), StatePaths(Path(state_dir)), clock=clock)
    runner = gevent.spawn(daemon.run)
    runner.name = "daemon"
    steps = 0
    wait_idle(daemon, clock, runner)
    while clock.now() < until or jump is not None:
        if jump is not None and clock.now() >= jump[0]:
            since = clock.registered
            clock.jump(jump[1])
            jump = None
            wait_idle(daemon, clock, runner, since)
            continue
        target = until if jump is None else min(until, jump[0])
        deadline = clock.next_deadline()
        left = (target - clock.now()).total_seconds()
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
    sys.exit(main(*sys.argv[1:7]))
