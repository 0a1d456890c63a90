"""Whether and how the daemon serves metrics. Keeps prometheus_client out of a daemon without metrics:
``koku.daemon.metrics`` is imported only when [daemon] metrics_listen or metrics_file is set, or when
``ku metrics`` first asks. ``info()`` (in DaemonStatus) tells from outside whether it was loaded.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Callable, Iterable

from koku.core import logfmt
from koku.core.clock import Clock
from koku.core.config import DaemonConfig
from koku.core.runner import JobRunner
from koku.daemon.alerting import DaemonAlerts

if TYPE_CHECKING:
    from koku.daemon.metrics import Metrics


class MetricsSetup:
    def __init__(self, clock: Clock, daemon: Callable[[], DaemonConfig], runners: Callable[[], Iterable[JobRunner]],
                 alerts: DaemonAlerts, started: float):
        self.clock = clock
        self._daemon = daemon  # a callable: reload replaces the config
        self._runners = runners
        self._alerts = alerts
        self._started = started
        self._metrics: Metrics | None = None
        self.listening: str | None = None

    def get(self) -> Metrics:
        if self._metrics is None:
            from koku.daemon.metrics import Metrics  # the one import of prometheus_client

            self._metrics = Metrics(self.clock, self._runners, self._alerts.stats, self._started)
            self._alerts.on_run_ended = self._metrics.run_ended
        return self._metrics

    def start(self) -> None:
        """At daemon start: serve and write what the config asks for. A port that cannot be bound is
        logged, not fatal: the daemon's first job is running jobs."""
        cfg = self._daemon()
        if cfg.metrics_listen:
            try:
                self.get().listen(cfg.metrics_listen)
                self.listening = cfg.metrics_listen
            except OSError as exc:
                logfmt.error("cannot serve metrics; running without /metrics", address=cfg.metrics_listen,
                             reason=exc.strerror or str(exc))
        if cfg.metrics_file:
            self.get().write_file_after_runs(lambda: self._daemon().metrics_file)

    def render(self) -> str:
        return self.get().render().decode()

    def info(self) -> dict[str, Any]:
        cfg = self._daemon()
        return {"listen": self.listening, "file": cfg.metrics_file,
                "prometheus_client_loaded": "prometheus_client" in sys.modules}

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
