"""``ku daemon start|stop|status|run``: the daemon's lifecycle seen from the client.

``run`` is the one place the client side reaches gevent: it imports the daemon lazily, inside the
function, so that every other command starts without it (tests/test_layers.py allows exactly this edge).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from koku.client.common import EXIT_OK, client, load_config_from, print_json
from koku.core import safefs
from koku.core.paths import StatePaths, config_path, state_paths
from koku.core.procinfo import pid_alive
from koku.errors import DaemonError, KokuError, NotRunningError, UsageError


def _daemon_run(args: dict[str, Any]) -> int:
    fmt = args["--log-format"]
    if fmt not in ("logfmt", "json"):
        raise UsageError(f"--log-format must be logfmt or json, got {fmt!r}")
    from koku.zipapp import bootstrap

    bootstrap.prepare_daemon()
    _forget_working_directory()
    from koku.core import logfmt
    from koku.daemon.lifecycle import Daemon  # the one place the CLI reaches gevent

    logfmt.setup(fmt)
    # Absolute before leaving the cwd: reload must read the same file, the state dir must not move.
    config = config_path(args["--config"]).absolute()
    paths = StatePaths(state_paths().root.absolute())
    os.chdir("/")
    return Daemon(config, paths).run()


def _forget_working_directory() -> None:
    """Drop the caller's working directory from ``sys.path`` (``python -m koku daemon run`` puts it
    there): a ``ctypes.py`` in it would otherwise run when the daemon first imports ctypes."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cwd = os.getcwd()
    sys.path[:] = [p for p in sys.path if p == here or (p and os.path.abspath(p) != cwd)]


def _daemon_info(timeout: float = 2.0) -> dict[str, Any] | None:
    try:
        with client(timeout) as c:
            return c.daemon_status()
    except (NotRunningError, DaemonError):
        return None


def same_config(info: dict[str, Any], path: Path) -> bool:
    """Whether the daemon that answered ``DaemonStatus`` with ``info`` runs the config file ``path``."""
    theirs = info.get("config")
    return not theirs or os.path.realpath(theirs) == os.path.realpath(path)


def _already_running(info: dict[str, Any], path: Path) -> int:
    if not same_config(info, path):
        # One daemon per state dir: a second config there would share its socket, state and logs.
        raise KokuError(
            f"a koku daemon (pid {info['pid']}) is already running with config {info['config']}, not {path}; "
            f"stop it first (ku daemon stop), or give the second daemon its own state dir (KOKU_STATE_DIR)")
    print(f"koku daemon already running (pid {info['pid']})")
    return EXIT_OK


def _daemon_start(args: dict[str, Any]) -> int:
    import subprocess
    from koku.core.clock import RealClock

    clock = RealClock()  # the one way koku reads the time (tests/test_clock_use.py)

    from koku.zipapp import bootstrap

    path = config_path(args["--config"])
    cfg = load_config_from(args)  # refuse a broken config here, where the user sees the errors
    info = _daemon_info()
    if info:
        return _already_running(info, path)
    paths = StatePaths(state_paths().root.absolute())
    # The daemon checks the state dir too; checking here first means the refusal reaches the user's
    # terminal, and daemon.log is never opened through a planted symlink (we may be root).
    root_fd = safefs.open_dir(paths.root)
    try:
        os.fchmod(root_fd, 0o700)
        logs_fd = safefs.open_subdir(root_fd, paths.log_dir.name, str(paths.root))
        try:
            log_fd = safefs.open_file(logs_fd, paths.daemon_log.name, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                                      0o600, where=str(paths.log_dir))
        except OSError as exc:
            raise KokuError(f"cannot open {paths.daemon_log}: {exc.strerror}; fix: remove it") from None
        finally:
            os.close(logs_fd)
    finally:
        os.close(root_fd)
    argv = bootstrap.program_argv() + ["daemon", "run", "--config", str(path.resolve()),
                                       "--log-format", args["--log-format"] or "logfmt"]
    with os.fdopen(log_fd, "ab") as log, open(os.devnull, "rb") as devnull:
        child = subprocess.Popen(argv, stdin=devnull, stdout=log, stderr=log, start_new_session=True,
                                 close_fds=True)
    deadline = clock.monotonic() + 30
    while clock.monotonic() < deadline:
        code = child.poll()
        if code is not None:
            info = _daemon_info()
            if info:  # lost a race with another start: that one is running
                return _already_running(info, path)
            from koku.core.joblog import read_tail

            tail = "\n".join("  " + line for line in read_tail(paths.daemon_log, 10))
            raise KokuError(f"the daemon exited with status {code} during start-up; {paths.daemon_log} ends with:\n{tail}")
        info = _daemon_info()
        if info and info.get("pid") == child.pid:
            if args["--json"]:
                print_json(info)
            else:
                print(f"koku daemon started (pid {child.pid}, {len(cfg.jobs)} jobs); log: {paths.daemon_log}")
            return EXIT_OK
        clock.sleep(0.05)
    raise KokuError(f"the daemon (pid {child.pid}) did not answer on {paths.socket} within 30s; see {paths.daemon_log}")


# A zombie (our own child that nobody reaped) counts as gone.
_pid_alive = pid_alive


def _daemon_stop(args: dict[str, Any]) -> int:
    from koku.core.clock import RealClock

    clock = RealClock()  # the one way koku reads the time (tests/test_clock_use.py)

    with client() as c:
        info = c.daemon_status()
        c.shutdown()
    pid = int(info["pid"])
    deadline = clock.monotonic() + 300
    while _pid_alive(pid) and clock.monotonic() < deadline:
        clock.sleep(0.05)
    if _pid_alive(pid):
        raise KokuError(f"the daemon (pid {pid}) is still running after 300s")
    if args["--json"]:
        print_json({"stopped": pid})
    else:
        print(f"koku daemon stopped (pid {pid})")
    return EXIT_OK


def _daemon_status(args: dict[str, Any]) -> int:
    from koku.client import table  # prettytable: only for commands that print a table, never in the daemon

    with client() as c:
        info = c.daemon_status()
    if args["--json"]:
        print_json(info)
    else:
        print(table.daemon_status(info))
    return EXIT_OK


def cmd_daemon(args: dict[str, Any]) -> int:
    if args["run"]:
        return _daemon_run(args)
    if args["start"]:
        return _daemon_start(args)
    if args["stop"]:
        return _daemon_stop(args)
    return _daemon_status(args)

