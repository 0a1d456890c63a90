"""The one exception family. Each error carries the exit code the CLI turns it into.

Only ``cli.main()`` prints these (as ``koku: error: ...``); everything else raises them.
"""

from __future__ import annotations

from pathlib import Path


class KokuError(Exception):
    """Base of every expected failure. ``exit_code`` is what ``ku`` exits with."""

    exit_code = 1


class UsageError(KokuError):
    """Bad command line or bad argument value."""

    exit_code = 2


class ConfigError(KokuError):
    """The config is invalid. ``problems`` lists every problem found, one message each."""

    exit_code = 2

    def __init__(self, problems: list[str] | str):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class DaemonError(KokuError):
    """The daemon answered a request with an error."""

    exit_code = 1


class NotRunningError(KokuError):
    """No daemon answers on the socket."""

    exit_code = 3


class ProtocolError(KokuError):
    """A message on the control socket is malformed."""

    exit_code = 1


class BootstrapError(KokuError):
    """Native code for the daemon cannot be found, extracted or loaded."""

    exit_code = 1


class ScheduleError(KokuError, ValueError):
    """A cron expression or time zone is invalid; the message says which and why."""

    exit_code = 2


class AlreadyRunning(KokuError):
    """Another daemon holds this state dir."""

    exit_code = 1

    def __init__(self, pid: int | None, path: Path):
        self.pid = pid
        super().__init__(f"a koku daemon is already running (pid {pid}) for {path}")


class UnknownJob(KokuError):
    """A request named a job the config does not have."""

    exit_code = 1


class RunRefused(KokuError):
    """A manual run that policy forbids; the message is for the user."""

    exit_code = 1


class IllegalTransition(Exception):
    """A bug, not an expected failure: code asked for a state move the table does not allow."""


class BadValue(Exception):
    """Inside config validation only: problems with one key, as message tails (``key "x" must be ...``).

    The checker turns these into ConfigError messages with file and job; one never escapes it.
    """

    def __init__(self, *tails: str):
        super().__init__(*tails)
        self.tails = tails


class DeliveryError(KokuError):
    """One attempt to deliver a notification failed. ``reason`` is for logs, history and ``ku notify
    test``; ``retry`` says whether another attempt may help (a 503 may, a 404 or a bad password not)."""

    exit_code = 1

    def __init__(self, reason: str, retry: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


class CgroupUnavailable(KokuError):
    """The daemon cannot have a cgroup per run here (no cgroup2, no write access); the message says
    why. Never reaches the user as an error: the daemon logs it and falls back to the subreaper."""

    exit_code = 1


class UnsafePathError(KokuError):
    """A directory koku would trust (state dir, cache dir) is someone else's or writable by others."""

    exit_code = 1


class BuildError(KokuError):
    """build_zipapp.py cannot build koku.pyz (a missing wheel, a pin that does not fit)."""

    exit_code = 1
