"""Answers to control-socket requests (protocol.py's messages), on behalf of the daemon.

Kept apart from lifecycle.py, which owns the daemon: this module sees the daemon only through
``DaemonView`` (what it reads, and the two entry points ``request_stop()`` and ``reload()``), and waits for
runs through ``RunWaiters``. Nothing here imports the lifecycle module.
"""

from __future__ import annotations

import codecs
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Protocol

from koku import __version__

from koku.core import protocol
from koku.core import safefs
from koku.core.joblog import tail_of
from koku.core.model import RunRecord
from koku.core.clock import Clock
from koku.core.paths import StatePaths
from koku.core.runner import JobRunner, iso
from koku.daemon.alerting import DaemonAlerts
from koku.daemon.lagprobe import LagProbe
from koku.daemon.metrics_setup import MetricsSetup
from koku.daemon.procgroup import Containment
from koku.daemon.runs import RunWaiters
from koku.daemon.statuscache import StatusCache
from koku.errors import RunRefused, UnknownJob


LOG_CHUNK = 1024 * 1024  # most bytes of a job log sent in one Log answer


class DaemonView(Protocol):
    """What answering requests needs of the daemon (lifecycle.Daemon provides it)."""

    runners: Mapping[str, JobRunner]
    started_at: datetime | None
    clock: Clock
    config_path: Path
    paths: StatePaths
    log_dir_fd: int  # the checked logs/ directory (safefs)

    @property
    def stopping(self) -> bool: ...

    def all_runners(self) -> Iterable[JobRunner]: ...

    def request_stop(self) -> None: ...

    def cancel_runs(self, runner: JobRunner) -> list[int]: ...

    def reload(self) -> tuple[bool, str]: ...

    status_cache: StatusCache  # the Status answers, from per-job cached fragments
    runners_ready: Any  # an event: set once start-up has made every runner
    lag_probe: LagProbe | None  # the bench's loop-lag probe (KOKU_LAG_PROBE=1)

    def in_thread(self, func: Callable[..., Any], *args: Any) -> Any:
        """``func(*args)`` in the threadpool, its exception raised here (blocking file work)."""

    alerts: DaemonAlerts  # `ku notify test`
    metrics: MetricsSetup  # `ku metrics`, and whether metrics are on (DaemonStatus)
    @property
    def containment(self) -> Containment: ...


class Control:
    def __init__(self, daemon: DaemonView, waiters: RunWaiters):
        self.d = daemon
        self.waiters = waiters

    def _job(self, name: str | None) -> JobRunner:
        runner = self.d.runners.get(name or "")
        if runner is None:
            raise UnknownJob(f"unknown job \"{name}\"")
        return runner

    def daemon_status(self) -> dict[str, Any]:
        assert self.d.started_at is not None
        info = {
            "pid": os.getpid(),
            "version": __version__,
            "protocol": protocol.VERSION,
            "started": iso(self.d.started_at),
            "uptime_s": round((self.d.clock.now() - self.d.started_at).total_seconds(), 1),
            "config": str(self.d.config_path),
            "jobs": len(self.d.runners),
            "running": sum(len(r.active) for r in self.d.all_runners()),
            "socket": str(self.d.paths.socket),
            "state_dir": str(self.d.paths.root),
            "python": sys.version.split()[0],
            "metrics": self.d.metrics.info(),
            "notifications_pending": self.d.alerts.dispatcher.pending(),
            **self.d.containment.describe(),
        }
        if self.d.lag_probe is not None:  # the bench's probe (KOKU_LAG_PROBE=1): figures since the last read
            info["loop_lag"] = self.d.lag_probe.take()
        return info

    def handle(self, req: protocol.Request) -> Any:
        if req.kind != "Ping" and not self.d.runners_ready.is_set():
            # Start-up is still making runners (seconds at 100,000 jobs): Ping says the daemon is alive,
            # everything else is answered once every job is there.
            self.d.clock.wait(self.d.runners_ready, None)
        try:
            return self._dispatch(req)
        except (UnknownJob, RunRefused) as exc:
            return protocol.error(str(exc))

    def _dispatch(self, req: protocol.Request) -> Any:
        kind = req.kind
        if kind == "Status":
            return self.d.status_cache.answer(self.d.runners.values())  # bytes, sent as they are
        if kind == "StatusBrief":
            return self.d.status_cache.answer(self.d.runners.values(), brief=True)
        if kind == "Ping":
            return protocol.ok("pong")
        if kind == "DaemonStatus":
            return {"DaemonStatus": self.daemon_status()}
        if kind == "Shutdown":
            self.d.request_stop()
            return protocol.ok(f"koku daemon (pid {os.getpid()}) is shutting down")
        if kind == "Reload":
            ok, message = self.d.reload()
            return protocol.ok(message) if ok else protocol.error(message)
        if kind == "Metrics":
            return {"Metrics": self.d.metrics.render()}
        if kind == "NotifyTest":
            delivered, message = self.d.alerts.test(req.name or "")
            return protocol.ok(message) if delivered else protocol.error(message)
        runner = self._job(req.name)
        if kind in ("Run", "Trigger", "RunFollow") and self.d.stopping:
            # A run started now could outlive the daemon: shutdown is already cancelling runs.
            return protocol.error("the daemon is shutting down; no new runs")
        if kind == "Run":
            record = runner.run_now()
            return protocol.ok(f"started {runner.cfg.name} run {record.run}")
        if kind == "Trigger":
            record = runner.run_now()
            return {"Started": {"name": runner.cfg.name, "run": record.run}}
        if kind == "RunFollow":
            record = runner.run_now()  # refusals raise here, before the answer becomes a stream
            # Before this greenlet yields, so before the run's greenlet starts: no output is missed.
            self.waiters.open_stream(runner.cfg.name, record.run)
            return self._follow(runner, record.run)
        if kind == "Cancel":
            runs = self.d.cancel_runs(runner)
            if not runs:
                return protocol.error(f"job \"{runner.cfg.name}\" is not running; nothing to cancel")
            which = ", ".join(str(r) for r in runs)
            return protocol.ok(f"cancelling {runner.cfg.name} run{'s' if len(runs) > 1 else ''} {which}: SIGTERM "
                               f"to its process group, SIGKILL after kill_grace")
        if kind == "Wait":
            return {"Finished": self._wait(runner, req.run or 0).to_dict()}
        if kind == "Pause":
            return protocol.ok(runner.pause(None))
        if kind == "PauseFor":
            return protocol.ok(runner.pause(req.seconds))
        if kind == "Resume":
            return protocol.ok(runner.resume())
        if kind == "History":
            records = list(reversed(runner.mem.history))[: req.limit]
            return {"History": [r.to_dict() for r in records]}
        if kind == "Log":
            try:
                return {"Log": self._log(runner.cfg.name, req)}
            except OSError as exc:
                return protocol.error(f"cannot read the log of {runner.cfg.name}: {exc.filename}: {exc.strerror}")
        return protocol.error(f"invalid request: unsupported {kind}")

    def _follow(self, runner: JobRunner, run: int) -> Iterator[Any]:
        """RunFollow's answer, several messages: Started, then Output as the run writes, then Finished."""
        name = runner.cfg.name
        stream = self.waiters.stream(name, run)
        yield {"Started": {"name": name, "run": run}}
        if stream is not None:
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            offset = 0
            while True:
                data, missed, offset, closed, changed = stream.read(offset)
                if missed:
                    decoder.reset()  # the bytes before a gap may end mid-character
                if data or missed or closed:
                    text = decoder.decode(data, final=closed)
                    if text or missed:
                        yield {"Output": {"text": text, "cut": missed}}
                if closed:
                    break
                changed.wait()
        yield {"Finished": self._wait(runner, run).to_dict()}

    def _wait(self, runner: JobRunner, run: int) -> RunRecord:
        name = runner.cfg.name
        if runner.pending(run):
            return self.waiters.until_finished(name, run)
        for record in reversed(runner.mem.history):
            if record.run == run:
                return record
        raise UnknownJob(f"job \"{name}\" has no run {run}")

    def _log(self, name: str, req: protocol.Request) -> dict[str, Any]:
        # Up to 1 MiB read, split and decoded (or a tail searched for): in the threadpool, not on the hub.
        return self.d.in_thread(self._read_log, name, req)

    def _read_log(self, name: str, req: protocol.Request) -> dict[str, Any]:
        path = self.d.paths.job_log(name)
        try:
            # Through the checked logs/ fd, never a symlink; a FIFO planted there must not block the hub.
            fh = os.fdopen(safefs.open_file(self.d.log_dir_fd, path.name, os.O_RDONLY, where=str(path.parent)), "rb")
        except FileNotFoundError:
            return {"path": str(path), "lines": [], "offset": 0}
        with fh:
            size = os.fstat(fh.fileno()).st_size
            if req.offset is None:
                return {"path": str(path), "lines": tail_of(fh, req.lines or 20), "offset": size}
            start = req.offset if req.offset <= size else 0  # the file was rotated: start over
            fh.seek(start)
            data = fh.read(LOG_CHUNK)
        # Send whole lines only; a line still being written comes with the next request.
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) == LOG_CHUNK:
            cut = len(data)  # one enormous line: send it in pieces rather than never
        text = data[:cut].decode("utf-8", errors="replace")
        return {"path": str(path), "lines": text.splitlines(), "offset": start + cut}
