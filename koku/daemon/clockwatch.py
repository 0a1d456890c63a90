"""Hear from the kernel the moment the wall clock is set (NTP step, ``date -s``), without polling.

A timerfd on CLOCK_REALTIME, armed with TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET for an instant that
never comes, becomes readable when the clock is set discontinuously: read() then fails with
ECANCELED, and the timer is armed again. This is what systemd does for its calendar timers. The fd is
watched by a gevent io watcher, so an idle daemon makes no system call at all until the clock is set.

``os.timerfd_create`` exists from Python 3.13; before, the same calls go through ctypes. Where neither
works (not Linux, a seccomp filter), ``ClockSetWatch.start`` returns False and the scheduler falls
back to comparing the wall and monotonic clocks each time it wakes (at least once a minute).
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Any, Callable

import gevent

from koku.core import logfmt

CLOCK_REALTIME = 0
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = getattr(os, "O_CLOEXEC", 0o2000000)
TFD_TIMER_ABSTIME = 1
TFD_TIMER_CANCEL_ON_SET = 2
NEVER = 2**33  # seconds since the epoch (the year 2242, below the kernel's limit of 2262): fires only by being cancelled


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _Timerfd:
    """create() and arm() through os (3.13+) or libc via ctypes. Both raise OSError."""

    def __init__(self) -> None:
        self._libc: Any = None
        if not hasattr(os, "timerfd_create"):
            self._libc = ctypes.CDLL(None, use_errno=True)

    def create(self) -> int:
        if self._libc is None:
            return os.timerfd_create(CLOCK_REALTIME, flags=TFD_NONBLOCK | TFD_CLOEXEC)  # type: ignore[attr-defined]
        fd = self._libc.timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return int(fd)

    def arm(self, fd: int) -> None:
        flags = TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET
        if self._libc is None:
            os.timerfd_settime(fd, flags=flags, initial=float(NEVER))  # type: ignore[attr-defined]
            return
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(NEVER, 0))
        if self._libc.timerfd_settime(fd, flags, ctypes.byref(spec), None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def armed_for(self, fd: int) -> float:
        """Seconds until the timer fires (for tests: NEVER - now when armed)."""
        if self._libc is None:
            return os.timerfd_gettime(fd)[1]  # type: ignore[attr-defined]
        spec = _Itimerspec()
        if self._libc.timerfd_gettime(fd, ctypes.byref(spec)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return spec.it_value.tv_sec + spec.it_value.tv_nsec / 1e9


class ClockSetWatch:
    """Calls ``listener()`` (in the hub; it must only set flags or events) whenever the clock is set."""

    def __init__(self, listener: Callable[[], None]):
        self._listener = listener
        self._tfd = _Timerfd()
        self.fd: int | None = None
        self._watcher: Any = None

    def start(self) -> bool:
        """Arm the timerfd and watch it. False (and nothing to clean up) where the kernel cannot."""
        try:
            fd = self._tfd.create()
        except (OSError, AttributeError) as exc:  # AttributeError: a libc without timerfd_create
            logfmt.info("no timerfd; clock steps are noticed when the scheduler wakes", reason=str(exc))
            return False
        try:
            self._tfd.arm(fd)
        except OSError as exc:
            os.close(fd)
            logfmt.info("cannot arm a timerfd; clock steps are noticed when the scheduler wakes", reason=str(exc))
            return False
        self.fd = fd
        self._watcher = gevent.get_hub().loop.io(fd, 1)
        self._watcher.start(self._readable)
        return True

    def _readable(self) -> None:
        assert self.fd is not None
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            return  # woken for nothing
        except OSError as exc:
            if exc.errno != errno.ECANCELED:
                logfmt.error("clock watch failed; falling back to checking the clock on each wake", reason=str(exc))
                self.close()
                return
        # Either ECANCELED (the clock was set) or the timer expired, which it only can if the clock was
        # set past NEVER; both mean "the wall clock moved": re-arm, then tell the listener.
        try:
            self._tfd.arm(self.fd)
        except OSError as exc:
            logfmt.error("cannot re-arm the clock watch; falling back to checking the clock on each wake",
                         reason=str(exc))
            self.close()
        self._listener()

    def armed_for(self) -> float | None:
        return None if self.fd is None else self._tfd.armed_for(self.fd)

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
