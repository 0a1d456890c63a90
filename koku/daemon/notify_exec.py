"""A short-lived helper process with input on stdin: the command notifier and ``sendmail -t -oi``.

Spawned like jobs (the standard library's C path, its own session, reaped by a gevent child watcher,
never a blocking wait in the hub), fed through a non-blocking pipe, and killed as a group (TERM, a
short grace, KILL) when it overruns its timeout. Output is kept only as a bounded tail for the reason.
"""

from __future__ import annotations

import errno
import os
import signal
from dataclasses import dataclass
from subprocess import Popen
from typing import Mapping

import gevent
import gevent.event
import gevent.os

from koku.core.clock import Clock
from koku.daemon.process import describe_exit, kill_group

KILL_GRACE = 2.0  # seconds between TERM and KILL for a notifier that overran its timeout
DRAIN = 1.0  # seconds to keep reading output after the process ended (a grandchild may hold the pipe)
OUTPUT_MAX = 4096  # bytes of output kept


@dataclass(frozen=True)
class ExecResult:
    returncode: int | None  # subprocess convention: negative = killed by that signal
    output: bytes  # the last OUTPUT_MAX bytes of stdout + stderr
    description: str  # "exit status 2", "timed out after 5s; terminated by SIGTERM"

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def reason(self) -> str:
        text = self.output.decode("utf-8", errors="replace").strip().splitlines()
        return self.description + (f": {text[-1][:200]}" if text else "")


def run_with_input(argv: list[str], env: Mapping[str, str], data: bytes, timeout: float, clock: Clock) -> ExecResult:
    """Run ``argv`` with ``data`` on stdin; block this greenlet (not the hub) until it ends or is killed.

    Raises OSError when it cannot be started (the caller turns that into a delivery failure).
    """
    loop = gevent.get_hub().loop
    loop.install_sigchld()  # libev's SIGCHLD handler is installed lazily; without it no watcher fires
    in_r, in_w = os.pipe()
    try:
        out_r, out_w = os.pipe()
    except OSError:
        os.close(in_r)
        os.close(in_w)
        raise
    try:
        popen = Popen(argv, stdin=in_r, stdout=out_w, stderr=out_w, cwd="/", env=dict(env),
                      start_new_session=True, close_fds=True)
    except BaseException:
        os.close(in_w)
        os.close(out_r)
        raise
    finally:
        os.close(in_r)
        os.close(out_w)
    done = gevent.event.Event()
    watcher = loop.child(popen.pid, False)

    def reaped() -> None:
        # In the hub: setting returncode tells the stdlib the pid is reaped, so it never waits on it.
        watcher.stop()
        popen.returncode = os.waitstatus_to_exitcode(watcher.rstatus)
        done.set()

    watcher.start(reaped)
    gevent.os.make_nonblocking(in_w)
    gevent.os.make_nonblocking(out_r)
    tail = bytearray()
    fed: list[bool] = []  # _feed closes the write end and says so; if it never ran, we close it
    writer = gevent.spawn(_feed, in_w, data, fed)
    writer.name = f"notify-stdin-{popen.pid}"
    reader = gevent.spawn(_drain, out_r, tail)
    reader.name = f"notify-output-{popen.pid}"
    timed_out = False
    try:
        if not clock.wait(done, timeout):
            timed_out = True
            kill_group(popen.pid, signal.SIGTERM)
            if not clock.wait(done, KILL_GRACE):
                kill_group(popen.pid, signal.SIGKILL)
                clock.wait(done, None)
        clock.wait(reader, DRAIN)
    finally:
        if popen.returncode is None:  # this greenlet was killed (daemon shutdown): take the group down
            kill_group(popen.pid, signal.SIGKILL)
        for glet in (writer, reader):
            glet.kill(block=False)
            clock.wait(glet, 1.0)
        if not fed:
            os.close(in_w)
        os.close(out_r)
    rc = popen.returncode
    return ExecResult(rc, bytes(tail), describe_exit(rc, timed_out=timeout if timed_out else None))


def _feed(fd: int, data: bytes, fed: list[bool]) -> None:
    try:
        view = memoryview(data)
        while view:
            try:
                written = gevent.os.nb_write(fd, view[:65536])
            except InterruptedError:
                continue
            view = view[written:]
    except OSError as exc:
        if exc.errno != errno.EPIPE:  # EPIPE: the command did not read its stdin; that is its business
            raise
    finally:
        os.close(fd)
        fed.append(True)


def _drain(fd: int, tail: bytearray) -> None:
    while True:
        try:
            chunk = gevent.os.nb_read(fd, 65536)
        except InterruptedError:
            continue
        except OSError:
            return
        if not chunk:
            return
        tail.extend(chunk)
        del tail[:-OUTPUT_MAX]
