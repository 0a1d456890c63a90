"""Containment: a timeout, a cancel and a daemon stop kill everything a run started, including a
grandchild that setsid()s away from the run's process group and ignores SIGTERM.

Both kinds run here: ``cgroup`` (a cgroup v2 child per run; skipped, with the reason, where this
machine has no writable cgroup2) and the ``subreaper`` fallback, forced with KOKU_CONTAINMENT.
"Gone" is checked by reading /proc here, independently of koku.core.procinfo on purpose: the check
must not share a bug with the code it checks.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Iterator

import gevent
import pytest
import tomli_w

from conftest import alive, wait_for
from koku.core.clock import RealClock
from koku.core.joblog import JobLog
from koku.core.model import Outcome
from koku.daemon.process import ProcessRun

CLOCK = RealClock(gevent.sleep)
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C"}


def _cgroup_reason() -> str | None:
    """Why a cgroup per run cannot be had here, or None if it can."""
    from koku.daemon.cgroup import own_cgroup
    from koku.errors import CgroupUnavailable

    try:
        own = own_cgroup()
    except CgroupUnavailable as exc:
        return str(exc)
    probe = own / f"koku-probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError as exc:
        return f"cannot create a cgroup under {own}: {exc.strerror}"
    probe.rmdir()
    return None


CGROUP_REASON = _cgroup_reason()
KINDS = [
    pytest.param("cgroup", marks=pytest.mark.skipif(CGROUP_REASON is not None, reason=f"no cgroup: {CGROUP_REASON}")),
    "subreaper",
]


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def gone(pid: int) -> bool:
    st = _stat(pid)
    return st is None or st[0] in "ZX"


def session_of(pid: int) -> int:
    st = _stat(pid)
    assert st is not None, f"pid {pid} not found"
    return int(st[3])


# A job that ignores TERM and starts a grandchild that leaves the job's session and group (setsid)
# and ignores TERM too: only something that knows every process of the run can end it.
ESCAPE = ("trap '' TERM; setsid sh -c 'trap \"\" TERM; echo $$ > {pid}.tmp; mv {pid}.tmp {pid}; "
          "exec sleep 300' & wait")


def config(*jobs: dict, daemon: dict | None = None) -> str:
    return tomli_w.dumps({"job": list(jobs), "daemon": {"kill_grace": "1s", "shutdown_grace": "1s", **(daemon or {})}})


def start(kenv, kind: str) -> None:
    kenv.env["KOKU_CONTAINMENT"] = kind
    kenv.start()
    assert kenv.request("DaemonStatus")["DaemonStatus"]["containment"] == kind
    shown = kenv.ku("daemon", "status").stdout
    assert f"containment: {kind}" in shown, shown


@pytest.mark.e2e
@pytest.mark.parametrize("kind", KINDS)
def test_timeout_kills_a_setsid_grandchild_that_ignores_term(kenv, kind: str) -> None:
    gc = kenv.work / "gc.pid"
    kenv.write_config(config({"name": "escape", "cron": "@yearly", "timeout": "1s",
                              "command": ESCAPE.format(pid=gc)}))
    start(kenv, kind)
    res = kenv.ku("run", "escape", "--wait", timeout=30)
    assert "timed out after 1s; killed by SIGKILL after 1s grace" in res.stderr, res.stderr
    grandchild = int(gc.read_text())
    wait_for(lambda: gone(grandchild), 5, what=f"setsid grandchild {grandchild} to die")
    hist = kenv.request({"History": {"name": "escape", "limit": 1}})["History"][0]
    assert hist["outcome"] == "timeout"


@pytest.mark.e2e
@pytest.mark.parametrize("kind", KINDS)
def test_daemon_stop_leaves_nothing_of_any_job_alive(kenv, kind: str) -> None:
    hung, left, orphan = kenv.work / "hung.pid", kenv.work / "left.pid", kenv.work / "orphan.pid"
    kenv.write_config(config(
        # still running at stop, with an escaped grandchild
        {"name": "hung", "cron": "@yearly", "command": ESCAPE.format(pid=hung)},
        # ended normally, leaving an escaped background process (kept alive until the daemon stops)
        {"name": "left", "cron": "@yearly",
         "command": f"setsid sh -c 'trap \"\" TERM; echo $$ > {left}.tmp; mv {left}.tmp {left}; exec sleep 300' &"},
        # ended normally, leaving a plain background child of its group
        {"name": "orphan", "cron": "@yearly", "command": f"sleep 300 & echo $! > {orphan}"},
    ))
    start(kenv, kind)
    assert kenv.ku("run", "left", "--wait").returncode == 0
    assert kenv.ku("run", "orphan", "--wait").returncode == 0
    kenv.request({"Run": "hung"})
    for path in (hung, left, orphan):
        wait_for(path.exists, 5, what=str(path))
    pids = {p.stem: int(p.read_text()) for p in (hung, left, orphan)}
    assert not gone(pids["left"]) and not gone(pids["orphan"])  # a normal exit kills nothing
    assert session_of(pids["left"]) == pids["left"]  # it really left the run's session
    daemon = kenv.daemon_pid()
    assert kenv.ku("daemon", "stop", timeout=60).returncode == 0
    assert daemon is not None and not alive(daemon)
    survivors = lambda: {name: pid for name, pid in pids.items() if not gone(pid)}  # noqa: E731
    wait_for(lambda: survivors() == {}, 2, what="every process of every job to be gone")


@pytest.mark.e2e
@pytest.mark.skipif(CGROUP_REASON is not None, reason=f"no cgroup: {CGROUP_REASON}")
def test_cgroups_of_runs_are_removed_and_the_daemon_leaves_its_own(kenv) -> None:
    from koku.daemon.cgroup import own_cgroup

    kenv.write_config(config({"name": "x", "cron": "@yearly", "command": "true"}))
    start(kenv, "cgroup")
    info = kenv.request("DaemonStatus")["DaemonStatus"]
    base = Path(info["cgroup"])
    assert base.parent == own_cgroup() and base.name == f"koku-{kenv.daemon_pid()}"
    assert Path(f"/proc/{kenv.daemon_pid()}/cgroup").read_text().strip().endswith(f"/{base.name}/daemon")
    for _ in range(3):
        assert kenv.ku("run", "x", "--wait").returncode == 0
    assert sorted(p.name for p in base.iterdir() if p.is_dir()) == ["daemon"]
    assert kenv.ku("daemon", "stop").returncode == 0
    assert not base.exists()


# -- in-process: ProcessRun with a cgroup cage --------------------------------------------------------


@pytest.fixture
def cgroups() -> Iterator[object]:
    """The test process's own cgroup containment (it moves this process into a leaf; stop() moves it
    back and removes everything)."""
    if CGROUP_REASON is not None:
        pytest.skip(f"no cgroup: {CGROUP_REASON}")
    from koku.daemon.cgroup import CgroupContainment

    containment = CgroupContainment.create()
    yield containment
    containment.stop(CLOCK, 0.0)
    assert not containment.base.exists()


def _run(tmp_path: Path, cage: object, command: str, **kw: object) -> ProcessRun:
    log = JobLog(tmp_path / "job.log", max_bytes=1_000_000, keep=1)
    run = ProcessRun(command, shell="/bin/sh", cwd=str(tmp_path), env=ENV, log=log, clock=CLOCK, cage=cage,
                     **{"timeout": 10.0, "kill_grace": 0.5, **kw})  # type: ignore[arg-type]
    run.start()
    return run


def test_cgroup_cage_cancel_kills_the_escaped_grandchild_and_reports_cpu(cgroups, tmp_path: Path) -> None:
    cage = cgroups.cage("job", 1)  # type: ignore[attr-defined]
    path = cage.path
    gc = tmp_path / "gc.pid"
    # Burn a little CPU first so the run's cgroup has something to report.
    run = _run(tmp_path, cage, "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; " + ESCAPE.format(pid=gc),
               timeout=None)
    deadline = CLOCK.monotonic() + 10
    while not gc.exists():
        assert CLOCK.monotonic() < deadline, "grandchild never started"
        gevent.sleep(0.02)
    grandchild = int(gc.read_text())
    assert session_of(grandchild) == grandchild
    assert str(grandchild) in (path / "cgroup.procs").read_text().split()
    run.cancel(0.3)
    result = run.wait()
    assert result.outcome is Outcome.CANCELLED
    assert result.description == "killed by SIGKILL after 0.3s grace (daemon shutdown)"
    assert gone(grandchild)
    assert not path.exists()
    assert result.cpu_usec is not None and result.cpu_usec > 0


def test_cgroup_of_a_run_that_left_a_process_is_removed_once_it_is_gone(cgroups, tmp_path: Path) -> None:
    first = cgroups.cage("job", 1)  # type: ignore[attr-defined]
    run = _run(tmp_path, first, "sleep 300 & echo $! > bg.pid")
    assert run.wait().outcome is Outcome.SUCCESS
    background = int((tmp_path / "bg.pid").read_text())
    assert not gone(background) and first.path.exists()  # kept: something of the run still runs
    os.kill(background, signal.SIGKILL)
    deadline = CLOCK.monotonic() + 5
    while not gone(background):
        assert CLOCK.monotonic() < deadline
        gevent.sleep(0.02)
    time.sleep(0.05)
    second = cgroups.cage("job", 2)  # type: ignore[attr-defined]
    assert _run(tmp_path, second, "true").wait().outcome is Outcome.SUCCESS
    assert not first.path.exists() and not second.path.exists()  # the next release swept it


@pytest.mark.e2e
@pytest.mark.parametrize("kind", KINDS)
def test_escaped_orphans_that_exit_are_reaped_not_left_as_zombies(kenv, kind: str) -> None:
    # The daemon is their subreaper in both kinds: when they exit, it must reap them (by pid).
    kenv.write_config(config({"name": "spawner", "cron": "@yearly",
                              "command": "for i in 1 2 3 4 5; do setsid sleep 1.5 >/dev/null 2>&1 & done; echo started"}))
    start(kenv, kind)
    daemon = kenv.daemon_pid()
    assert kenv.ku("run", "spawner", "--wait").returncode == 0

    def children() -> list[tuple[int, str]]:
        kids = []
        for entry in os.listdir("/proc"):
            st = _stat(int(entry)) if entry.isdigit() else None
            if st is not None and int(st[1]) == daemon:
                kids.append((int(entry), st[0]))
        return kids

    adopted = children()  # the job's shell is gone: the sleeps are the daemon's children now
    assert len(adopted) == 5 and all(state != "Z" for _pid, state in adopted), adopted
    wait_for(lambda: children() == [], 5, what="the daemon's children to be reaped")
