"""The daemon: owns the config, the job runners, the scheduler loop, the socket, the pid lock, signals.

Greenlets (each named, stored and linked to a failure callback):
- ``scheduler``: ticks the timer heap and sleeps until the next due instant (at most a minute);
- ``saver``: writes state.json whenever something changed (coalescing bursts; retrying a full disk);
- ``main``: the caller's greenlet, waiting for stop/reload requests;
- one per run (executor.py) and one per socket connection (server.py).
Signal handlers and socket requests only call ``request_stop()`` / ``request_reload()``, which set flags.
"""

from __future__ import annotations

import gc
import grp
import os
import random
import signal
from datetime import datetime
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.lock

from koku import __version__

from koku.core import logfmt, safefs
from koku.core.admission import Admission
from koku.core.clock import Clock
from koku.core.config import Config, load_config
from koku.daemon import reload
from koku.daemon.alerting import NOTIFY_GRACE, DaemonAlerts
from koku.daemon.metrics_setup import MetricsSetup
from koku.errors import ConfigError
from koku.daemon.clock import GeventClock, Pacer, let_loop_run
from koku.daemon.executor import ProcessExecutor
from koku.daemon.control import Control
from koku.daemon import lagprobe, offhub
from koku.daemon.supervise import Greenlets
from koku.daemon.starter import StartQueue
from koku.daemon.statuscache import StatusCache
from koku.daemon.runs import RunWaiters
from koku.core.model import JobMemory, RunRecord
from koku.core.paths import StatePaths
from koku.daemon import recovery
from koku.daemon.prune import Forgetting
from koku.daemon.saver import StateSaver
from koku.daemon.singleton import Singleton
from koku.core.runner import Context, JobRunner, iso
from koku.daemon import procgroup
from koku.core.scheduler import BACKWARD_KEEP, Scheduler
from koku.daemon.server import ControlServer, connection_limit, raise_fd_limit
from koku.core.state import StateStore

TICK_BUDGET = 0.005  # seconds of due timers fired before the scheduler yields to the loop
HOUSEKEEPING = 1.0  # seconds between looks at daemon.sock and daemon.pid (recreated when deleted)
SAVER_JOIN = 30.0  # seconds shutdown waits for a state write in progress (a slow disk's fsync)


class Daemon:
    def __init__(self, config_path: Path, paths: StatePaths, clock: Clock | None = None):
        self.config_path = config_path
        self.paths = paths
        self.clock = clock or GeventClock()
        self.config: Config | None = None
        self.runners: dict[str, JobRunner] = {}
        self.retired: dict[str, JobRunner] = {}
        self.memory: dict[str, JobMemory] = {}
        self.store = StateStore(paths.state_file)
        self.saver = StateSaver(self.store, lambda: self.memory, self.clock)
        self.forgetting = Forgetting(lambda: self.memory, paths.log_dir, self.clock, self.saver.changed)
        self.scheduler = Scheduler(self.clock, on_error=self._timer_failed, on_jump=self._clock_jumped,
                                   on_step_back=self._clock_stepped_back,
                                   on_earlier=lambda: self._wake_scheduler.set())
        self.started_at: datetime | None = None
        self._stop = gevent.event.Event()
        self._wake_main = gevent.event.Event()
        self._wake_scheduler = gevent.event.Event()
        self._reload_requested = False
        self._reload_lock = gevent.lock.BoundedSemaphore()
        self._stop_now = False
        self._complained: set[str] = set()
        self.greenlets = Greenlets(self.clock, self._stop.is_set)
        self._unwatch_clock: Any = None  # stops the clock-set watch (timerfd) when there is one
        self.waiters = RunWaiters()
        self._lock = Singleton(paths.root, paths.pid_file)
        self.control = Control(self, self.waiters)
        self.server: ControlServer | None = None  # made in _run_locked, once socket_group is known
        self.state_dir_fd = -1  # set by run(), once the state dir is checked
        self.log_dir_fd = -1
        self._fd_limit = 1024
        self.executor: ProcessExecutor | None = None
        self.containment: procgroup.Containment = procgroup.Containment()
        self.status_cache = StatusCache(self.clock)
        self.runners_ready = gevent.event.Event()  # set once start-up is complete (every job has its runner)
        self.lag_probe = lagprobe.LagProbe(self.clock) if lagprobe.enabled() else None

    # ----- start-up ----------------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped. Raises ConfigError / AlreadyRunning / OSError before start-up completes."""
        self.config = load_config(self.config_path)
        self._fd_limit = raise_fd_limit()
        # Every directory from / down checked (owner, mode), then used through these fds (safefs).
        self.state_dir_fd = safefs.open_dir(self.paths.root)
        self.log_dir_fd = safefs.open_subdir(self.state_dir_fd, self.paths.log_dir.name, str(self.paths.root))
        self.store.dir_fd = self.state_dir_fd
        group = self.config.daemon.socket_group
        if group and os.geteuid() == 0:
            # Members of socket_group must be able to reach the socket, and only the socket.
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise ConfigError(f"{self.config_path}: [daemon]: socket_group \"{group}\" does not exist") from None
            os.fchown(self.state_dir_fd, -1, gid)
            os.fchmod(self.state_dir_fd, 0o710)
        else:
            os.fchmod(self.state_dir_fd, 0o700)
        self._lock.acquire()
        try:
            self._write_pid()
            return self._run_locked()
        finally:
            self._lock.release()

    def _run_locked(self) -> int:
        assert self.config is not None
        self.started_at = self.clock.now()
        for warning in self.config.warnings:
            logfmt.warning(warning)
        self.memory, warnings = self.store.load()
        for warning in warnings:
            logfmt.warning(warning)
        # Before anything is scheduled: an orphan left running would overlap the job's next run.
        recovery.recover(self.memory, self.clock, self.config.daemon.kill_grace, self.config.daemon.history)
        self.forgetting.scan({job.name for job in self.config.jobs})
        # After recovery, which empties a crashed daemon's run cgroups so that setup can sweep them.
        # KOKU_CONTAINMENT forces a kind (tests run the subreaper fallback on a machine with cgroups).
        self.containment = procgroup.setup(os.environ.get("KOKU_CONTAINMENT", "auto"))
        self.executor = ProcessExecutor(self.clock, self.paths.log_dir, lambda: self.config,  # type: ignore[arg-type,return-value]
                                        runs=self.waiters, durable=self.saver.wait_durable,
                                        containment=self.containment, log_dir_fd=self.log_dir_fd)
        self.starts = StartQueue(self.executor, self.clock)
        self.alerts = DaemonAlerts(self.clock, lambda: self.config,  # type: ignore[arg-type,return-value]
                                   lambda name: self.runners.get(name) or self.retired.get(name))
        # One context shared by every runner (10,000 jobs must not mean 10,000 copies).
        self.context = Context(clock=self.clock, scheduler=self.scheduler, daemon=self.config.daemon,
                               executor=self.starts, changed=self._job_changed,
                               admission=Admission(self.config.daemon.max_running), rng=random.Random(),
                               run_ended=self._run_ended, config_file=str(self.config_path), events=self.alerts)
        group = self.config.daemon.socket_group if os.geteuid() == 0 else None
        self.server = ControlServer(self.paths.socket, self.control.handle, group, self.clock,
                                    max_connections=connection_limit(self._fd_limit))
        self.server.start()
        # The socket already answers while 100,000 runners are made (a few seconds): Ping at once, every
        # other request once start-up is complete (Control.handle waits for runners_ready).
        pacer = Pacer(self.clock)
        for job in self.config.jobs:
            pacer.pace()
            self._add_runner(job, startup=True)
        # What start-up built lives as long as the daemon: keep it out of the cyclic collector's full
        # passes, which at 10,000 jobs held the loop for 50-100 ms at a time (a reload's garbage set one
        # off). The price: a runner removed by a reload that sits in a reference cycle is never freed.
        gc.freeze()
        self.greenlets.spawn("scheduler", self._scheduler_loop, restart=True)
        self.greenlets.spawn("starter", self.starts.loop, restart=True)
        if self.lag_probe is not None:
            self.greenlets.spawn("lagprobe", self.lag_probe.run)
        self.greenlets.spawn("saver", self.saver.loop, restart=True)
        self.greenlets.spawn("housekeeper", self._housekeeping_loop, restart=True)
        self.alerts.start()
        self.metrics = MetricsSetup(self.clock, lambda: self.config.daemon, self.all_runners,  # type: ignore[union-attr]
                                    self.alerts, self.started_at.timestamp())
        self.metrics.start()
        self._install_signals()
        self._unwatch_clock = self.clock.on_set(self._clock_was_set)
        self.runners_ready.set()  # requests other than Ping waited for this (Control.handle)
        logfmt.info("daemon started", pid=os.getpid(), version=__version__, config=str(self.config_path),
                    jobs=len(self.runners), socket=str(self.paths.socket), fds=self._fd_limit,
                    connections=self.server.max_connections, **self.containment.describe(),
                    clock_steps="timerfd" if self._unwatch_clock else "checked on each wake")
        self.greenlets.spawn_after("trim", 1.0, self._trim)
        self.saver.changed()
        try:
            self._main_loop()
        finally:
            self._shutdown()
        return 0

    def in_thread(self, func: Any, *args: Any) -> Any:
        return offhub.in_thread(func, *args)

    def _trim(self) -> None:
        offhub.in_thread(offhub.release_free_memory)

    def _job_changed(self, name: str | None = None) -> None:
        """A runner reports a change: its Status fragment is stale, its state must be saved."""
        if name is None:
            self.status_cache.clear()
        else:
            self.status_cache.discard(name)
        self.saver.changed(name)

    def _add_runner(self, job: Any, startup: bool) -> None:
        self.install_runner(JobRunner(job, self.memory.get(job.name) or JobMemory(), self.context), startup)

    def _install_signals(self) -> None:
        gevent.signal_handler(signal.SIGTERM, self.request_stop)
        gevent.signal_handler(signal.SIGINT, self._sigint)
        gevent.signal_handler(signal.SIGHUP, self.request_reload)

    def _sigint(self) -> None:
        # gunicorn's rule: a second SIGINT means "now".
        if self._stop.is_set():
            self._stop_now = True
        self.request_stop()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        self._stop.set()
        self._wake_main.set()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._wake_main.set()

    # ----- loops -------------------------------------------------------------------------------
    def _main_loop(self) -> None:
        while not self._stop.is_set():
            self._wake_main.wait()
            self._wake_main.clear()
            if self._reload_requested and not self._stop.is_set():
                self._reload_requested = False
                self.reload()  # never raises; a failure is logged and the old config runs on

    def _scheduler_loop(self) -> None:
        while not self._stop.is_set():
            delay = self.scheduler.tick(budget=TICK_BUDGET)
            self._wake_scheduler.clear()
            if delay <= 0:
                let_loop_run()  # more timers are due: serve the socket and the runs first, then go on
            else:
                self.clock.wait(self._wake_scheduler, delay)

    def _housekeeping_loop(self) -> None:
        while True:
            self.clock.sleep(HOUSEKEEPING)
            self._keep_files()
            assert self.config is not None
            if self.forgetting.forget_due(self.config.daemon.forget_removed_after, set(self.retired)):
                self.scheduler.purge()
                self.saver.changed()  # a full pass, which lets go of every forgotten job's cached JSON
                # Trimmed once that save has let go of them, not before: glibc keeps what is freed later.
                self.greenlets.spawn_after("trim-forgotten", 2.0, self._trim)

    def _keep_files(self) -> None:
        """Recreate daemon.sock and daemon.pid when someone deleted them (muzan's stop deletes both while
        the daemon may still run for shutdown_grace); leave alone what someone else put in their place."""
        assert self.server is not None
        sock = self.server.socket_ours()
        if sock is None:
            try:
                self.server.rebind()
                logfmt.warning("daemon.sock was deleted; bound it again", path=str(self.paths.socket))
            except OSError as exc:
                self._complain("socket", f"cannot bind {self.paths.socket} again", exc.strerror or str(exc))
        elif sock is False:
            self._complain("socket", f"{self.paths.socket} was replaced by another file; leaving it alone", "")
        if self._lock.pid_file_ours() is None:
            self._write_pid()
        elif self._lock.pid_file_ours() is False:
            self._complain("pid", f"{self.paths.pid_file} was replaced by another file; leaving it alone", "")

    def _write_pid(self) -> None:
        try:
            self._lock.write_pid()
            self._complained.discard("pid-write")
        except OSError as exc:  # a full disk: the daemon runs; the housekeeper tries again
            self._complain("pid-write", f"cannot write {self.paths.pid_file}; will retry", exc.strerror or str(exc))

    def _complain(self, key: str, message: str, reason: str) -> None:
        if key not in self._complained:  # once per problem, not once a second
            self._complained.add(key)
            if reason:
                logfmt.error(message, reason=reason)
            else:
                logfmt.error(message)

    def _timer_failed(self, timer: Any, exc: BaseException) -> None:
        logfmt.error("scheduled callback failed", job=timer.label, reason=repr(exc))

    def _clock_jumped(self, seconds: float) -> None:
        logfmt.warning("wall clock jumped", seconds=round(seconds, 1), now=iso(self.clock.now()))
        self.status_cache.clear()  # next runs may move without a per-job change

    def _clock_stepped_back(self, seconds: float) -> None:
        moved = [r.cfg.name for r in self.runners.values() if r.clock_stepped_back(seconds)]
        logfmt.info("clock stepped back: wildcard jobs go on from the new time, fixed-time jobs wait for "
                    "their next run" if seconds <= BACKWARD_KEEP else
                    "clock set back more than 3h: every job's next run computed from the new time",
                    seconds=round(seconds, 1), rescheduled=len(moved))
        self.status_cache.clear()

    def _clock_was_set(self) -> None:
        # From the kernel (timerfd) or a fake clock: tick now rather than at the end of the current wait.
        self._wake_scheduler.set()

    def _run_ended(self, runner: JobRunner, record: RunRecord) -> None:
        self.waiters.finished(runner.cfg.name, record)
        if runner.retired and not runner.active:
            self.retired.pop(runner.cfg.name, None)

    # ----- reload ------------------------------------------------------------------------------
    def reload(self) -> tuple[bool, str]:
        """Re-read the config and swap it in, all or nothing (reload.py). Returns (ok, message); never
        raises: whatever fails, the old config keeps running and the failure is logged and answered."""
        with self._reload_lock:  # parsing yields to the hub: a SIGHUP and a `ku reload` must not interleave
            try:
                plan = reload.build(self, reload.read(self))
            except ConfigError as exc:
                for problem in exc.problems:
                    logfmt.error("reload rejected; keeping the running config", reason=problem)
                return False, "config rejected; the old config keeps running:\n" + "\n".join(exc.problems)
            except Exception as exc:  # a bug in building the new runners: nothing was changed yet
                logfmt.error("reload failed; keeping the running config", reason=repr(exc))
                return False, f"reload failed; the old config keeps running: {exc!r}"
            try:
                message = reload.apply(self, plan)
            except Exception as exc:  # a bug; the daemon must go on with what it has
                logfmt.error("reload failed while applying the new config", reason=repr(exc))
                return False, f"reload failed while applying the new config: {exc!r}"
            finally:
                self._wake_scheduler.set()
                self.saver.changed()
        self._trim()
        return True, message

    def install_runner(self, runner: JobRunner, startup: bool) -> None:
        self.memory[runner.cfg.name] = runner.mem
        self.runners[runner.cfg.name] = runner
        self.forgetting.present(runner.cfg.name, runner.mem)
        self.status_cache.discard(runner.cfg.name)  # a job removed earlier may come back under its name
        runner.activate(startup=startup)
        self._wake_scheduler.set()

    def retire_runner(self, name: str) -> None:
        """Removed from the config: no more runs; one in flight finishes (the runner stays until then)."""
        runner = self.runners.pop(name)
        runner.retire()
        self.forgetting.removed(name, runner.mem)
        if runner.active:
            self.retired[name] = runner

    # ----- shutdown ----------------------------------------------------------------------------
    def cancel_runs(self, runner: JobRunner) -> list[int]:
        """``ku cancel``: TERM every run of the job in flight, KILL after kill_grace; the runs it hit."""
        grace = self.config.daemon.kill_grace
        return [run for run in sorted(runner.active) if self.starts.cancel(runner, run, grace, "ku cancel")]

    def all_runners(self) -> list[JobRunner]:
        return list(self.runners.values()) + list(self.retired.values())

    def _shutdown(self) -> None:
        assert self.config is not None and self.executor is not None
        logfmt.info("daemon stopping")
        for name in ("scheduler", "starter"):
            self.greenlets.kill(name)
        self.starts.cancel_queued()
        for runner in self.all_runners():
            # Runs waiting for a slot or a retry must not start while the others are let finish.
            runner.drop_pending(shutdown=True)
        running = self.executor.running()
        if running and not self._stop_now:
            grace = self.config.daemon.shutdown_grace
            logfmt.info("waiting for running jobs", runs=len(running), grace=grace)
            deadline = self.clock.monotonic() + grace
            while self.executor.running() and not self._stop_now and self.clock.monotonic() < deadline:
                self._wake_main.clear()
                self.clock.wait(self._wake_main, min(0.2, max(0.0, deadline - self.clock.monotonic())))
        for runner in self.all_runners():
            for run in list(runner.active):
                self.starts.cancel(runner, run, 0 if self._stop_now else self.config.daemon.kill_grace)
        deadline = self.clock.monotonic() + self.config.daemon.kill_grace + 5
        for run in self.executor.running():
            self.clock.wait(run, max(0.0, deadline - self.clock.monotonic()))
        self.alerts.close(NOTIFY_GRACE)  # before the last save: it records what was delivered
        # What runs left behind after a normal exit dies with the daemon: nothing of a job outlives it.
        # After the alerts: in the subreaper kind this kills every descendant, notifier commands too.
        self.containment.stop(self.clock, 0 if self._stop_now else self.config.daemon.kill_grace)
        self.metrics.close()
        self.saver.stop(self.greenlets.pop("saver"), SAVER_JOIN)
        try:
            self.saver.save(in_thread=False)
        except OSError as exc:
            logfmt.error("cannot write state at shutdown", reason=exc.strerror or str(exc))
        self.greenlets.kill("housekeeper")  # first: it must not bind the socket again once the server stopped
        if self.server is not None:
            self.server.stop()
        if self._unwatch_clock is not None:
            self._unwatch_clock()
            self._unwatch_clock = None
        logfmt.info("daemon stopped", pid=os.getpid())
