"""The one exception family. Each error carries the exit code the CLI turns it into.

Only ``cli.main()`` prints these (as ``koku: error: ...``); everything else raises them.
"""

from __future__ import annotations


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
