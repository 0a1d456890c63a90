"""Where koku keeps things: config path, state dir, socket, pid file, logs.

Config: ``--config``, else ``$KOKU_CONFIG``, else ``$XDG_CONFIG_HOME/koku/config.toml``
(default ``~/.config/koku/config.toml``).
State: ``$KOKU_STATE_DIR``, else ``$XDG_STATE_HOME/koku`` (default ``~/.local/state/koku``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / fallback


def config_source(override: str | None = None) -> str:
    """Where ``config_path(override)`` came from, for messages: "--config", "$KOKU_CONFIG" or "default"."""
    if override:
        return "--config"
    return "$KOKU_CONFIG" if os.environ.get("KOKU_CONFIG") else "default"


def config_path(override: str | None = None) -> Path:
    if override:
        return Path(override).expanduser()
    env = os.environ.get("KOKU_CONFIG")
    if env:
        return Path(env).expanduser()
    return _xdg("XDG_CONFIG_HOME", ".config") / "koku" / "config.toml"


class StatePaths(NamedTuple):  # not a dataclass: the client's start-up does not pay for dataclasses
    root: Path

    @property
    def socket(self) -> Path:
        return self.root / "daemon.sock"

    @property
    def pid_file(self) -> Path:
        return self.root / "daemon.pid"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def daemon_log(self) -> Path:
        return self.log_dir / "daemon.log"

    def job_log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"


def state_paths() -> StatePaths:
    env = os.environ.get("KOKU_STATE_DIR")
    if env:
        return StatePaths(Path(env).expanduser())
    return StatePaths(_xdg("XDG_STATE_HOME", ".local/state") / "koku")
