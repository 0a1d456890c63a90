"""Blocking work the hub must not do itself (file I/O, /proc scans, a heap trim), in gevent's threadpool."""

from __future__ import annotations

import ctypes  # at import, not at first use: the daemon imports nothing after it starts serving
import gc
from typing import Any, Callable

import gevent


def in_thread(func: Callable[..., Any], *args: Any) -> Any:
    """``func(*args)`` in gevent's threadpool; the calling greenlet waits, and its exception is raised
    here. (Handed back as a value: the threadpool prints a traceback for a task that raises, and an
    unreadable log is an answer, not a crash.)"""
    ok, value = gevent.get_hub().threadpool.apply(_outcome, (func, *args))
    if ok:
        return value
    raise value


def _outcome(func: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
    try:
        return True, func(*args)
    except Exception as exc:  # noqa: BLE001 - raised again in the calling greenlet
        return False, exc


def release_free_memory() -> None:
    """Give the heap that start-up (TOML parsing, compiling, imports) freed back to the system.

    An idle daemon lives for months with whatever RSS it settles at; glibc keeps freed heap unless
    asked. A no-op where the C library has no malloc_trim (musl). Cycles are collected first: a job's
    runner and its timer's callback refer to each other, so removed jobs are not freed by refcounting.
    Blocking (a 200 MB heap takes a while): call it through in_thread.
    """
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
