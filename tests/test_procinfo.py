"""koku.core.procinfo: parsing /proc/PID/stat, the parent tree, environments (pure and this process)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from koku.core import procinfo
from koku.core.procinfo import Proc


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"42 (sh) S 1 42 42 0 -1", Proc(42, b"S", 1, 42, 42)),
        # a command name with spaces and parentheses: fields start after the last ")"
        (b"43 (a) b (c)) Z 7 8 9 0 -1", Proc(43, b"Z", 7, 8, 9)),
        (b"44 (x)", None),
    ],
)
def test_parse_stat(data: bytes, expected: Proc | None) -> None:
    assert procinfo._parse(int(data.split()[0]), data) == expected


def test_descendants_walks_the_whole_subtree_but_not_the_roots() -> None:
    table = {p.pid: p for p in [Proc(10, b"S", 1, 10, 10), Proc(11, b"S", 10, 10, 10), Proc(12, b"Z", 11, 12, 12),
                                Proc(13, b"S", 12, 12, 12), Proc(20, b"S", 1, 20, 20)]}
    assert procinfo.descendants(table, [10]) == {11, 12, 13}
    assert procinfo.descendants(table, [20]) == set()
    assert procinfo.descendants(table, [11, 20]) == {12, 13}


def test_this_process_and_its_environment() -> None:
    me = procinfo.stat(os.getpid())
    assert me is not None and me.live and me.ppid == os.getppid() and me.pgrp == os.getpgrp()
    table = procinfo.scan()
    assert table is not None and table[os.getpid()] == me
    child = subprocess.Popen([sys.executable, "-c", "import sys; print('ready', flush=True); sys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={"KOKU_JOB": "a b", "KOKU_RUN_ID": "7"})
    try:
        # Popen returns once exec has begun; the new environment is readable only a little later.
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        assert procinfo.environ_has(child.pid, {b"KOKU_JOB": b"a b", b"KOKU_RUN_ID": b"7"})
        assert not procinfo.environ_has(child.pid, {b"KOKU_RUN_ID": b"70"})
        assert not procinfo.environ_has(child.pid, {b"KOKU_RUN_ID": b"7"}, absent=(b"KOKU_JOB",))
        assert procinfo.environ_has(child.pid, {b"KOKU_RUN_ID": b"7"}, absent=(b"KOKU_NOTIFIER",))
        assert procinfo.pid_alive(child.pid)
    finally:
        child.communicate(b"")  # closes stdin and stdout, reaps it
    assert not procinfo.pid_alive(child.pid)
    assert not procinfo.environ_has(child.pid, {b"KOKU_JOB": b"a b"})
