"""Per-job log files: size-based rotation, a bounded in-memory tail, reading the end of a big file.

Pure stdlib: the daemon writes through ``JobLog``; ``ku log`` on the client side uses ``read_tail``.
Nothing here raises into the daemon while writing: a full disk or a vanished directory is reported once
through ``on_error`` and the output is dropped until the log is closed and opened again.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from pathlib import Path
from typing import BinaryIO, Callable

from koku.core import logfmt, safefs


_READ_BLOCK = 64 * 1024


class JobLog:
    """Appends a job's output to ``path``, rotating by size.

    When a write would take the file past ``max_bytes`` the file is rotated first (``name.log`` ->
    ``name.log.1`` -> ... -> ``name.log.<keep>``, the oldest dropped; ``keep=0`` restarts the file
    empty), so rotation happens during a run, not only between runs. Output is split at a line boundary
    when one fits, so each file stays within ``max_bytes``. ``max_bytes <= 0`` disables rotation.

    The file is opened lazily on the first write and stays open until ``close()``; the owner closes it
    after every run so no descriptor outlives a run. After ``close()`` the object can be written again
    (it reopens), and a previous write error is forgotten so the next run tries the disk again.
    """

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        keep: int,
        on_error: Callable[[str], None] | None = None,
        dir_fd: int | None = None,
    ):
        if keep < 0:
            raise ValueError(f"keep must be >= 0, got {keep!r}")
        self.path = Path(path)
        # With dir_fd (the daemon's checked logs/ directory), every open, rename and unlink is relative
        # to it and never follows a symlink: logs/<job>.log may be a planted symlink or FIFO.
        self._dir_fd = dir_fd
        self.max_bytes = max_bytes
        self.keep = keep
        self._on_error = on_error
        self._fd: int | None = None
        self._size = 0
        self._failed = False
        self._line_start = True  # the file is empty or ends with a newline
        self.dropped_bytes = 0
        """Bytes discarded since the last ``close()`` because the log could not be written."""

    @property
    def failed(self) -> bool:
        """True once a write error has been reported; output is dropped until ``close()``."""
        return self._failed

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._failed:
            self.dropped_bytes += len(data)
            return
        try:
            self._write(data)
        except OSError as exc:
            # Count what we could not write; the exact split point of a partial write is not worth
            # tracking, the report is about the log being broken, not about byte accounting.
            self.dropped_bytes += len(data)
            self._fail(exc)

    def write_line(self, text: str) -> None:
        """Write ``text`` plus a newline (UTF-8) on a line of its own, e.g. the run header and footer:
        after output that did not end with a newline (``printf x``), a newline goes first."""
        data = text.encode("utf-8", "replace") + b"\n"
        if self._fd is None and not self._failed:
            try:
                self._open()  # to learn how the file ends
            except OSError as exc:
                self.dropped_bytes += len(data)
                self._fail(exc)
                return
        self.write(data if self._line_start else b"\n" + data)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        self._failed = False
        self.dropped_bytes = 0
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> JobLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------------

    def _open(self, truncate: bool = False) -> int:
        # Read access too: the last byte tells whether the next header starts a line of its own.
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        if truncate:
            flags |= os.O_TRUNC
        if self._dir_fd is not None:
            fd = safefs.open_file(self._dir_fd, self.path.name, flags, 0o644, where=str(self.path.parent))
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, flags, 0o644)
        try:
            self._size = os.fstat(fd).st_size
            self._line_start = self._size == 0 or os.pread(fd, 1, self._size - 1) == b"\n"
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        return fd

    def _write(self, data: bytes) -> None:
        fd = self._fd if self._fd is not None else self._open()
        if self.max_bytes <= 0:
            self._write_all(fd, data)
            return
        view = memoryview(data)
        while view:
            room = self.max_bytes - self._size
            if len(view) <= room:
                self._write_all(fd, view)
                return
            cut = 0
            if room > 0:
                # Prefer ending the full file on a newline so rotated files hold whole lines.
                cut = bytes(view[:room]).rfind(b"\n") + 1
                if cut == 0 and self._size == 0:
                    cut = room  # one line longer than the whole file: split it
            if cut:
                self._write_all(fd, view[:cut])
                view = view[cut:]
            fd = self._rotate()

    def _write_all(self, fd: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            if n <= 0:  # pragma: no cover - regular files do not do this, but never spin
                raise OSError(errno.EIO, "write returned 0")
            self._size += n
            self._line_start = view[n - 1] == 0x0A
            view = view[n:]

    def _rotate(self) -> int:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        if self.keep == 0:
            return self._open(truncate=True)
        d = self._dir_fd
        base = self.path.name if d is not None else str(self.path)
        oldest = f"{base}.{self.keep}"
        if _lexists(oldest, d):
            os.unlink(oldest, dir_fd=d)
        for i in range(self.keep - 1, 0, -1):
            src = f"{base}.{i}"
            if _lexists(src, d):
                os.rename(src, f"{base}.{i + 1}", src_dir_fd=d, dst_dir_fd=d)
        try:
            os.rename(base, f"{base}.1", src_dir_fd=d, dst_dir_fd=d)
        except FileNotFoundError:
            pass  # removed behind our back while open: nothing to keep
        return self._open()

    def _fail(self, exc: OSError) -> None:
        self._failed = True
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        reason = exc.strerror or str(exc)
        if exc.filename and str(exc.filename) != str(self.path):
            reason = f"{reason}: {exc.filename}"
        message = f"job log {self.path}: {reason}; dropping output until the run ends"
        try:
            if self._on_error is not None:
                self._on_error(message)
            else:
                logfmt.warning(message, path=str(self.path), reason=reason)
        except Exception as cb_exc:  # a broken reporter must not take the output pump down with it
            logfmt.error("job log error callback failed", path=str(self.path), reason=repr(cb_exc))


def _lexists(name: str, dir_fd: int | None) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


class LineTail:
    """The last ``n`` lines of a byte stream, fed chunk by chunk, in bounded memory.

    Lines split across chunks are joined; each line keeps at most ``max_line`` bytes (the rest of an
    overlong line is discarded, not buffered). A chunk holding thousands of lines costs only the last
    ``n`` of them.
    """

    def __init__(self, n: int = 20, max_line: int = 1000):
        self.n = n
        self.max_line = max_line
        self._lines: deque[bytes] = deque(maxlen=max(n, 0))
        self._partial = b""

    def feed(self, data: bytes) -> None:
        last_nl = data.rfind(b"\n")
        if last_nl < 0:
            self._extend_partial(data)
            return
        # Walk backwards over complete lines only as far as the tail can hold.
        found: list[bytes] = []
        end = last_nl
        while len(found) < self.n:
            start = data.rfind(b"\n", 0, end) + 1
            if start == 0:
                self._extend_partial(data[: min(end, self.max_line)])
                found.append(self._partial)
                break
            found.append(data[start : min(end, start + self.max_line)])
            end = start - 1
        self._lines.extend(reversed(found))
        self._partial = b""
        self._extend_partial(data[last_nl + 1 : last_nl + 1 + self.max_line])

    def _extend_partial(self, data: bytes) -> None:
        room = self.max_line - len(self._partial)
        if room > 0 and data:
            self._partial += data[:room]

    def lines(self) -> list[str]:
        """The tail, oldest first, decoded as UTF-8 (bad bytes replaced); includes an unfinished line."""
        raw = list(self._lines)
        if self._partial:
            raw.append(self._partial)
        return [_decode(line) for line in raw[-self.n :]] if self.n > 0 else []


def _decode(line: bytes) -> str:
    return line.decode("utf-8", "replace").rstrip("\r")


def read_tail(path: Path, n: int) -> list[str]:
    """The last ``n`` lines of the file at ``path``, oldest first, without newlines.

    Reads backwards from the end in blocks, so a multi-gigabyte log costs only what the lines need.
    A missing file gives ``[]``; other errors (permission denied, a directory) raise ``OSError``.
    """
    if n <= 0:
        return []
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return []
    with f:
        return tail_of(f, n)


def tail_of(f: BinaryIO, n: int) -> list[str]:
    """``read_tail`` of a file already open for binary reading (the daemon opens it through safefs)."""
    if n <= 0:
        return []
    end = f.seek(0, os.SEEK_END)
    if end == 0:
        return []
    blocks: list[bytes] = []
    newlines = 0
    pos = end
    f.seek(end - 1)
    # A final newline ends the last line rather than starting an empty one.
    trailing = 1 if f.read(1) == b"\n" else 0
    while pos > 0 and newlines < n + trailing:
        size = min(_READ_BLOCK, pos)
        pos -= size
        f.seek(pos)
        block = f.read(size)
        blocks.append(block)
        newlines += block.count(b"\n")
    data = b"".join(reversed(blocks))
    if trailing:
        data = data[:-1]
    return [_decode(line) for line in data.split(b"\n")[-n:]]
