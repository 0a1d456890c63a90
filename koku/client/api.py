"""koku's Python API for other tools: a typed client for the control socket. Stdlib only (no gevent, no
croniter), so a monitoring script or kagaya can import it for the cost of a socket.

    import koku
    with koku.connect() as k:             # the same state dir rules as `ku`
        for job in k.status():
            print(job["name"], job["state"], job["last_exit"])
        record = k.run("backup", wait=True, on_output=print)

Every method raises from the one exception family in ``koku.errors``, with the messages ``ku`` prints:
NotRunningError (no daemon), DaemonError (the daemon refused: unknown job, overlap, shutdown),
ConfigError (a reload rejected the config; ``problems`` lists each), ProtocolError (a broken answer).
docs/api.md documents the names and what may change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

from koku.client.client import Client as _SocketClient
from koku.client.types import DaemonInfo, JobStatus, RunRecord
from koku.core.durations import parse_duration
from koku.core.paths import StatePaths, state_paths
from koku.errors import ConfigError, DaemonError, ProtocolError, UsageError

__all__ = ["Client", "connect"]


class Client:
    """One connection to a daemon; requests go one after another on it. Use as a context manager, or
    call ``close()``. Not thread-safe: give each thread its own."""

    def __init__(self, socket_path: Path, timeout: float | None = 10.0):
        self.socket_path = Path(socket_path)
        self._conn = _SocketClient(self.socket_path, timeout=timeout)

    # ----- connection ----------------------------------------------------------------------------
    def connect(self) -> Client:
        """Open the connection now (raises NotRunningError); requests open it on demand anyway."""
        self._conn.connect()
        return self

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- reading -------------------------------------------------------------------------------
    def status(self, brief: bool = False) -> list[JobStatus]:
        """Every configured job's status, in config order. ``brief``: only what `ku status` prints
        (name, state, last_run, last_exit, last_outcome, last_signal, next_run), a fifth of the bytes;
        from a daemon that predates it, the full status."""
        if brief:
            tag, body = self._conn.call("StatusBrief")
            if tag == "StatusBrief":
                return body
            if tag != "Error" or "StatusBrief" not in str(body):
                raise DaemonError(str(body)) if tag == "Error" else ProtocolError(
                    f"expected a StatusBrief answer from the daemon, got {tag}")
        return self._conn.expect("Status", "Status")

    def job(self, name: str) -> JobStatus:
        """One job's status; DaemonError for a name the config does not have."""
        for job in self.status():
            if job["name"] == name:
                return job
        raise DaemonError(f'unknown job "{name}"')

    def history(self, name: str, limit: int = 20) -> list[RunRecord]:
        """Past runs of ``name``, newest first, at most ``limit``."""
        return self._conn.expect({"History": {"name": name, "limit": _count(limit, "limit")}}, "History")

    def log(self, name: str, lines: int = 20) -> list[str]:
        """The last ``lines`` lines of the job's log (its runs' output between header and footer lines)."""
        return self._conn.expect({"Log": {"name": name, "lines": _count(lines, "lines")}}, "Log")["lines"]

    def follow(self, name: str, lines: int = 0, poll: float = 0.5) -> Iterator[str]:
        """The job's log as it grows, line by line, forever (``ku log -f``): the last ``lines`` lines
        first, then each new one. Polls every ``poll`` seconds; stop by leaving the loop."""
        from koku.core.clock import RealClock

        clock = RealClock()
        body = self._conn.expect({"Log": {"name": name, "lines": _count(lines, "lines")}}, "Log")
        yield from body["lines"]
        offset = body["offset"]
        while True:
            clock.sleep(poll)
            body = self._conn.expect({"Log": {"name": name, "lines": 0, "offset": offset}}, "Log")
            yield from body["lines"]
            offset = body["offset"]

    def daemon_status(self) -> DaemonInfo:
        """The daemon's pid, version, protocol version, uptime, config path, job count, containment, ..."""
        return self._conn.expect("DaemonStatus", "DaemonStatus")

    # ----- acting --------------------------------------------------------------------------------
    def run(self, name: str, wait: bool = False, on_output: Callable[[str], None] | None = None,
            on_start: Callable[[int], None] | None = None,
            on_skipped: Callable[[int], None] | None = None) -> int | RunRecord:
        """Start a run of ``name`` now (in any state; refused while it runs with ``overlap = false``).

        Without ``wait``: returns the run's number at once. With ``wait``: blocks until the run ends and
        returns its RunRecord; ``on_start(run)`` is called once it started, ``on_output(text)`` with that
        run's output as it comes (chunks of text, not lines), and ``on_skipped(nbytes)`` when the reader
        fell behind and the daemon dropped output (the job's log still has it).
        """
        if not wait:
            return self._conn.expect({"Trigger": name}, "Started")["run"]
        started = self._conn.expect({"RunFollow": name}, "Started")
        if on_start is not None:
            on_start(started["run"])
        while True:
            tag, body = self._conn.receive()
            if tag == "Output":
                if body.get("cut") and on_skipped is not None:
                    on_skipped(body["cut"])
                if on_output is not None:
                    on_output(body.get("text") or "")
            elif tag == "Finished":
                return body
            elif tag == "Error":
                raise DaemonError(str(body))
            else:
                raise DaemonError(f"unexpected answer {tag} while following {name} run {started['run']}")

    def cancel(self, name: str) -> str:
        """Terminate the job's runs in flight (TERM, KILL after kill_grace); they end as cancelled."""
        return self._conn.expect({"Cancel": name}, "Ok")

    def pause(self, name: str, for_: float | str | None = None) -> str:
        """Pause the schedule; ``for_`` (seconds, or a duration such as "2h") ends the pause by itself."""
        if for_ is None:
            return self._conn.expect({"Pause": name}, "Ok")
        try:
            seconds = parse_duration(for_)
        except ValueError as exc:
            raise UsageError(f"pause for: {exc}") from None
        if seconds <= 0:
            raise UsageError("a timed pause must be longer than zero")
        return self._conn.expect({"PauseFor": {"name": name, "seconds": seconds}}, "Ok")

    def resume(self, name: str) -> str:
        """Resume a paused or stopped job (a stopped job's failure count starts again)."""
        return self._conn.expect({"Resume": name}, "Ok")

    def reload(self) -> str:
        """Re-read the daemon's config; returns the change summary ("reloaded ...: added a; ...").

        A broken config raises ConfigError listing every problem; the old config keeps running."""
        tag, body = self._conn.call("Reload", timeout=60)
        if tag == "Ok":
            return body
        if tag == "Error":
            raise ConfigError(str(body).splitlines())
        raise DaemonError(f"unexpected answer {tag}")

    def notify_test(self, notifier: str) -> tuple[bool, str]:
        """Send a test event through ``[notify.<notifier>]`` once: (delivered, the answer or the reason).
        Takes up to the notifier's timeout (10 s by default)."""
        tag, body = self._conn.call({"NotifyTest": notifier}, timeout=120)
        if tag not in ("Ok", "Error"):
            raise DaemonError(f"unexpected answer {tag}")
        return tag == "Ok", str(body)

    def metrics(self) -> str:
        """The daemon's metrics in Prometheus text format (what ``/metrics`` serves)."""
        return self._conn.expect("Metrics", "Metrics", timeout=60)

    def shutdown(self) -> str:
        """Ask the daemon to stop as on SIGTERM (running jobs get shutdown_grace); returns at once."""
        return self._conn.expect("Shutdown", "Ok")

    # ----- raw ------------------------------------------------------------------------------------
    def request(self, message: Any, tag: str, timeout: float | None | str = "default") -> Any:
        """Send one raw protocol message (docs/protocol.md) and return the body of an answer tagged
        ``tag`` (DaemonError for an Error answer). For requests this class has no method for."""
        return self._conn.expect(message, tag, timeout)


def connect(state_dir: str | Path | None = None, timeout: float | None = 10.0) -> Client:
    """A Client for the daemon of ``state_dir``: by default the one ``ku`` talks to ($KOKU_STATE_DIR, else
    $XDG_STATE_HOME/koku, else ~/.local/state/koku). Connects now: raises NotRunningError naming the
    socket when no daemon answers there."""
    paths = StatePaths(Path(state_dir)) if state_dir is not None else state_paths()
    return Client(paths.socket, timeout=timeout).connect()


def _count(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"{what} must be a whole number of at least 0, got {value!r}")
    return value
