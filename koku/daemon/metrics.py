"""Prometheus metrics: ``/metrics`` over gevent's WSGI server ([daemon] metrics_listen), ``ku metrics``
over the socket, and a textfile for node_exporter ([daemon] metrics_file) rewritten after runs.

Imported only when metrics are used (a listen address or file is configured, or ``ku metrics`` asks):
prometheus_client and this module cost a daemon without metrics nothing. The daemon's state is read on
the hub in chunks; the families are built and encoded in gevent's threadpool.

Series (issue 13; exactly these names): koku_job_runs_total{job,outcome},
koku_job_last_start_timestamp_seconds{job}, koku_job_last_success_timestamp_seconds{job},
koku_job_last_duration_seconds{job}, koku_job_running{job}, koku_job_state{job,state},
koku_job_next_run_timestamp_seconds{job}, koku_job_skipped_total{job}, koku_start_delay_seconds
(histogram), koku_notifications_total{notifier,outcome}, koku_daemon_start_time_seconds,
koku_build_info{version}.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import gevent
import gevent.event
import gevent.pool
import gevent.pywsgi
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from koku import __version__
from koku.core import logfmt
from koku.core.clock import Clock
from koku.core.model import JobState
from koku.core.runner import JobRunner
from koku.core.stats import RunStats, unix

CHUNK = 500  # jobs read per turn of the hub
WRITER_JOIN = 5.0  # seconds the metrics file writer gets to finish at shutdown
STATES = [s.value for s in JobState]


@dataclass(frozen=True)
class JobRow:
    name: str
    runs: tuple[tuple[str, int], ...]
    last_start: float | None
    last_success: float | None
    last_duration: float | None
    running: int
    state: str
    next_run: float | None
    skipped: int


@dataclass(frozen=True)
class Snapshot:
    jobs: list[JobRow]
    delay: list[tuple[float, int]]
    delay_sum: float
    notifications: list[tuple[tuple[str, str], int]]
    started: float


def _row(runner: JobRunner, stats: RunStats) -> JobRow:
    name = runner.cfg.name
    js = stats.jobs.get(name)
    last = runner.mem.last_run  # saved: the last run's figures survive a daemon restart
    active = runner.active
    last_start = js.last_start if js and js.last_start is not None else unix(
        max((r.started for r in active.values()), default=None) or (last.started if last else None))
    last_duration = js.last_duration if js and js.last_duration is not None else (last.duration_s if last else None)
    last_success = js.last_success if js else None
    if last_success is None and last is not None and last.outcome == "success":
        last_success = unix(last.ended)
    nxt = runner.next_run()
    return JobRow(name, tuple(js.runs.items()) if js else (), last_start, last_success, last_duration, len(active),
                  runner.state.value, nxt.timestamp() if nxt else None, runner.mem.skipped)


def _families(snap: Snapshot) -> list[Metric]:
    runs = CounterMetricFamily("koku_job_runs", "Runs finished since the daemon started, by outcome.",
                               labels=["job", "outcome"])
    start = GaugeMetricFamily("koku_job_last_start_timestamp_seconds", "When the job's last run started.", labels=["job"])
    success = GaugeMetricFamily("koku_job_last_success_timestamp_seconds", "When the job last succeeded.",
                                labels=["job"])
    duration = GaugeMetricFamily("koku_job_last_duration_seconds", "How long the job's last finished run took.",
                                 labels=["job"])
    running = GaugeMetricFamily("koku_job_running", "Runs of the job in flight.", labels=["job"])
    state = GaugeMetricFamily("koku_job_state", "1 for the job's current state.", labels=["job", "state"])
    nxt = GaugeMetricFamily("koku_job_next_run_timestamp_seconds", "When the job runs next.", labels=["job"])
    skipped = CounterMetricFamily("koku_job_skipped", "Runs skipped because the last one was still running.",
                                  labels=["job"])
    for row in snap.jobs:
        for outcome, count in row.runs:
            runs.add_metric([row.name, outcome], count)
        for family, value in ((start, row.last_start), (success, row.last_success), (duration, row.last_duration),
                              (nxt, row.next_run)):
            if value is not None:
                family.add_metric([row.name], value)
        running.add_metric([row.name], row.running)
        for name in STATES:
            state.add_metric([row.name, name], 1 if name == row.state else 0)
        skipped.add_metric([row.name], row.skipped)
    delay = HistogramMetricFamily("koku_start_delay_seconds", "How late scheduled runs started.",
                                  buckets=[(floatToGoString(le), n) for le, n in snap.delay], sum_value=snap.delay_sum)
    notes = CounterMetricFamily("koku_notifications", "Notifications and pings, by outcome.",
                                labels=["notifier", "outcome"])
    for (notifier, outcome), count in snap.notifications:
        notes.add_metric([notifier, outcome], count)
    daemon = GaugeMetricFamily("koku_daemon_start_time_seconds", "When the daemon started.", value=snap.started)
    build = GaugeMetricFamily("koku_build_info", "The running koku.", labels=["version"])
    build.add_metric([__version__], 1)
    return [runs, start, success, duration, running, state, nxt, skipped, delay, notes, daemon, build]


class _Fixed(Collector):
    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def encode(snap: Snapshot) -> bytes:
    """The text format, built from a snapshot (in a pool thread)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(_families(snap)))
    return generate_latest(registry)


class Metrics:
    def __init__(self, clock: Clock, runners: Callable[[], Iterable[JobRunner]], stats: RunStats, started: float):
        self.clock = clock
        self._runners = runners
        self.stats = stats
        self.started = started
        self.server: gevent.pywsgi.WSGIServer | None = None
        self._file_dirty = gevent.event.Event()
        self._writer: gevent.Greenlet | None = None
        self._file: Callable[[], str | None] = lambda: None
        self._closing = False

    def snapshot(self) -> Snapshot:
        rows: list[JobRow] = []
        for i, runner in enumerate(list(self._runners())):
            rows.append(_row(runner, self.stats))
            if i % CHUNK == CHUNK - 1:
                self.clock.sleep(0)  # 10,000 jobs: let runs that are due start in between
        return Snapshot(rows, self.stats.delay_histogram(), self.stats.delay_sum, sorted(self.stats.notifications.items()),
                        self.started)

    def render(self) -> bytes:
        snap = self.snapshot()
        return gevent.get_hub().threadpool.apply(encode, (snap,))

    # ----- /metrics ---------------------------------------------------------------------------
    def listen(self, address: str) -> None:
        """Serve /metrics on ``address`` ("HOST:PORT"). Raises OSError (port taken, host unknown)."""
        host, _, port = address.rpartition(":")
        host = host[1:-1] if host.startswith("[") else host
        self.server = gevent.pywsgi.WSGIServer((host, int(port)), self._app, spawn=gevent.pool.Pool(16), log=None,
                                               error_log=None)
        self.server.start()
        logfmt.info("metrics listening", address=f"{host}:{self.server.server_port}", path="/metrics")

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ.get("PATH_INFO") not in ("/metrics", "/metrics/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"koku serves /metrics\n"]
        try:
            body = self.render()
        except Exception as exc:  # a scrape must never take the server down
            logfmt.error("metrics scrape failed", reason=repr(exc))
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
            return [b"metrics failed; see the daemon log\n"]
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
        return [body]

    # ----- metrics_file -----------------------------------------------------------------------
    def write_file_after_runs(self, path: Callable[[], str | None]) -> None:
        """Keep the file at ``path()`` current: written now and after every run (bursts coalesce)."""
        self._file = path
        self._writer = gevent.Greenlet(self._file_loop)
        self._writer.name = "metrics:file"
        self._writer.link_exception(self._writer_died)
        self._writer.start()
        self._file_dirty.set()

    def run_ended(self) -> None:
        self._file_dirty.set()

    def _file_loop(self) -> None:
        failing = False
        while not self._closing:
            self.clock.wait(self._file_dirty, None)
            self._file_dirty.clear()
            path = self._file()
            if not path:
                continue
            try:
                data = self.render()
                gevent.get_hub().threadpool.apply(write_atomically, (Path(os.path.expanduser(path)), data))
                if failing:
                    logfmt.info("metrics file written again", path=path)
                failing = False
            except OSError as exc:
                if not failing:
                    logfmt.error("cannot write the metrics file", path=path, reason=exc.strerror or str(exc))
                failing = True

    def _writer_died(self, glet: gevent.Greenlet) -> None:
        logfmt.error("metrics file writer died", reason=repr(glet.exception))

    def close(self) -> None:
        if self._writer is not None:
            # One last write, and joined rather than killed: a write killed mid-way would leave its
            # temp file behind when the process exits.
            self._writer.unlink(self._writer_died)
            self._closing = True
            self._file_dirty.set()
            if not self.clock.wait(self._writer, WRITER_JOIN):
                self._writer.kill(block=False)
        if self.server is not None:
            self.server.close()  # stops listening; in-flight scrapes finish on their own


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` by a complete new file (a reader sees the old file or the new one, never part):
    a temp file of our own in the same directory, fsync'd, then renamed over it. In a pool thread."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
