"""The TOML config: ``model`` (frozen dataclasses), ``values`` (one converter per key), ``checker``
(whole-file validation, every problem at once), ``load`` (TOML parsing, file I/O, syntax messages).

Callers import from here: ``from koku.core.config import Config, load_config``.
"""

from koku.core.config.load import load_config, parse_config
from koku.core.config.model import (NAME_MAX, CatchUp, Config, DaemonConfig, JitterMode, FrozenEnv, JobConfig, OnError, dir_problem,
                                    resolve_dir)
from koku.core.config.values import DAEMON_KEYS, JOB_KEYS, parse_size

__all__ = ["NAME_MAX", "CatchUp", "JitterMode", "Config", "DaemonConfig", "FrozenEnv", "JobConfig", "OnError", "DAEMON_KEYS", "JOB_KEYS",
           "dir_problem", "load_config", "parse_config", "parse_size", "resolve_dir"]
