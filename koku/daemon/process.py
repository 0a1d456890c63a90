"""One job run as a child process: spawn in its own session, stream output to the job log, enforce the
timeout on the whole process group (TERM, grace, KILL), describe the exit in words.

Daemon side: imports gevent, never monkey-patches. Children are spawned by the standard library's C
``fork_exec`` (vfork where it can: no Python runs in the child, and the cost does not grow with the
daemon's RSS, unlike gevent.subprocess, which forks in Python) and reaped by gevent's child watcher on
their pid, so nothing here installs a SIGCHLD handler, calls ``waitpid(-1)`` or blocks the hub in a wait.

Error vs failure (Jobber's distinction): an *error* is a run that could not start (missing dir or
shell, permission denied, fork failure); a *failure* started and then exited non-zero, died of a signal
or timed out.
"""

from __future__ import annotations

import errno
import os
import signal
from typing import Mapping

from subprocess import DEVNULL, Popen

import gevent
import gevent.event
import gevent.os

from koku.core import logfmt
from koku.core.clock import Clock
from koku.core.config import dir_problem
from koku.core.durations import spoken_duration
from koku.core.joblog import JobLog, LineTail
from koku.core.model import Outcome, RunResult
from koku.daemon.credentials import NO_CREDENTIALS, Credentials
from koku.daemon.procgroup import Cage, group_alive, kill_group

__all__ = ["ProcessRun", "describe_exit", "group_alive", "kill_group"]


_CHUNK = 64 * 1024
# How often to look whether the run's processes outlived the leader during a grace period (seconds);
# a look may scan /proc, so back off from quick to slow.
_GROUP_POLL_MIN = 0.02
_GROUP_POLL_MAX = 0.5
# After SIGKILL, how long to keep looking (and killing again: a fork may have raced the first kill)
# until nothing of the run is left (seconds).
_KILL_CONFIRM = 2.0


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def describe_exit(
    returncode: int | None,
    *,
    timed_out: float | None = None,
    killed_after_grace: float | None = None,
    cancelled: bool | str = False,
    not_started: str | None = None,
) -> str:
    """Every way a run can end, in words, for logs, the footer and ``ku status``.

    ``returncode`` follows subprocess: >= 0 an exit status, < 0 the negated signal number, ``None``
    not started. ``timed_out`` and ``killed_after_grace`` are seconds; ``not_started`` is the reason a
    run could not start ("dir /nope does not exist"). ``cancelled`` is true, or who cancelled
    ("ku cancel"); the default reads "daemon shutdown".
    """
    if not_started is not None:
        return f"could not start: {not_started}"
    if returncode is None:
        text = "not started"
    elif returncode >= 0:
        text = f"exit status {returncode}"
    else:
        sig = -returncode
        verb = "killed by" if sig == signal.SIGKILL else "terminated by"
        text = f"{verb} {_signal_name(sig)}"
        if killed_after_grace is not None and sig == signal.SIGKILL:
            text += f" after {spoken_duration(killed_after_grace)} grace"
    if timed_out is not None:
        text = f"timed out after {spoken_duration(timed_out)}; {text}"
    if cancelled:
        text += f" ({cancelled if isinstance(cancelled, str) else 'daemon shutdown'})"
    return text


class ProcessRun:
    """One child. Create, then ``start()`` (non-blocking), then ``wait()`` in the runner greenlet.

    The timeout and kill escalation run in a supervisor greenlet started by ``start()``, so they hold
    even if the waiting greenlet is killed. The caller owns ``log``: it writes the header before
    ``start()``, the footer after ``wait()``, then closes it. ``wait()`` returns only after the output
    pipe is closed, so no descriptor of the run outlives it.
    """

    def __init__(
        self,
        command: str,
        *,
        shell: str,
        cwd: str | None,
        env: Mapping[str, str],
        log: JobLog,
        timeout: float | None,
        kill_grace: float,
        clock: Clock,
        cage: Cage | None = None,
        drain: float = 2.0,
        tail_lines: int = 20,
        max_line: int = 1000,
        credentials: Credentials = NO_CREDENTIALS,
        refuse: str | None = None,
    ):
        self.command = command
        self.shell = shell
        self.cwd = cwd
        self.env = dict(env)
        self.log = log
        self.timeout = timeout
        self.kill_grace = kill_grace
        self.clock = clock
        self.drain = drain
        self.credentials = credentials
        self._refuse = refuse  # a reason found before the spawn (e.g. the user is gone): an ERROR run
        self.cage = cage if cage is not None else Cage()
        self.pid: int | None = None
        self._tail = LineTail(tail_lines, max_line)
        self._popen: Popen | None = None
        self._watcher: object | None = None  # gevent's child watcher, held until it fires
        self._returncode: int | None = None
        self._supervisor: gevent.Greenlet | None = None
        self._result: RunResult | None = None
        self._started = False
        self._started_mono: float | None = None
        self._wake = gevent.event.Event()
        self._term_at: float | None = None
        self._kill_at: float | None = None
        self._killed = False
        self._timed_out = False
        self._cancelled = False
        self._cancel_reason = "daemon shutdown"

    @property
    def result(self) -> RunResult | None:
        """The result once the run is over, else None."""
        return self._result

    def start(self) -> None:
        """Spawn the child. A run that cannot start gets an ERROR result; nothing is raised."""
        if self._started:
            raise RuntimeError("ProcessRun.start() called twice")
        self._started = True
        if self._cancelled:
            self._finish_unstarted(Outcome.CANCELLED, describe_exit(None, cancelled=self._cancel_reason))
            return
        if self._refuse is not None:
            self._finish_unstarted(Outcome.ERROR, describe_exit(None, not_started=self._refuse))
            return
        cwd = self.cwd or None  # already resolved by the config (koku.core.config.resolve_dir)
        if cwd is not None and (problem := dir_problem(cwd)) is not None:
            self._finish_unstarted(Outcome.ERROR, describe_exit(None, not_started=f"dir {cwd} {problem}"))
            return
        try:
            read_fd, write_fd = os.pipe()
        except OSError as exc:
            reason = f"cannot create a pipe: {exc.strerror}"
            self._finish_unstarted(Outcome.ERROR, describe_exit(None, not_started=reason))
            return
        try:
            with self.cage.spawning():
                popen = self._spawn(cwd, write_fd)
            self.cage.started(popen.pid)
        except (OSError, ValueError) as exc:
            os.close(read_fd)
            self._finish_unstarted(Outcome.ERROR, describe_exit(None, not_started=self._start_error(exc, cwd)))
            return
        finally:
            # The child has its copy; ours must go or the pipe never reaches EOF.
            os.close(write_fd)
        self._popen = popen
        self.pid = popen.pid
        self._started_mono = self.clock.monotonic()
        gevent.os.make_nonblocking(read_fd)
        pump = gevent.spawn(self._pump_output, read_fd)
        pump.name = f"koku-output-{popen.pid}"
        pump.link_exception(self._pump_died)
        self._supervisor = gevent.spawn(self._supervise, popen, pump, read_fd)
        self._supervisor.name = f"koku-run-{popen.pid}"
        self._supervisor.link_exception(self._supervisor_died)

    def wait(self) -> RunResult:
        """Block the calling greenlet until the run is over; the timeout is enforced meanwhile."""
        if self._result is not None:
            return self._result
        if self._supervisor is None:
            raise RuntimeError("ProcessRun.wait() called before start()")
        self._supervisor.join()
        if self._result is None:
            # The supervisor died of a bug; get() re-raises it here rather than hiding it.
            self._supervisor.get()
            raise RuntimeError(f"run of pid {self.pid} ended without a result")
        return self._result

    def cancel(self, grace: float, reason: str = "daemon shutdown") -> None:
        """Daemon shutdown or ``ku cancel`` (``reason``): TERM the group now, KILL it after ``grace``
        seconds; ``wait()`` then returns CANCELLED. Safe from any greenlet, before start, during a
        timeout's grace, or after the end."""
        if self._result is not None:
            return
        self._cancel_reason = reason
        popen = self._popen
        if popen is None:
            self._cancelled = True  # start() will not spawn
            return
        if self._returncode is not None and self._term_at is None:
            return  # it ended by itself; only the output drain is left
        self._cancelled = True
        now = self.clock.monotonic()
        if self._term_at is None:
            self._terminate(grace)
        elif self._kill_at is not None:
            self._kill_at = min(self._kill_at, now + grace)
        self._wake.set()

    # -- internals -------------------------------------------------------------------------------

    def _spawn(self, cwd: str | None, out_fd: int) -> Popen:
        """Start the child through the C path and watch its pid; raises OSError/ValueError if it cannot.

        Popen returns once the child has exec'd (or raises what exec failed with), so the watcher is
        started before the hub runs again: the loop cannot reap the pid before anyone listens for it.
        """
        loop = gevent.get_hub().loop
        # gevent installs libev's SIGCHLD handler lazily; without it no child watcher ever fires.
        loop.install_sigchld()
        # Only spawn options that stay on the C path (no preexec_fn).
        popen = Popen(self.credentials.argv([self.shell, "-c", self.command]), stdin=DEVNULL, stdout=out_fd,
                      stderr=out_fd, cwd=cwd, env=self.env, start_new_session=True, close_fds=True,
                      **self.credentials.popen_kwargs())  # type: ignore[arg-type]
        watcher = loop.child(popen.pid, False)
        watcher.start(self._reaped, popen, watcher)
        self._watcher = watcher
        return popen

    def _reaped(self, popen: Popen, watcher: object) -> None:
        # Runs in the hub: no blocking, no switching. Setting Popen.returncode tells the stdlib the
        # child is reaped, so it never calls waitpid on a pid that may already belong to someone else.
        watcher.stop()  # type: ignore[attr-defined]
        self._watcher = None
        self._returncode = os.waitstatus_to_exitcode(watcher.rstatus)  # type: ignore[attr-defined]
        popen.returncode = self._returncode
        self._wake.set()

    def _start_error(self, exc: BaseException, cwd: str | None) -> str:
        if isinstance(exc, ValueError):  # e.g. a NUL byte in the command or env
            return f"invalid command or environment: {exc}"
        assert isinstance(exc, OSError)
        creds = self.credentials
        if isinstance(exc, PermissionError) and exc.filename is None and (creds.uid, creds.gid) != (None, None):
            return f"permission denied switching to uid {creds.uid} gid {creds.gid}"
        in_dir = cwd is not None and exc.filename == cwd
        what = f"dir {cwd}" if in_dir else f"shell {self.shell}"
        if isinstance(exc, FileNotFoundError):
            return f"{what} does not exist" if in_dir else f"{what} not found"
        if isinstance(exc, NotADirectoryError):
            return f"{what} is not a directory" if in_dir else f"{what} not found"
        if isinstance(exc, PermissionError):
            return f"permission denied: {what}"
        if exc.errno in (errno.EAGAIN, errno.ENOMEM):
            return f"cannot fork: {exc.strerror}"
        return f"{what}: {exc.strerror or exc}"

    def _finish_unstarted(self, outcome: Outcome, description: str) -> None:
        self.cage.release()
        self._result = RunResult(outcome=outcome, description=description, exit_code=None, signal=None,
                                 pid=None, started_mono=None, ended_mono=self.clock.monotonic(), tail=())

    def _pump_output(self, fd: int) -> None:
        while True:
            try:
                data = gevent.os.nb_read(fd, _CHUNK)
            except InterruptedError:
                continue
            except OSError as exc:
                logfmt.warning("reading job output failed", pid=self.pid, reason=exc.strerror or str(exc))
                return
            if not data:
                return
            self._tail.feed(data)
            self.log.write(data)

    def _terminate(self, grace: float) -> None:
        assert self.pid is not None
        now = self.clock.monotonic()
        self._term_at = now
        self._kill_at = now + grace
        self.cage.signal(signal.SIGTERM)

    def _kill(self) -> None:
        assert self.pid is not None
        self._killed = True
        self.cage.signal(signal.SIGKILL)

    def _supervise(self, popen: Popen, pump: gevent.Greenlet, read_fd: int) -> None:
        try:
            self._wait_leader(popen)
            ended = self.clock.monotonic()
            if self._term_at is not None and not self._killed:
                self._wait_group_or_kill()
            if self._killed:
                self._confirm_killed()
            # A backgrounded grandchild may hold the pipe open forever: drain for a bounded time only.
            self.clock.wait(pump, self.drain)
        finally:
            if not pump.dead:
                pump.kill(block=False)
                self.clock.wait(pump, 1.0)
            os.close(read_fd)
            usage = self.cage.release()
        self._result = self._make_result(self._returncode, ended, usage)

    def _wait_leader(self, popen: Popen) -> None:
        assert self._started_mono is not None
        while self._returncode is None:
            now = self.clock.monotonic()
            deadline: float | None = None
            if self._term_at is None:
                if self.timeout is not None:
                    deadline = self._started_mono + self.timeout
                    if now >= deadline:
                        self._timed_out = True
                        self._terminate(self.kill_grace)
                        continue
            elif not self._killed:
                assert self._kill_at is not None
                if now >= self._kill_at:
                    self._kill()
                    continue
                deadline = self._kill_at
            self._wake.clear()
            if self._returncode is not None:
                break
            self.clock.wait(self._wake, None if deadline is None else max(0.0, deadline - now))

    def _wait_group_or_kill(self) -> None:
        # The leader is gone but processes that trap or ignore TERM may remain; the group id stays ours
        # while any member lives, so polling it and then KILLing it cannot hit a stranger.
        assert self.pid is not None and self._kill_at is not None
        poll = _GROUP_POLL_MIN
        while self.cage.alive():
            remaining = self._kill_at - self.clock.monotonic()
            if remaining <= 0:
                self._kill()
                return
            self._wake.clear()
            self.clock.wait(self._wake, min(poll, remaining))
            poll = min(poll * 2, _GROUP_POLL_MAX)

    def _confirm_killed(self) -> None:
        deadline = self.clock.monotonic() + _KILL_CONFIRM
        poll = _GROUP_POLL_MIN
        while self.cage.alive():
            if self.clock.monotonic() >= deadline:
                logfmt.warning("processes of the run survived SIGKILL", pid=self.pid, grace=_KILL_CONFIRM)
                return
            self.cage.signal(signal.SIGKILL)
            self._wake.clear()
            self.clock.wait(self._wake, poll)
            poll = min(poll * 2, _GROUP_POLL_MAX / 2)

    def _make_result(self, rc: int | None, ended: float, usage: dict[str, int] | None = None) -> RunResult:
        grace = None
        if self._killed and self._kill_at is not None and self._term_at is not None:
            grace = self._kill_at - self._term_at
        cancelled = self._cancelled and not self._timed_out
        description = describe_exit(rc, timed_out=self.timeout if self._timed_out else None,
                                    killed_after_grace=grace, cancelled=self._cancel_reason if cancelled else False)
        if self._timed_out:
            outcome = Outcome.TIMEOUT
        elif cancelled:
            outcome = Outcome.CANCELLED
        elif rc == 0:
            outcome = Outcome.SUCCESS
        else:
            outcome = Outcome.FAILURE
        return RunResult(outcome=outcome, description=description,
                         exit_code=rc if rc is not None and rc >= 0 else None,
                         signal=-rc if rc is not None and rc < 0 else None,
                         pid=self.pid, started_mono=self._started_mono, ended_mono=ended,
                         tail=tuple(self._tail.lines()),
                         cpu_usec=(usage or {}).get("cpu_usec"), memory_peak=(usage or {}).get("memory_peak"))

    def _pump_died(self, greenlet: gevent.Greenlet) -> None:
        # The supervisor still ends the run (it joins the pump); what is lost is the rest of the output.
        logfmt.error("job output pump failed; the rest of this run's output is lost", pid=self.pid,
                     reason=repr(greenlet.exception))

    def _supervisor_died(self, greenlet: gevent.Greenlet) -> None:
        logfmt.error("run supervisor failed; killing the run's process group", pid=self.pid,
                     reason=repr(greenlet.exception))
        if self.pid is not None and self._popen is not None and self._returncode is None:
            self.cage.signal(signal.SIGKILL)
