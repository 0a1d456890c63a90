"""Lint-style checks on the source (AST): how koku reads the time and waits.

- Nothing outside the two clock modules (koku/core/clock.py, koku/daemon/clock.py) reads the time or
  waits with a timeout: no time.time/sleep/monotonic, datetime.now/utcnow, gevent.sleep/spawn_later/
  joinall/wait/Timeout, and no ``.wait(timeout)``, ``.join(timeout=)``, ``.get(timeout=)``,
  ``.kill(timeout=)`` or ``.stop(timeout=)`` on events, greenlets or servers. Everything goes through
  the injectable ``Clock``, so a fake clock drives the whole daemon and the CLI (issue 9).
- No ``+ timedelta`` / ``- timedelta`` in the daemon's code paths: on a zone-local datetime it keeps
  the wall time and drops ``fold``, which made the second pass of a repeated hour run an hour early
  (issue 15). Instants move only through ``koku.core.clock.shifted``, which works in UTC.

Each check is shown to fail on a deliberately broken snippet (the ``*_catches_*`` tests), so it cannot
pass by looking at nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parent.parent / "koku"
CLOCK_MODULES = {ROOT / "core" / "clock.py", ROOT / "daemon" / "clock.py"}
ALL_MODULES = sorted(p for p in ROOT.rglob("*.py") if p not in CLOCK_MODULES)
# No module but the clocks needs timedelta arithmetic: instants move through clock.shifted (UTC), and
# schedule.py works on POSIX seconds. So the check covers every module, the daemon's code paths and the
# rest alike.
DAEMON_PATHS = ALL_MODULES


def _is_timedelta_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    return (isinstance(f, ast.Name) and f.id == "timedelta") or (isinstance(f, ast.Attribute) and f.attr == "timedelta")


def timedelta_arithmetic(source: str) -> list[int]:
    """Line numbers where a timedelta (a ``timedelta(...)`` call, or a name bound to one) is added to
    or subtracted from something."""
    tree = ast.parse(source)
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and _is_timedelta_call(node.value):
            bound.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and node.value is not None and _is_timedelta_call(node.value):
            if isinstance(node.target, ast.Name):
                bound.add(node.target.id)

    def is_delta(n: ast.AST) -> bool:
        if _is_timedelta_call(n):
            return True
        if isinstance(n, ast.Name) and n.id in bound:
            return True
        # timedelta * k, k * timedelta
        if isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Mult, ast.Div)):
            return is_delta(n.left) or is_delta(n.right)
        return False

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
            if is_delta(node.left) or is_delta(node.right):
                lines.append(node.lineno)
        elif isinstance(node, ast.AugAssign) and isinstance(node.op, (ast.Add, ast.Sub)) and is_delta(node.value):
            lines.append(node.lineno)
    return sorted(lines)


@pytest.mark.parametrize("path", DAEMON_PATHS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_timedelta_arithmetic_on_instants_in_daemon_code_paths(path):
    found = timedelta_arithmetic(path.read_text())
    assert not found, (f"{path.relative_to(ROOT.parent)}: lines {found}: `+/- timedelta` on an instant; "
                       "use koku.core.clock.shifted(instant, seconds), which works in UTC")


def test_timedelta_lint_catches_the_issue_15_bug():
    # The line that caused issue 15, and its variants.
    broken = (
        "from datetime import timedelta\n"
        "def f(nxt, delay, now):\n"
        "    due = nxt + timedelta(seconds=delay)\n"
        "    KEEP = timedelta(hours=3)\n"
        "    back = now - KEEP * 2\n"
        "    now += timedelta(seconds=1)\n"
        "    ok = (now - nxt).total_seconds() + delay\n"
    )
    assert timedelta_arithmetic(broken) == [3, 5, 6]


# module -> functions that read the time or wait on the real clock
FORBIDDEN_FUNCS = {
    "time": {"time", "time_ns", "sleep", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns"},
    "datetime": {"now", "utcnow", "today"},
    "date": {"today"},
    "gevent": {"sleep", "spawn_later", "joinall", "wait", "Timeout", "with_timeout", "idle"},
}
# methods that wait when given a timeout (Event.wait(5), greenlet.join(timeout=5), server.stop(timeout=2))
TIMED_METHODS = {"wait", "join", "get", "kill", "stop", "acquire"}


def clock_bypasses(source: str) -> list[tuple[int, str]]:
    """(line, what) for every read of the time or timed wait that does not go through a Clock."""
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in FORBIDDEN_FUNCS:
            for alias in node.names:
                if alias.name in FORBIDDEN_FUNCS[node.module]:
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        attr, owner = node.func.attr, node.func.value
        owner_name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
        if attr in FORBIDDEN_FUNCS.get(owner_name, ()):
            found.append((node.lineno, f"{owner_name}.{attr}()"))
        elif attr in TIMED_METHODS and not owner_name.lower().endswith("clock"):  # clock.wait(ev, t) is the way
            timed = any(k.arg == "timeout" for k in node.keywords)
            # Event.wait(5) / Condition.wait(5): wait's one positional argument is the timeout.
            # (str.join(parts), dict.get(key) and RunWaiters.wait(name, run) take ones that are not.)
            if attr == "wait" and len(node.args) == 1:
                timed = True
            if timed:
                found.append((node.lineno, f".{attr}(timeout)"))
    return sorted(found)


@pytest.mark.parametrize("path", ALL_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_time_is_read_and_waited_on_only_through_the_clock(path):
    found = clock_bypasses(path.read_text())
    assert not found, f"{path.relative_to(ROOT.parent)}: " + "; ".join(f"line {n}: {what}" for n, what in found) + (
        " -- use the Clock (koku.core.clock / koku.daemon.clock): now(), monotonic(), sleep(), wait(obj, timeout)")


def test_clock_lint_catches_every_way_the_daemon_used_to_wait():
    # What the daemon and the CLI did before issue 9's clock bullet was done.
    broken = (
        "import time, gevent\n"
        "from datetime import datetime, timezone\n"
        "from time import sleep\n"
        "def f(ev, pump, server, parts):\n"
        "    ev.wait(timeout=3)\n"
        "    ev.wait(0.2)\n"
        "    gevent.sleep(5)\n"
        "    gevent.spawn_later(1.0, f)\n"
        "    pump.join(timeout=2)\n"
        "    pump.kill(block=True, timeout=1.0)\n"
        "    gevent.joinall([pump], timeout=5)\n"
        "    server.stop(timeout=2)\n"
        "    start = datetime.now(timezone.utc)\n"
        "    deadline = time.monotonic() + 30\n"
        "    time.sleep(0.05)\n"
        "    ev.wait()\n"
        "    pump.join()\n"
        "    self.clock.wait(ev, 3), waiters.wait('job', 3)\n"
        "    return ', '.join(parts), {}.get('k')\n"
    )
    assert [line for line, _ in clock_bypasses(broken)] == [3] + list(range(5, 16))
