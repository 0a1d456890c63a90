"""A cgroup v2 child per run: nothing a run starts can leave it, and ``cgroup.kill`` ends all of it.

Layout under the daemon's own cgroup OWN (from /proc/self/cgroup, under the cgroup2 mount):

    OWN/koku-PID/daemon           the daemon itself (a leaf: cgroup v2 lets only leaves hold processes
                                  once controllers are enabled, the "no internal processes" rule)
    OWN/koku-PID/run-JOB-RUN      one run, removed when it is empty

koku-PID keeps several daemons under one parent (a container's root cgroup, a login session) apart;
under systemd with ``Delegate=yes`` OWN is the unit's cgroup. The child starts in its run's cgroup
because the daemon moves itself there for the instant of the fork and back (the stdlib's C spawn has
no CLONE_INTO_CGROUP, and moving the child afterwards would let a fast fork escape): no process of
the run ever runs outside it. Kernels before 5.14 have no cgroup.kill: every pid in cgroup.procs gets
SIGKILL instead, until it is empty.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from pathlib import Path
from typing import Any, Iterator

from koku.core import logfmt, procinfo
from koku.core.clock import Clock
from koku.daemon import offhub
from koku.daemon.procgroup import Cage, Containment, kill_pid
from koku.errors import CgroupUnavailable


def own_cgroup() -> Path:
    """The cgroup v2 directory this process is in. Raises CgroupUnavailable."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError as exc:
        raise CgroupUnavailable(f"/proc/self/cgroup: {exc.strerror}") from None
    rel = next((line[3:] for line in lines if line.startswith("0::")), None)
    if rel is None:
        raise CgroupUnavailable("no cgroup v2 hierarchy in /proc/self/cgroup")
    try:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError as exc:
        raise CgroupUnavailable(f"/proc/self/mountinfo: {exc.strerror}") from None
    for line in mounts:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if right.split()[:1] == ["cgroup2"] and len(fields) >= 5:
            root, point = fields[3], fields[4].replace("\\040", " ")
            if rel == root or rel.startswith(root.rstrip("/") + "/"):
                path = Path(point) / rel[len(root):].lstrip("/")
                if path.is_dir():
                    return path
    raise CgroupUnavailable(f"cgroup {rel} is not under a mounted cgroup2 hierarchy")


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _pids(cgroup: Path) -> list[int]:
    try:
        return [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def populated(cgroup: Path) -> bool:
    """Whether a live process is in ``cgroup`` or below (zombies are not)."""
    try:
        return "populated 1" in (cgroup / "cgroup.events").read_text()
    except OSError:
        return False


def kill_all(cgroup: Path, sig: int) -> None:
    """``sig`` to every process in ``cgroup``: cgroup.kill for SIGKILL where the kernel has it."""
    if sig == signal.SIGKILL:
        try:
            _write(cgroup / "cgroup.kill", b"1")
            return
        except FileNotFoundError:
            pass  # before Linux 5.14
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EINVAL):
                raise
    for pid in _pids(cgroup):
        if pid > 1 and pid != os.getpid():
            kill_pid(pid, sig)


def _read(path: str) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 4096).decode()
    except OSError:
        return None
    finally:
        os.close(fd)


def usage(cgroup: Path, memory: bool = True) -> dict[str, int]:
    """What the run used: CPU microseconds (cpu.stat, always there) and peak memory bytes (memory.peak,
    only where the memory controller is enabled for it, Linux 5.19+). Blocking: run in the threadpool."""
    found: dict[str, int] = {}
    text = _read(f"{cgroup}/cpu.stat") or ""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec" and value.isdigit():
            found["cpu_usec"] = int(value)
    peak = _read(f"{cgroup}/memory.peak") if memory else None
    if peak is not None and peak.strip().isdigit():
        found["memory_peak"] = int(peak)
    return found


def _finish(cgroup: Path, memory: bool, lingering: list[Path]) -> tuple[dict[str, int], set[Path]]:
    """Figures of a run's cgroup, then remove it and any lingering ones that emptied; the removed set.
    Blocking (cgroupfs mkdir/rmdir can wait on the kernel for a fraction of a millisecond): threadpool."""
    figures = usage(cgroup, memory)
    removed: set[Path] = set()
    for path in (cgroup, *lingering):
        try:
            path.rmdir()
        except FileNotFoundError:
            removed.add(path)
        except OSError:
            continue  # still populated: something the run left behind runs on
        else:
            removed.add(path)
    return figures, removed


class CgroupCage(Cage):
    kind = "cgroup"

    def __init__(self, containment: "CgroupContainment", path: Path) -> None:
        super().__init__()
        self.path = path
        self._containment = containment
        self._inside = False  # False: the child could not be started in the cgroup; its group holds it

    @contextlib.contextmanager
    def spawning(self) -> Iterator[None]:
        # No greenlet switch can happen inside: the hub runs nothing else while the daemon is in the
        # run's cgroup, so only the fork itself (and a threadpool thread's work) is charged to it.
        try:
            self._containment.enter(self.path)
        except OSError as exc:
            logfmt.warning("cannot start the run in its cgroup; its process group contains it",
                           cgroup=str(self.path), reason=exc.strerror)
            yield
            return
        self._inside = True
        try:
            yield
        finally:
            self._containment.leave()

    def signal(self, sig: int) -> None:
        if self._inside:
            kill_all(self.path, sig)
        else:
            super().signal(sig)

    def alive(self) -> bool:
        return populated(self.path) if self._inside else super().alive()

    def release(self) -> dict[str, int] | None:
        return self._containment.finish(self.path)


class CgroupContainment(Containment):
    kind = "cgroup"

    def __init__(self, own: Path, base: Path) -> None:
        self.own = own
        self.base = base
        self.leaf = base / "daemon"
        self._leaf_fd = os.open(self.leaf / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
        self._lingering: list[Path] = []  # run cgroups that ended with processes still in them
        # memory.peak exists in run cgroups only when the memory controller is enabled for them.
        self._memory = "memory" in (_read(f"{base}/cgroup.subtree_control") or "").split()

    @classmethod
    def create(cls) -> "CgroupContainment":
        """Make OWN/koku-PID/daemon and move the daemon into it. Raises CgroupUnavailable."""
        own = own_cgroup()
        _sweep_stale(own)
        base = own / f"koku-{os.getpid()}"
        made: list[Path] = []
        try:
            for path in (base, base / "daemon"):
                path.mkdir(mode=0o755)
                made.append(path)
            _write(base / "daemon/cgroup.procs", b"0")
            return cls(own, base)
        except OSError as exc:
            with contextlib.suppress(OSError):
                _write(own / "cgroup.procs", b"0")
            for path in reversed(made):
                with contextlib.suppress(OSError):
                    path.rmdir()
            raise CgroupUnavailable(f"{exc.filename or own}: {exc.strerror}") from None

    def describe(self) -> dict[str, Any]:
        return {"containment": self.kind, "cgroup": str(self.base)}

    def cage(self, job: str, run: int) -> Cage:
        """A cage in a new cgroup for the run (mkdir in the threadpool: the calling greenlet waits, the
        hub does not); the run's process group only if the cgroup cannot be made."""
        path, reason = offhub.in_thread(self._make, job, run)
        if path is None:
            logfmt.warning("cannot make a cgroup for the run; its process group contains it",
                           job=job, run=run, reason=reason)
            return Cage()
        return CgroupCage(self, path)

    def _make(self, job: str, run: int) -> tuple[Path | None, str]:
        path = self.base / f"run-{job}-{run}"
        for attempt in range(1, 100):
            try:
                path.mkdir(mode=0o755)
                return path, ""
            except FileExistsError:
                with contextlib.suppress(OSError):
                    path.rmdir()  # left by an earlier run of the same id; only if empty
                    continue
                path = self.base / f"run-{job}-{run}.{attempt}"
            except OSError as exc:
                return None, f"{path}: {exc.strerror}"
        return None, f"{path}: too many stale cgroups of this run"

    def enter(self, cgroup: Path) -> None:
        _write(cgroup / "cgroup.procs", b"0")

    def leave(self) -> None:
        os.write(self._leaf_fd, b"0")

    def finish(self, cgroup: Path) -> dict[str, int]:
        """A run is over: its figures; its cgroup is removed, or kept while something the run left
        behind still runs in it (retried at every later run's end, killed at daemon stop)."""
        figures, removed = offhub.in_thread(_finish, cgroup, self._memory, list(self._lingering))
        # Greenlets may have ended runs meanwhile: change the list only here, on the hub.
        self._lingering = [p for p in self._lingering if p not in removed]
        if cgroup not in removed:
            self._lingering.append(cgroup)
        return figures

    def stop(self, clock: Clock, grace: float) -> None:
        runs = sorted(p for p in self.base.iterdir() if p.name.startswith("run-") and p.is_dir())
        left = [p for p in runs if populated(p)]
        if left:
            logfmt.info("killing processes runs left behind", cgroups=" ".join(p.name for p in left), grace=grace)
            for path in left:
                kill_all(path, signal.SIGTERM)
            deadline = clock.monotonic() + grace
            while any(populated(p) for p in left) and clock.monotonic() < deadline:
                clock.sleep(0.05)
            for path in left:
                kill_all(path, signal.SIGKILL)
            deadline = clock.monotonic() + 5.0
            while any(populated(p) for p in left) and clock.monotonic() < deadline:
                clock.sleep(0.02)
        for path in runs:
            with contextlib.suppress(OSError):
                path.rmdir()
        os.close(self._leaf_fd)
        try:
            _write(self.own / "cgroup.procs", b"0")
        except OSError as exc:
            # OWN has controllers enabled (no internal processes): stay in the leaf; systemd removes
            # the unit's cgroup when the service ends.
            logfmt.info("daemon stays in its cgroup leaf", cgroup=str(self.leaf), reason=exc.strerror)
            return
        for path in (self.leaf, self.base):
            with contextlib.suppress(OSError):
                path.rmdir()


def _sweep_stale(own: Path) -> None:
    """Remove the empty cgroups of koku daemons that died without cleaning up (kill -9). A populated
    one (runs still alive) stays: ``ku status`` reports those runs as interrupted."""
    try:
        entries = list(own.iterdir())
    except OSError:
        return
    for base in entries:
        name = base.name
        if not (name.startswith("koku-") and name[5:].isdigit() and base.is_dir()):
            continue
        if int(name[5:]) == os.getpid() or procinfo.pid_alive(int(name[5:])):
            continue
        for child in list(base.iterdir()):
            if child.is_dir():
                with contextlib.suppress(OSError):
                    child.rmdir()
        with contextlib.suppress(OSError):
            base.rmdir()
