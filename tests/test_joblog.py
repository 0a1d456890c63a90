from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest

from koku.core import joblog
from koku.core.joblog import JobLog, LineTail, read_tail


def files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.parent.iterdir())}


def lines(start: int, stop: int) -> bytes:
    return b"".join(b"line %05d\n" % i for i in range(start, stop))  # 11 bytes each


# -- JobLog -----------------------------------------------------------------------------------------


def test_appends_and_creates_parent_dirs(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "backup.log"
    with JobLog(path, max_bytes=1000, keep=2) as log:
        log.write_line("--- header")
        log.write(b"out\n")
    with JobLog(path, max_bytes=1000, keep=2) as log:
        log.write(b"second run\n")
    assert path.read_bytes() == b"--- header\nout\nsecond run\n"


@pytest.mark.parametrize("before, output, expected", [
    (b"", b"x", b"--- h\nx\n--- f\n"),  # printf x: the footer must not stick to "x"
    (b"", b"x\n", b"--- h\nx\n--- f\n"),
    (b"", b"", b"--- h\n--- f\n"),
    (b"old", b"y", b"old\n--- h\ny\n--- f\n"),  # a file left ending mid-line (a crash): the header too
    (b"old\n", b"y\n", b"old\n--- h\ny\n--- f\n"),
])
def test_header_and_footer_on_a_line_of_their_own(tmp_path: Path, before: bytes, output: bytes,
                                                   expected: bytes) -> None:
    path = tmp_path / "job.log"
    if before:
        path.write_bytes(before)
    with JobLog(path, max_bytes=1000, keep=2) as log:
        log.write_line("--- h")
        log.write(output)
        log.write_line("--- f")
    assert path.read_bytes() == expected


def test_footer_after_rotation_mid_line_starts_clean(tmp_path: Path) -> None:
    path = tmp_path / "job.log"
    with JobLog(path, max_bytes=20, keep=1) as log:
        log.write(b"0123456789012345")
        log.write(b"abcdefghij")  # rotates; the new file holds a partial line
        log.write_line("--- f")
    assert path.read_bytes().endswith(b"\n--- f\n")


def test_rotation_names_and_oldest_dropped(tmp_path: Path) -> None:
    path = tmp_path / "job.log"
    data = lines(0, 100)  # 1100 bytes, 10 lines per 110-byte file
    with JobLog(path, max_bytes=110, keep=3) as log:
        for i in range(0, len(data), 7):  # odd chunking: lines split across writes
            log.write(data[i : i + 7])
    got = files(path)
    assert sorted(got) == ["job.log", "job.log.1", "job.log.2", "job.log.3"]
    assert all(len(content) <= 110 for content in got.values())
    # Newest in job.log, older in .1, .2, .3; together they are the end of the stream, in order.
    joined = got["job.log.3"] + got["job.log.2"] + got["job.log.1"] + got["job.log"]
    assert data.endswith(joined)
    assert got["job.log"].endswith(b"line 00099\n")
    # Files split at line boundaries when a line fits.
    assert all(content.endswith(b"\n") for content in got.values())


def test_rotation_continues_existing_file_size(tmp_path: Path) -> None:
    path = tmp_path / "job.log"
    path.write_bytes(b"x" * 90 + b"\n")
    with JobLog(path, max_bytes=100, keep=1) as log:
        log.write(b"0123456789abc\n")
    assert (tmp_path / "job.log.1").read_bytes() == b"x" * 90 + b"\n"
    assert path.read_bytes() == b"0123456789abc\n"


def test_keep_zero_restarts_the_file(tmp_path: Path) -> None:
    path = tmp_path / "job.log"
    with JobLog(path, max_bytes=50, keep=0) as log:
        log.write(lines(0, 10))
    assert [p.name for p in tmp_path.iterdir()] == ["job.log"]
    content = path.read_bytes()
    assert 0 < len(content) <= 50
    assert lines(0, 10).endswith(content)


def test_line_longer_than_max_bytes_is_split(tmp_path: Path) -> None:
    path = tmp_path / "job.log"
    with JobLog(path, max_bytes=10, keep=5) as log:
        log.write(b"a" * 25)
    got = files(path)
    assert got == {"job.log": b"a" * 5, "job.log.1": b"a" * 10, "job.log.2": b"a" * 10}


def test_max_bytes_zero_never_rotates(tmp_path: Path) -> None:
    path = tmp_path / "job.log"
    with JobLog(path, max_bytes=0, keep=2) as log:
        log.write(b"z" * 10_000)
    assert files(path) == {"job.log": b"z" * 10_000}


def test_close_releases_fd_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "job.log"
    before = len(os.listdir("/proc/self/fd"))
    log = JobLog(path, max_bytes=10_000, keep=1)
    for i in range(50):
        log.write(b"%d\n" % i)
        log.close()
    assert len(os.listdir("/proc/self/fd")) == before
    assert path.read_bytes() == b"".join(b"%d\n" % i for i in range(50))


def test_unwritable_path_reports_once_and_drops(tmp_path: Path) -> None:
    blocker = tmp_path / "notadir"
    blocker.write_text("I am a file")
    errors: list[str] = []
    log = JobLog(blocker / "job.log", max_bytes=100, keep=1, on_error=errors.append)
    log.write(b"one\n")
    log.write_line("two")
    log.write(b"three\n")
    assert len(errors) == 1
    assert str(blocker) in errors[0]
    assert log.failed and log.dropped_bytes == len(b"one\ntwo\nthree\n")
    log.close()
    assert not log.failed
    # Next run tries again and reports again.
    log.write(b"again\n")
    assert len(errors) == 2
    log.close()


def test_disk_full_during_write_reports_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "job.log"
    errors: list[str] = []
    log = JobLog(path, max_bytes=1000, keep=1, on_error=errors.append)
    log.write(b"before\n")

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(joblog.os, "write", full)
    for _ in range(5):
        log.write(b"lost\n")
    monkeypatch.undo()
    assert len(errors) == 1
    assert "No space left on device" in errors[0] and "job.log" in errors[0]
    log.close()
    log.write(b"after\n")
    log.close()
    assert path.read_bytes() == b"before\nafter\n"
    assert len(errors) == 1


def test_raising_error_callback_is_contained(tmp_path: Path) -> None:
    def boom(message: str) -> None:
        raise RuntimeError(message)

    (tmp_path / "f").write_text("")
    log = JobLog(tmp_path / "f" / "job.log", max_bytes=100, keep=1, on_error=boom)
    log.write(b"x\n")  # must not raise
    assert log.failed


def test_default_error_reporter_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "f").write_text("")
    log = JobLog(tmp_path / "f" / "job.log", max_bytes=100, keep=1)
    log.write(b"x\n")
    assert any("job.log" in r.getMessage() for r in caplog.records)


# -- LineTail ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "chunks, expected",
    [
        ([b""], []),
        ([b"a\nb\n"], ["a", "b"]),
        ([b"a\nb"], ["a", "b"]),
        ([b"he", b"llo\nwor", b"ld\n"], ["hello", "world"]),
        ([b"x\r\n"], ["x"]),
        ([b"\n\n"], ["", ""]),
        ([b"caf\xc3", b"\xa9\n"], ["caf\u00e9"]),
        ([b"bad \xff\n"], ["bad \ufffd"]),
    ],
)
def test_line_tail_table(chunks: list[bytes], expected: list[str]) -> None:
    tail = LineTail(5)
    for chunk in chunks:
        tail.feed(chunk)
    assert tail.lines() == expected


def test_line_tail_keeps_last_n_across_chunks() -> None:
    data = b"".join(b"%d\n" % i for i in range(1000))
    for size in (1, 3, 7, 64, 5000):
        tail = LineTail(20)
        for i in range(0, len(data), size):
            tail.feed(data[i : i + size])
        assert tail.lines() == [str(i) for i in range(980, 1000)], size


def test_line_tail_caps_long_lines() -> None:
    tail = LineTail(3, max_line=10)
    tail.feed(b"a" * 5)
    tail.feed(b"b" * 100_000)
    tail.feed(b"c" * 7 + b"\nshort\n" + b"d" * 50)
    assert tail.lines() == ["aaaaabbbbb", "short", "d" * 10]


def test_line_tail_zero_lines() -> None:
    tail = LineTail(0)
    tail.feed(b"a\nb\n")
    assert tail.lines() == []


# -- read_tail --------------------------------------------------------------------------------------


def test_read_tail_missing_and_empty(tmp_path: Path) -> None:
    assert read_tail(tmp_path / "nope.log", 10) == []
    (tmp_path / "empty.log").write_bytes(b"")
    assert read_tail(tmp_path / "empty.log", 10) == []


@pytest.mark.parametrize(
    "content, n, expected",
    [
        (b"a\nb\nc\n", 2, ["b", "c"]),
        (b"a\nb\nc", 2, ["b", "c"]),
        (b"a\nb\nc\n", 10, ["a", "b", "c"]),
        (b"a\n\nc\n", 3, ["a", "", "c"]),
        (b"\n", 5, [""]),
        (b"only", 1, ["only"]),
        (b"a\nb\n", 0, []),
    ],
)
def test_read_tail_small(tmp_path: Path, content: bytes, n: int, expected: list[str]) -> None:
    path = tmp_path / "j.log"
    path.write_bytes(content)
    assert read_tail(path, n) == expected


def test_read_tail_big_file_reads_only_the_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.log"
    with open(path, "wb") as f:
        for block in range(200):  # ~ 22 MB
            f.write(lines(block * 10_000, block * 10_000 + 10_000))
    read_sizes: list[int] = []
    real_open = open

    class Spy:
        def __init__(self, f):
            self._f = f

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self._f.close()

        def read(self, size=-1):
            data = self._f.read(size)
            read_sizes.append(len(data))
            return data

    monkeypatch.setattr(joblog, "open", lambda p, m: Spy(real_open(p, m)), raising=False)
    got = read_tail(path, 5000)
    assert got == ["line %05d" % i for i in range(1_995_000, 2_000_000)]
    assert sum(read_sizes) < 200_000


def test_read_tail_line_spanning_blocks(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    long_line = b"L" * 200_000
    path.write_bytes(b"first\n" + long_line + b"\nlast\n")
    assert read_tail(path, 2) == [long_line.decode(), "last"]
    assert read_tail(path, 3) == ["first", long_line.decode(), "last"]


def test_joblog_is_pure_stdlib() -> None:
    import subprocess

    code = "import sys, koku.core.joblog; assert 'gevent' not in sys.modules, 'gevent imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
