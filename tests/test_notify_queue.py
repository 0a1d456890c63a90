"""The delivery queues in process, on gevent's hub with the daemon's real clock: order per job, one
job's dead endpoint not holding up another's, retries then giving up, the bound, the shutdown grace,
and a notifier process killed with its group after its timeout."""

from __future__ import annotations

import gevent
import gevent.event
import pytest

from koku.daemon.clock import GeventClock
from koku.daemon import notify
from koku.daemon.notify import Delivery, Dispatcher
from koku.daemon.notify_exec import run_with_input
from koku.errors import DeliveryError
from conftest import alive, wait_for

CLOCK = GeventClock()


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notify, "BACKOFF", 0.01)


class Log:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.done: list[tuple[str, str, bool, str]] = []

    def delivery(self, job: str, kind: str, fail: int = 0, retry: bool = True, block: gevent.event.Event | None = None,
                 retries: int = 3) -> Delivery:
        failures = [fail]

        def send() -> str:
            if block is not None:
                CLOCK.wait(block, None)
            self.sent.append((job, kind))
            if failures[0] > 0:
                failures[0] -= 1
                raise DeliveryError("HTTP 503", retry=retry)
            return "HTTP 200 OK"

        return Delivery(job, "ops", kind, send, retries,
                        lambda ok, answer: self.done.append((job, kind, ok, answer)))


def settle(d: Dispatcher, seconds: float = 5.0) -> None:
    CLOCK.wait(d._idle, seconds)


def test_in_order_per_job_and_a_blocked_job_does_not_hold_up_another() -> None:
    log, d = Log(), Dispatcher(CLOCK)
    gate = gevent.event.Event()
    d.submit(log.delivery("a", "failure", block=gate))
    d.submit(log.delivery("a", "recovery"))
    for kind in ("start", "failure", "recovery"):
        d.submit(log.delivery("b", kind))
    CLOCK.sleep(0.1)
    assert [k for j, k, ok, _ in log.done if j == "b"] == ["start", "failure", "recovery"]
    assert not [e for e in log.done if e[0] == "a"]
    gate.set()
    settle(d)
    assert [k for j, k, ok, _ in log.done if j == "a"] == ["failure", "recovery"]


def test_retried_then_delivered_or_given_up_with_the_reason() -> None:
    log, d = Log(), Dispatcher(CLOCK)
    d.submit(log.delivery("a", "failure", fail=2))
    d.submit(log.delivery("b", "failure", fail=9, retries=2))
    d.submit(log.delivery("c", "failure", fail=1, retry=False))
    settle(d)
    done = {job: (ok, answer) for job, _, ok, answer in log.done}
    assert done == {"a": (True, "HTTP 200 OK"), "b": (False, "HTTP 503"), "c": (False, "HTTP 503")}
    assert [j for j, _ in log.sent].count("a") == 3 and [j for j, _ in log.sent].count("b") == 3
    assert [j for j, _ in log.sent].count("c") == 1  # not retryable: one attempt


def test_queue_is_bounded_dropping_the_oldest_waiting() -> None:
    log, d = Log(), Dispatcher(CLOCK)
    gate = gevent.event.Event()
    d.submit(log.delivery("a", "first", block=gate))
    for i in range(notify.QUEUE_MAX + 5):
        d.submit(log.delivery("a", f"e{i}"))
    dropped = [k for _, k, ok, answer in log.done if not ok and answer.startswith("dropped")]
    assert dropped == [f"e{i}" for i in range(6)]
    assert d.pending() == notify.QUEUE_MAX
    gate.set()
    settle(d)
    delivered = [k for _, k, ok, _ in log.done if ok]
    assert delivered == ["first"] + [f"e{i}" for i in range(6, notify.QUEUE_MAX + 5)]


def test_close_gives_pending_a_grace_then_reports_the_rest() -> None:
    log, d = Log(), Dispatcher(CLOCK)
    d.submit(log.delivery("a", "quick"))
    d.submit(log.delivery("b", "stuck", block=gevent.event.Event()))
    d.submit(log.delivery("b", "behind"))
    d.close(0.3)
    assert ("a", "quick", True, "HTTP 200 OK") in log.done
    assert ("b", "stuck", False, "not delivered: the daemon stopped") in log.done
    assert ("b", "behind", False, "not delivered: the daemon stopped") in log.done
    d.submit(log.delivery("c", "late"))
    assert log.done[-1] == ("c", "late", False, "not sent: the daemon is stopping")


def test_notifier_process_is_killed_with_its_group_after_its_timeout(tmp_path) -> None:
    pidfile = tmp_path / "pid"
    # The shell backgrounds a grandchild that ignores nothing: the whole group must go.
    result = run_with_input(["/bin/sh", "-c", f"sleep 30 & echo $! > {pidfile}; cat; sleep 30"],
                            {"PATH": "/usr/bin:/bin"}, b"event", 0.5, CLOCK)
    assert result.returncode is not None and result.returncode < 0
    assert result.description.startswith("timed out after 0.5s")
    grandchild = int(pidfile.read_text())
    wait_for(lambda: not alive(grandchild), 5, what="the backgrounded grandchild gone")


def test_notifier_process_gets_stdin_and_its_output_is_the_reason() -> None:
    result = run_with_input(["/bin/sh", "-c", "cat; echo; echo 'no route to pager' >&2; exit 3"],
                            {"PATH": "/usr/bin:/bin"}, b'{"event": "failure"}', 5, CLOCK)
    assert result.returncode == 3 and result.output.startswith(b'{"event": "failure"}')
    assert result.reason() == "exit status 3: no route to pager"
