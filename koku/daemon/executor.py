"""The real executor: one named greenlet per run, a child process through process.ProcessRun.

A job's log file is opened once while any of its runs is in flight (overlapping runs share it, so
rotation stays consistent) and closed when the last one ends.
"""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path
from typing import Callable

import gevent

from koku.core import logfmt
from koku.core.clock import Clock
from koku.core.config import Config, JobConfig
from koku.core.config.identity import Account, account
from koku.core.joblog import JobLog
from koku.core.model import RunRecord
from koku.core.model import Outcome, RunResult
from koku.daemon.credentials import Credentials
from koku.daemon.process import ProcessRun
from koku.daemon.runs import RunStream, RunWaiters
from koku.daemon.procgroup import Containment
from koku.core.runner import JobRunner


class _Tee:
    """What ProcessRun writes output to: the job's log, and the run's live stream (``ku run --wait``)."""

    __slots__ = ("_log", "_stream")

    def __init__(self, log: JobLog, stream: RunStream | None):
        self._log = log
        self._stream = stream

    def write(self, data: bytes) -> None:
        self._log.write(data)
        if self._stream is not None:
            self._stream.write(data)

    def __getattr__(self, name: str):
        return getattr(self._log, name)


class ProcessExecutor:
    def __init__(self, clock: Clock, log_dir: Path, config: Callable[[], Config], runs: RunWaiters | None = None,
                 durable: Callable[[], object] = lambda: None, containment: Containment | None = None,
                 log_dir_fd: int | None = None):
        self.clock = clock
        # Where a run's live reader (RunFollow) left a stream for its output; only followed runs have one,
        # so unfollowed output costs no memory.
        self._runs = runs
        self._durable = durable  # blocks the calling greenlet until what the runner recorded is on disk
        self.containment = containment if containment is not None else Containment()
        self.log_dir = log_dir
        self.log_dir_fd = log_dir_fd  # the checked logs/ directory: job logs are opened relative to it
        self._config = config  # a callable: reload replaces the config
        self._procs: dict[tuple[str, int], ProcessRun] = {}
        # Cancels that arrived while a run's greenlet was still preparing it (account lookup, cgroup,
        # log: each yields to the loop), before its ProcessRun existed: applied as soon as it does.
        self._early_cancels: dict[tuple[str, int], tuple[float, str]] = {}
        self._greenlets: dict[tuple[str, int], gevent.Greenlet] = {}
        self._logs: dict[str, tuple[JobLog, int]] = {}  # job name -> (log, runs using it)
        # The daemon's own environment does not change while it runs; copying a plain dict per run is
        # much cheaper than decoding os.environ again (it shows when hundreds of jobs start at once).
        self._base_env = dict(os.environ)
        self._login: dict[str, str] | None = None  # HOME, USER, LOGNAME of the user jobs run as
        self._nice = shutil.which("nice", path=self._base_env.get("PATH") or os.defpath) or "/usr/bin/nice"

    def _login_env(self) -> dict[str, str]:
        """What cron gives every job from the passwd entry of the user it runs as (the daemon's)."""
        if self._login is None:
            uid = os.geteuid()
            try:
                # NSS may ask LDAP or sssd: never on the hub.
                entry = gevent.get_hub().threadpool.apply(pwd.getpwuid, (uid,))
            except KeyError:
                logfmt.warning("no passwd entry for the daemon's user; jobs get no HOME, USER or LOGNAME",
                               uid=uid)
                self._login = {}
            else:
                self._login = {"HOME": entry.pw_dir, "USER": entry.pw_name, "LOGNAME": entry.pw_name}
        return self._login

    # The runner calls start(); everything after happens in the run's own greenlet.
    def start(self, runner: JobRunner, record: RunRecord) -> None:
        key = (runner.cfg.name, record.run)
        g = gevent.Greenlet(self._run, runner, record)
        g.name = f"run:{runner.cfg.name}:{record.run}"
        g.link_exception(lambda glet: self._crashed(runner, record, glet))
        self._greenlets[key] = g
        g.start()

    def cancel(self, runner: JobRunner, run: int, grace: float, reason: str = "daemon shutdown") -> bool:
        """TERM the run's group, KILL it after ``grace`` seconds; False if it is not running here."""
        key = (runner.cfg.name, run)
        proc = self._procs.get(key)
        if proc is None:
            if key not in self._greenlets:
                return False
            self._early_cancels[key] = (grace, reason)  # started, not spawned yet: it will not spawn
            return True
        proc.cancel(grace, reason)
        return True

    def running(self) -> list[gevent.Greenlet]:
        return list(self._greenlets.values())

    def _acquire_log(self, name: str) -> JobLog:
        cfg = self._config().daemon
        log, users = self._logs.get(name, (None, 0))
        if log is None:
            log = JobLog(self.log_dir / f"{name}.log", cfg.log_max_bytes, cfg.log_keep,
                         on_error=lambda msg: logfmt.error("job log write failed", job=name, reason=msg),
                         dir_fd=self.log_dir_fd)
        self._logs[name] = (log, users + 1)
        return log

    def _release_log(self, name: str) -> None:
        log, users = self._logs.get(name, (None, 0))
        if log is None:
            return
        if users <= 1:
            del self._logs[name]
            log.close()
        else:
            self._logs[name] = (log, users - 1)

    def _account(self, job: JobConfig) -> tuple[Account | None, str | None]:
        """(the account to switch to, or why the run cannot start). Looked up per run, off the hub: the
        passwd entry may have changed since the config was read, and NSS may be slow."""
        if job.user is None and job.group is None:
            return None, None
        try:
            return gevent.get_hub().threadpool.apply(account, (job.user, job.group)), None
        except LookupError as exc:
            return None, str(exc)

    def _credentials(self, job: JobConfig, acct: Account | None) -> Credentials:
        if acct is None and job.umask is None and job.nice is None:
            return Credentials()
        return Credentials(uid=acct.uid if acct else None, gid=acct.gid if acct else None,
                           groups=acct.groups if acct else None, umask=job.umask, nice=job.nice,
                           nice_program=self._nice)

    def _environment(self, runner: JobRunner, record: RunRecord, acct: Account | None = None) -> dict[str, str]:
        env = self._base_env.copy()
        # Under systemd or `env -i` the daemon has none of these; cron sets them for every job. What the
        # daemon has is kept, and the job's own env wins over both.
        for key, value in self._login_env().items():
            env.setdefault(key, value)
        env.setdefault("SHELL", self._config().daemon.shell)
        if acct is not None:
            env.update(acct.env)  # a job as another user gets that user's HOME, USER, LOGNAME, SHELL
        env.update(runner.cfg.env)
        env["KOKU_JOB"] = runner.cfg.name
        env["KOKU_RUN_ID"] = str(record.run)
        env["KOKU_SCHEDULED_TIME"] = record.scheduled or ""
        return env

    def _run(self, runner: JobRunner, record: RunRecord) -> None:
        config = self._config()
        cfg = config.daemon
        name = runner.cfg.name
        acct, refuse = self._account(runner.cfg)
        # Like cron, a job without a dir runs in the home directory, not wherever the daemon started; a
        # job as another user in that user's home ("/" if it has none, as systemd does).
        if acct is not None and acct.home is not None:
            home = Path(acct.home) if acct.home_is_dir else Path("/")
        else:
            home = Path(self._base_env.get("HOME") or self._login_env().get("HOME") or "/")
        cwd = config.job_dir(runner.cfg) or home
        key = (name, record.run)
        log = self._acquire_log(name)
        try:
            attempt = f" attempt={len(record.attempts) + 1}" if record.attempts else ""  # a retry (retries)
            log.write_line(f"--- {record.started} run={record.run}{attempt} {record.trigger} started: {runner.cfg.command}")
            proc = ProcessRun(
                runner.cfg.command,
                shell=cfg.shell,
                cwd=str(cwd),
                env=self._environment(runner, record, acct),
                log=_Tee(log, self._runs.stream(*key) if self._runs is not None else None),  # type: ignore[arg-type]
                timeout=runner.cfg.timeout,
                kill_grace=cfg.kill_grace,
                cage=self.containment.cage(name, record.run),
                clock=self.clock,
                credentials=self._credentials(runner.cfg, acct),
                refuse=refuse,
            )
            self._procs[key] = proc  # registered first: a shutdown meanwhile cancels it before it spawns
            early = self._early_cancels.pop(key, None)
            if early is not None:
                proc.cancel(*early)
            # The run's "starting" record (its id and slot) must be on disk before the child exists, or
            # a crash now would run the slot again, or leave a run nobody recorded.
            self._durable()
            proc.start()
            if proc.pid is not None:
                runner.run_spawned(record, proc.pid)
            result = proc.wait()
            duration = "" if result.started_mono is None else f" duration={result.ended_mono - result.started_mono:.1f}s"
            log.write_line(f"--- run={record.run} {result.description}{duration}")
        finally:
            self._procs.pop(key, None)
            self._early_cancels.pop(key, None)
            self._greenlets.pop(key, None)
            self._release_log(name)
            if self._runs is not None:
                self._runs.close_stream(*key)
        runner.finish_run(record, result)

    def _crashed(self, runner: JobRunner, record: RunRecord, glet: gevent.Greenlet) -> None:
        # A bug in koku, not in the job: record it so the job does not look running forever.
        logfmt.error("run greenlet crashed", job=runner.cfg.name, run=record.run, reason=repr(glet.exception))
        if self._runs is not None:
            self._runs.close_stream(runner.cfg.name, record.run)
        if record.run in runner.active:
            now = self.clock.monotonic()
            runner.finish_run(record, RunResult(outcome=Outcome.ERROR, description=f"internal error: {glet.exception!r}",
                                                exit_code=None, signal=None, pid=record.pid, started_mono=None,
                                                ended_mono=now, tail=()))
