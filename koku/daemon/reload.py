"""Reload, all or nothing: read and check the new config, build every new runner and check every
change, and only then swap. Anything that fails before the swap leaves the running config untouched
and is reported (the reload's answer, and an error line in the daemon log).

Parsing runs in gevent's threadpool: a big config must not stall the hub, and a hostile one (5,000
nested ``[``) ends in a RecursionError there, which the parser turns into a ConfigError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gevent

from koku.core import logfmt
from koku.core.config import Config, JobConfig, load_config
from koku.core.model import JobMemory
from koku.core.runner import Context, JobRunner
from koku.core.scheduler import Scheduler
from koku.daemon.clock import Pacer
from koku.errors import ConfigError


class Daemon(Protocol):
    """What a reload reads and swaps of the daemon (lifecycle.Daemon provides it)."""

    config_path: Path
    config: Config | None
    alerts: Any
    runners: dict[str, JobRunner]
    memory: dict[str, JobMemory]
    context: Context
    scheduler: Scheduler

    def retire_runner(self, name: str) -> None: ...

    def install_runner(self, runner: JobRunner, startup: bool) -> None: ...


@dataclass
class Plan:
    new: Config
    added: dict[str, JobRunner] = field(default_factory=dict)
    changed: list[tuple[JobRunner, JobConfig]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def read(d: Daemon) -> Config:
    """The new config, parsed off the hub. Raises ConfigError (also for an unreadable file)."""
    try:
        return gevent.get_hub().threadpool.apply(load_config, (d.config_path,))
    except ConfigError:
        raise
    except Exception as exc:  # a parser bug must not take the daemon down: report it as a bad config
        raise ConfigError(f"{d.config_path}: cannot be read: {exc!r}") from None


def build(d: Daemon, new: Config) -> Plan:
    """Everything the swap needs, with no effect on the running daemon. Raises on any problem."""
    plan = Plan(new)
    d.alerts.prepare(new)  # the senders' imports, before the swap rather than at the first alert
    wanted = {job.name for job in new.jobs}
    plan.removed = [name for name in d.runners if name not in wanted]
    pacer = Pacer(d.clock)  # 10,000 comparisons must not hold the loop; only this reload changes runners
    for job in new.jobs:
        pacer.pace()
        runner = d.runners.get(job.name)
        if runner is None:
            # Not yet in d.memory: a plan that is dropped must leave no trace.
            plan.added[job.name] = JobRunner(job, d.memory.get(job.name) or JobMemory(), d.context)
        elif runner.cfg != job:
            runner.check_update(job)
            plan.changed.append((runner, job))
    return plan


def apply(d: Daemon, plan: Plan) -> str:
    """Swap the plan in. Only assignments and timers from here on. Returns the message for the user."""
    old = d.config
    assert old is not None
    d.config = plan.new
    d.context.daemon = plan.new.daemon
    d.context.admission.set_limit(plan.new.daemon.max_running)
    for warning in plan.new.warnings:
        logfmt.warning(warning)
    # In slices with the loop served between (each job's next run is computed here): a Status meanwhile
    # sees some jobs already swapped, never a job half-changed.
    pacer = Pacer(d.clock)
    for name in plan.removed:
        pacer.pace()
        d.retire_runner(name)
        d.alerts.forget(name)  # its reminder clock and slow deadlines; queued notifications still go out
    for name, runner in plan.added.items():
        pacer.pace()
        d.install_runner(runner, startup=False)
    for runner, job in plan.changed:
        pacer.pace()
        runner.update(job)
    # Keep the config's order for `ku status`.
    d.runners = {job.name: d.runners[job.name] for job in plan.new.jobs}
    d.scheduler.purge()  # the timers of removed and changed jobs, so their memory can go
    added, changed = list(plan.added), [runner.cfg.name for runner, _ in plan.changed]
    parts = [f"{label} {', '.join(items)}" for label, items in
             (("added", added), ("removed", plan.removed), ("changed", changed)) if items]
    message = f"reloaded {d.config_path}: " + ("; ".join(parts) if parts else "no changes")
    if plan.new.daemon != old.daemon:
        message += "; daemon settings changed (socket_group applies after a restart)"
    logfmt.info("config reloaded", added=",".join(added), removed=",".join(plan.removed), changed=",".join(changed))
    return message
