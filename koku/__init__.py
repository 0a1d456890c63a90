"""koku (刻, "to carve time"): a cron daemon and manager, and a small Python API for tools around it.

The public names are in ``__all__`` and documented in docs/api.md; everything else is private by name or
by module and may change in any release. ``import koku`` loads nothing but this file: the names below
are imported on first use, so the daemon, ``ku`` and a script that only needs ``__version__`` pay nothing.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # talking to a daemon (koku.client.api)
    "connect", "Client",
    # config and schedules without a daemon
    "load_config", "preview",
    # the records a Client returns (typed dicts of the wire JSON)
    "JobStatus", "RunRecord", "DaemonInfo",
    # the exception family: every API call raises only these
    "KokuError", "UsageError", "ConfigError", "ScheduleError", "DaemonError", "NotRunningError", "ProtocolError",
]

_WHERE = {
    "connect": "koku.client.api", "Client": "koku.client.api",
    "load_config": "koku.core.config", "preview": "koku.core.preview",
    "JobStatus": "koku.client.types", "RunRecord": "koku.client.types", "DaemonInfo": "koku.client.types",
    **{name: "koku.errors" for name in ("KokuError", "UsageError", "ConfigError", "ScheduleError", "DaemonError",
                                         "NotRunningError", "ProtocolError")},
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'koku' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
