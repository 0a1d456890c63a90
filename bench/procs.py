"""What the benchmark reads about a process from /proc, and how it starts and ends the ones it owns.

Every process the benchmark starts is a Popen child in its own session; it is stopped by its pid
(TERM, then KILL), and whatever it left behind is found by the temp directory it worked in and killed by
pid too. Nothing here kills by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` itself (not its children), in seconds. Raises OSError once it is gone."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3 of stat(5)); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (VmRSS). Raises OSError once it is gone."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise OSError(f"no VmRSS for pid {pid}")


def pss_mib(pid: int) -> float:
    """Proportional set size of ``pid`` in MiB (Pss in smaps_rollup: shared pages divided among their
    users). Raises OSError once it is gone or where the kernel has no smaps_rollup."""
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    raise OSError(f"no Pss for pid {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def processes_under(root: str) -> list[int]:
    """Pids (not ours, not zombies) whose command line or working directory mention ``root``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if (root in cmdline or cwd.startswith(root)) and alive(int(entry)):
            found.append(int(entry))
    return found


@dataclass
class Owned:
    """A child process the benchmark started and must end."""

    name: str
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """TERM, wait ``grace`` seconds, then KILL; reaps the child."""
        if self.popen.poll() is not None:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(10)


def spawn(name: str, argv: Sequence[str], env: dict[str, str], cwd: Path, log: Path) -> Owned:
    """Start ``argv`` in its own session with stdout and stderr appended to ``log``."""
    with open(log, "ab") as out, open(os.devnull, "rb") as devnull:
        popen = subprocess.Popen(list(argv), env=env, cwd=cwd, stdin=devnull, stdout=out, stderr=out,
                                 start_new_session=True, close_fds=True)
    return Owned(name, popen)


def kill_leftovers(root: str) -> list[int]:
    """KILL every process still working under ``root`` (jobs a stopped daemon left); returns their pids."""
    killed = []
    for _ in range(3):  # a dying shell may have just forked; look again
        pids = processes_under(root)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    return killed


def timed_run(argv: Sequence[str], env: dict[str, str], cwd: Path, timeout: float) -> tuple[float, int, str]:
    """Run a command to completion; returns (wall seconds, exit code, stderr tail).

    A command still running after ``timeout`` is killed with its session and reported with code -9.
    """
    start = time.perf_counter()
    popen = subprocess.Popen(list(argv), env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, err = popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        popen.communicate()
        return time.perf_counter() - start, -9, f"killed after {timeout:.0f}s"
    return time.perf_counter() - start, popen.returncode, err.decode(errors="replace")[-400:]
