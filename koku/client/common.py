"""What every client command shares: exit codes, JSON output, option parsing, the socket client."""

from __future__ import annotations

import json
from typing import Any

from koku.client.client import Client
from koku.core.paths import config_path, state_paths
from koku.errors import UsageError

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2  # 3, not running, is NotRunningError's


def print_json(value: Any) -> None:
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
    return Client(state_paths().socket, timeout=timeout)


def load_config_from(args: dict[str, Any]):
    from koku.core.config import load_config  # croniter lives behind config; only commands that need it pay

    return load_config(config_path(args["--config"]))

