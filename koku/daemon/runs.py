"""Who is waiting for which run: `ku run --wait` (the Wait request) parks here until the run ends, and
follows a run's output live (RunFollow) through the run's ``RunStream``.

The daemon reports every finished run to ``finished()``; the control side only ever calls ``until_finished()``.
One owner for the waiters, so neither side reaches into the other's dicts.
"""

from __future__ import annotations

from collections import deque

import gevent.event

from koku.core.model import RunRecord

STREAM_KEEP = 256 * 1024  # bytes of a run's latest output kept for live readers


class RunStream:
    """A run's output for live readers, in bounded memory: the latest ``keep`` bytes, addressed by their
    offset from the start of the run's output, so a reader that falls behind learns how much it missed.

    Only the run's own output goes here (not the log's header and footer, not another run's output).
    """

    __slots__ = ("_chunks", "_size", "_base", "_changed", "closed", "keep")

    def __init__(self, keep: int = STREAM_KEEP) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0  # bytes held in _chunks
        self._base = 0  # offset of _chunks[0]
        self._changed = gevent.event.Event()
        self.closed = False
        self.keep = keep

    def write(self, data: bytes) -> None:
        if not data or self.closed:
            return
        self._chunks.append(bytes(data))
        self._size += len(data)
        while self._size - len(self._chunks[0]) >= self.keep:  # drop whole old chunks, keep >= keep bytes
            old = self._chunks.popleft()
            self._size -= len(old)
            self._base += len(old)
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        # A fresh event per change: every reader waiting on the old one wakes, none has to clear it.
        changed, self._changed = self._changed, gevent.event.Event()
        changed.set()

    def read(self, offset: int) -> tuple[bytes, int, int, bool, gevent.event.Event]:
        """Output from ``offset`` on: (data, bytes missed before it, the next offset, closed, an event set at
        the next change). ``closed`` true means ``data`` is the last of it."""
        missed = max(0, self._base - offset)
        offset = max(offset, self._base)
        skip = offset - self._base
        parts = []
        for chunk in self._chunks:
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            parts.append(chunk[skip:] if skip else chunk)
            skip = 0
        data = b"".join(parts)
        return data, missed, offset + len(data), self.closed, self._changed


class RunWaiters:
    def __init__(self) -> None:
        self._waiting: dict[tuple[str, int], gevent.event.AsyncResult] = {}
        self._streams: dict[tuple[str, int], RunStream] = {}

    def open_stream(self, name: str, run: int) -> RunStream:
        """RunFollow opens one for the run it started (before the run's greenlet runs); the executor
        writes the run's output to it and closes it when the output has ended."""
        stream = self._streams[(name, run)] = RunStream()
        return stream

    def close_stream(self, name: str, run: int) -> None:
        stream = self._streams.pop((name, run), None)
        if stream is not None:
            stream.close()

    def stream(self, name: str, run: int) -> RunStream | None:
        return self._streams.get((name, run))

    def until_finished(self, name: str, run: int) -> RunRecord:
        """Block this greenlet until run ``run`` of job ``name`` ends; returns its record."""
        waiter = self._waiting.setdefault((name, run), gevent.event.AsyncResult())
        return waiter.get()

    def finished(self, name: str, record: RunRecord) -> None:
        waiter = self._waiting.pop((name, record.run), None)
        if waiter is not None:
            waiter.set(record)
