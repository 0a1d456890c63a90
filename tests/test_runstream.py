"""RunStream: a run's output for live readers in bounded memory, with the gaps a slow reader missed."""

from __future__ import annotations

import pytest

from koku.daemon.runs import RunStream


@pytest.mark.parametrize("writes, keep, offset, expected, missed", [
    ([b"ab", b"cd"], 100, 0, b"abcd", 0),
    ([b"ab", b"cd"], 100, 3, b"d", 0),
    ([b"aaaa", b"bbbb", b"cccc"], 4, 0, b"cccc", 8),  # whole old chunks dropped, the gap counted
    ([b"aaaa", b"bbbb", b"cccc"], 5, 0, b"bbbbcccc", 4),
    ([b"aaaa", b"bbbb", b"cccc"], 4, 10, b"cc", 0),
    ([], 4, 0, b"", 0),
])
def test_read_returns_what_is_kept_and_counts_what_was_missed(writes, keep, offset, expected, missed):
    stream = RunStream(keep)
    for data in writes:
        stream.write(data)
    data, gap, nxt, closed, _ = stream.read(offset)
    assert (data, gap, closed) == (expected, missed, False)
    assert nxt == sum(map(len, writes))


def test_memory_stays_bounded_and_close_wakes_readers():
    stream = RunStream(1000)
    _, _, offset, _, changed = stream.read(0)
    for _ in range(10_000):
        stream.write(b"x" * 100)
    assert changed.is_set()
    data, missed, offset, closed, changed = stream.read(offset)
    assert 1000 <= len(data) <= 1100 and missed + len(data) == 1_000_000 and not closed
    stream.close()
    assert changed.is_set()
    assert stream.read(offset)[3] is True
    stream.write(b"late")  # after close: ignored
    assert stream.read(offset)[0] == b""
