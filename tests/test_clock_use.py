"""Lint-style checks on the source (AST): how the daemon's code paths handle time.

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
# Everything the running daemon executes that deals with instants: the policy and timer heap in core,
# and the whole daemon side. clock.py is the one module allowed to do the arithmetic (in UTC).
DAEMON_PATHS = sorted(
    [ROOT / "core" / n for n in ("runner.py", "scheduler.py", "model.py", "state.py", "joblog.py", "logfmt.py")]
    + list((ROOT / "daemon").glob("*.py"))
)


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
