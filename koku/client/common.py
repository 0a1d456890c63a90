"""What every client command shares: exit codes, JSON output, option parsing, the socket client."""

from __future__ import annotations

import json
import sys
from typing import Any

from koku.client.api import Client
from koku.core.paths import config_path, config_source, state_paths
from koku.errors import ConfigError, UsageError

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2  # 3, not running, is NotRunningError's


def print_json(value: Any) -> None:
    """A list prints one element per line (``ku status --json`` at 10,000 jobs: each line is one job for
    grep, and C-speed: ``indent`` makes json use its pure-Python encoder, 4x slower); the rest indented."""
    if isinstance(value, list) and value:
        encode = json.JSONEncoder(ensure_ascii=False).encode
        sys.stdout.write("[\n" + ",\n".join("  " + encode(item) for item in value) + "\n]\n")
    else:
        print(json.dumps(value, indent=2, ensure_ascii=False))


def int_option(args: dict[str, Any], key: str, minimum: int = 0) -> int:
    raw = args[key]
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise UsageError(f"{key} expects a whole number, got {raw!r}") from None
    if value < minimum:
        raise UsageError(f"{key} must be at least {minimum}, got {value}")
    return value


def client(timeout: float | None = 10.0) -> Client:
    """The public API's client (koku.connect's): ``ku`` talks to the daemon only through it."""
    return Client(state_paths().socket, timeout=timeout)


def missing_config_hint(args: dict[str, Any]) -> str | None:
    """Why the config file is not there and what to do, naming where its path came from."""
    import os

    path = config_path(args["--config"])
    if os.path.lexists(path):
        return None
    source = config_source(args["--config"])
    if source == "--config":
        return (f'config file {path} (given with --config) does not exist; check the path, or create it with '
                f'"ku --config {path} init"')
    if source == "$KOKU_CONFIG":
        return f'config file {path} (from $KOKU_CONFIG) does not exist; check KOKU_CONFIG, or create it with "ku init"'
    return f'config file {path} does not exist; create it with "ku init", or name another with --config'


def load_config_from(args: dict[str, Any]):
    from koku.core.config import load_config  # croniter lives behind config; only commands that need it pay

    hint = missing_config_hint(args)
    if hint:
        raise ConfigError([hint])
    return load_config(config_path(args["--config"]))

