"""koku's command line: the usage text below is the one source of truth for commands.

Client commands talk to the daemon over the socket with the stdlib; they never import gevent (nor
croniter, except ``check``, ``init`` and ``daemon start``, which read the config). The daemon is reached
through one lazy import in ``_daemon_run``. Exit codes: 0 ok; 1 the daemon answered with an error;
2 usage or config error; 3 the daemon is not running.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable

from docopt import DocoptExit, docopt

from koku import __version__
from koku.client.client import Client
from koku.core.durations import parse_duration
from koku.errors import ConfigError, DaemonError, KokuError, NotRunningError, UsageError
from koku.core.paths import StatePaths, config_path, state_paths

USAGE = """\
koku (刻): a cron daemon and manager.

Usage:
  ku init [--force] [options]
  ku check [--next=N] [--from=TIME] [options]
  ku import [<file>] [--write] [--system | --no-system] [options]
  ku daemon start [options]
  ku daemon stop [options]
  ku daemon status [options]
  ku daemon run [--log-format=FMT] [options]
  ku status [<name>] [options]
  ku run <name> [--wait] [options]
  ku pause <name> [--hours=H | --for=DURATION] [options]
  ku resume <name> [options]
  ku reload [options]
  ku log <name> [-n N] [-f] [options]
  ku history <name> [-n N] [options]
  ku (-h | --help)
  ku --version

Commands:
  init            Write an example config (every key explained) to the config path.
  check           Validate the config and preview each job's next runs.
  import          Convert a crontab (a file, or - for stdin) to koku TOML; --write appends it to the config.
  daemon start    Start the daemon in the background; returns once it answers.
  daemon stop     Stop the daemon gracefully (running jobs get shutdown_grace).
  daemon status   Show the daemon's pid, uptime, version, config and job count.
  daemon run      Run the daemon in the foreground, logging to stderr.
  status          Table of all jobs (or details of one).
  run             Run a job now; --wait waits, prints its output and exits with its exit code.
  pause           Pause a job's schedule (until resumed, or for a while).
  resume          Resume a paused or stopped job.
  reload          Re-read the config; a broken config is rejected and the old one keeps running.
  log             Show a job's log; -f follows it.
  history         Show a job's past runs.

Options:
  -c PATH --config=PATH  Config file (default: $KOKU_CONFIG, else $XDG_CONFIG_HOME/koku/config.toml).
  --json                 Machine-readable output.
  --force                Overwrite an existing config file.
  --next=N               How many runs to preview [default: 3].
  --from=TIME            Preview from this ISO 8601 instant instead of now.
  --write                Append the imported jobs to the config (validated first; unchanged if invalid).
  --system               The crontab has a user column (/etc/crontab, /etc/cron.d); default: guessed.
  --no-system            The crontab has no user column (crontab -l output).
  --wait                 Wait for the run to end.
  --hours=H              Pause for H hours.
  --for=DURATION         Pause for a duration such as 30m, 2h, 1d.
  -n N                   How many lines or runs to show [default: 20].
  -f                     Follow the log as it grows (Ctrl-C to stop).
  --log-format=FMT       Daemon log format: logfmt or json [default: logfmt].
  -h --help              Show this help.
  --version              Show the version.
"""

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2  # 3, not running, is NotRunningError's


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _int_option(args: dict[str, Any], key: str, minimum: int = 0) -> int:
    raw = args[key]
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise UsageError(f"{key} expects a whole number, got {raw!r}") from None
    if value < minimum:
        raise UsageError(f"{key} must be at least {minimum}, got {value}")
    return value


def _client(timeout: float | None = 10.0) -> Client:
    return Client(state_paths().socket, timeout=timeout)


def _load_config(args: dict[str, Any]):
    from koku.core.config import load_config  # croniter lives behind config; only commands that need it pay

    return load_config(config_path(args["--config"]))


# ----- commands that need no daemon ---------------------------------------------------------------
def cmd_init(args: dict[str, Any]) -> int:
    from koku.client.example import write_example

    path = write_example(config_path(args["--config"]), force=args["--force"])
    if args["--json"]:
        _print_json({"path": str(path)})
    else:
        print(f"wrote {path}\ncheck it with: ku check\nstart the daemon with: ku daemon start")
    return EXIT_OK


def cmd_check(args: dict[str, Any]) -> int:
    from dataclasses import replace
    from datetime import datetime, timezone

    from koku.client import table  # prettytable: only for commands that print a table, never in the daemon
    from koku.core.preview import preview_jobs

    n = _int_option(args, "--next", 1)
    start = datetime.now(timezone.utc)
    if args["--from"]:
        try:
            start = datetime.fromisoformat(args["--from"].replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(f"--from expects an ISO 8601 time such as 2026-03-08T01:00:00-05:00, got {args['--from']!r}") from None
        if start.tzinfo is None:
            start = start.astimezone()  # a naive time means the local wall clock
    cfg = _load_config(args)
    previews = [replace(p, warnings=(*cfg.warnings_for(p.name), *p.warnings))
                for p in preview_jobs(cfg.jobs, start, n)]
    per_job = {f"{cfg.path}: {job}: {tail}" for job, tail in cfg.job_warnings}
    general = [w for w in cfg.warnings if w not in per_job]
    if args["--json"]:
        _print_json([
            {"name": p.name, "cron": p.cron, "tz": p.tz, "next": [dt.isoformat() for dt in p.next],
             "warnings": list(p.warnings)}
            for p in previews
        ])
        for w in general:
            print(f"koku: warning: {w}", file=sys.stderr)
        return EXIT_OK
    print(f"{cfg.path}: {len(cfg.jobs)} job{'s' if len(cfg.jobs) != 1 else ''}, valid")
    if previews:
        print(table.check_table(previews))
    for p in previews:
        for w in p.warnings:
            print(f"warning: job \"{p.name}\": {w}")
    for w in general:
        print(f"warning: {w}")
    return EXIT_OK


def cmd_import(args: dict[str, Any]) -> int:
    from koku.client.importer import run_import

    system = True if args["--system"] else False if args["--no-system"] else None
    target = config_path(args["--config"]) if args["--write"] else None
    result, toml, code = run_import(args["<file>"] or "-", system=system, write=target)
    for note in result.notes:
        print(f"koku: warning: {note}", file=sys.stderr)
    for skip in result.skipped:
        print(f"koku: error: {result.source}: line {skip.line}: not converted: {skip.reason}: {skip.text.strip()}",
              file=sys.stderr)
    if args["--json"]:
        _print_json({"jobs": [job.table for job in result.jobs],
                     "skipped": [{"line": s.line, "text": s.text, "reason": s.reason} for s in result.skipped],
                     "notes": result.notes, "written": str(target) if target else None})
    elif target is None:
        sys.stdout.write(toml)
    else:
        print(f"{target}: added {len(result.jobs)} job{'s' if len(result.jobs) != 1 else ''} from {result.source}, "
              "valid")
    if result.skipped:
        print(f"koku: {len(result.skipped)} line{'s' if len(result.skipped) != 1 else ''} of {result.source} "
              "could not be converted (listed above)", file=sys.stderr)
    return code


# ----- daemon lifecycle ---------------------------------------------------------------------------
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
        with _client(timeout) as c:
            return c.expect("DaemonStatus", "DaemonStatus")
    except (NotRunningError, DaemonError):
        return None


def _daemon_start(args: dict[str, Any]) -> int:
    import subprocess
    import time

    from koku.zipapp import bootstrap

    path = config_path(args["--config"])
    cfg = _load_config(args)  # refuse a broken config here, where the user sees the errors
    info = _daemon_info()
    if info:
        print(f"koku daemon already running (pid {info['pid']})")
        return EXIT_OK
    paths = state_paths()
    paths.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(paths.root, 0o700)
    argv = bootstrap.program_argv() + ["daemon", "run", "--config", str(path.resolve()),
                                       "--log-format", args["--log-format"] or "logfmt"]
    with open(paths.daemon_log, "ab") as log, open(os.devnull, "rb") as devnull:
        child = subprocess.Popen(argv, stdin=devnull, stdout=log, stderr=log, start_new_session=True,
                                 close_fds=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        code = child.poll()
        if code is not None:
            info = _daemon_info()
            if info:  # lost a race with another start: that one is running
                print(f"koku daemon already running (pid {info['pid']})")
                return EXIT_OK
            from koku.core.joblog import read_tail

            tail = "\n".join("  " + line for line in read_tail(paths.daemon_log, 10))
            raise KokuError(f"the daemon exited with status {code} during start-up; {paths.daemon_log} ends with:\n{tail}")
        info = _daemon_info()
        if info and info.get("pid") == child.pid:
            if args["--json"]:
                _print_json(info)
            else:
                print(f"koku daemon started (pid {child.pid}, {len(cfg.jobs)} jobs); log: {paths.daemon_log}")
            return EXIT_OK
        time.sleep(0.05)
    raise KokuError(f"the daemon (pid {child.pid}) did not answer on {paths.socket} within 30s; see {paths.daemon_log}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own child that nobody reaped) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _daemon_stop(args: dict[str, Any]) -> int:
    import time

    with _client() as c:
        info = c.expect("DaemonStatus", "DaemonStatus")
        c.expect("Shutdown", "Ok")
    pid = int(info["pid"])
    deadline = time.monotonic() + 300
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _pid_alive(pid):
        raise KokuError(f"the daemon (pid {pid}) is still running after 300s")
    if args["--json"]:
        _print_json({"stopped": pid})
    else:
        print(f"koku daemon stopped (pid {pid})")
    return EXIT_OK


def _daemon_status(args: dict[str, Any]) -> int:
    from koku.client import table  # prettytable: only for commands that print a table, never in the daemon

    with _client() as c:
        info = c.expect("DaemonStatus", "DaemonStatus")
    if args["--json"]:
        _print_json(info)
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


# ----- commands that talk to the daemon -----------------------------------------------------------
def cmd_status(args: dict[str, Any]) -> int:
    from koku.client import table  # prettytable: only for commands that print a table, never in the daemon

    with _client() as c:
        jobs = c.expect("Status", "Status")
    name = args["<name>"]
    if name:
        match = [j for j in jobs if j["name"] == name]
        if not match:
            raise DaemonError(f"unknown job \"{name}\"")
        if args["--json"]:
            _print_json(match[0])
        else:
            print(table.job_details(match[0]))
        return EXIT_OK
    if args["--json"]:
        _print_json(jobs)
    elif jobs:
        print(table.status_table(jobs, color=table.use_color(sys.stdout)))
    else:
        print("no jobs configured")
    return EXIT_OK


def _exit_code_of(record: dict[str, Any]) -> int:
    if record.get("exit_code") is not None:
        return int(record["exit_code"])
    if record.get("signal"):
        return 128 + int(record["signal"])
    return EXIT_ERROR


def cmd_run(args: dict[str, Any]) -> int:
    name = args["<name>"]
    if not args["--wait"]:
        with _client() as c:
            message = c.expect({"Run": name}, "Ok")
        _print_json({"message": message}) if args["--json"] else print(message)
        return EXIT_OK
    with _client() as c:
        started = c.expect({"Trigger": name}, "Started")
        record = c.expect({"Wait": {"name": name, "run": started["run"]}}, "Finished", timeout=None)
    if args["--json"]:
        _print_json(record)
    else:
        for line in record.get("tail") or []:
            print(line)
        print(f"{name} run {record['run']}: {record.get('description')}", file=sys.stderr)
    return _exit_code_of(record)


def cmd_pause(args: dict[str, Any]) -> int:
    name = args["<name>"]
    seconds = None
    if args["--hours"] is not None:
        try:
            seconds = float(args["--hours"]) * 3600
        except ValueError:
            raise UsageError(f"--hours expects a number, got {args['--hours']!r}") from None
    elif args["--for"] is not None:
        try:
            seconds = parse_duration(args["--for"])
        except ValueError as exc:
            raise UsageError(f"--for: {exc}") from None
    if seconds is not None and seconds <= 0:
        raise UsageError("a timed pause must be longer than zero")
    request = {"Pause": name} if seconds is None else {"PauseFor": {"name": name, "seconds": seconds}}
    return _simple(args, request)


def _simple(args: dict[str, Any], request: Any) -> int:
    with _client() as c:
        message = c.expect(request, "Ok")
    _print_json({"message": message}) if args["--json"] else print(message)
    return EXIT_OK


def cmd_resume(args: dict[str, Any]) -> int:
    return _simple(args, {"Resume": args["<name>"]})


def cmd_reload(args: dict[str, Any]) -> int:
    with _client(timeout=60) as c:
        tag, body = c.call("Reload")
    if tag == "Ok":
        _print_json({"message": body}) if args["--json"] else print(body)
        return EXIT_OK
    if tag == "Error":
        raise ConfigError(str(body).splitlines())
    raise DaemonError(f"unexpected answer {tag}")


def cmd_log(args: dict[str, Any]) -> int:
    import time

    name = args["<name>"]
    n = _int_option(args, "-n")
    with _client() as c:
        body = c.expect({"Log": {"name": name, "lines": n}}, "Log")
        for line in body["lines"]:
            print(line)
        if not args["-f"]:
            return EXIT_OK
        offset = body["offset"]
        try:
            while True:
                sys.stdout.flush()
                time.sleep(0.5)
                body = c.expect({"Log": {"name": name, "lines": 0, "offset": offset}}, "Log")
                for line in body["lines"]:
                    print(line)
                offset = body["offset"]
        except KeyboardInterrupt:
            return EXIT_OK


def cmd_history(args: dict[str, Any]) -> int:
    from koku.client import table  # prettytable: only for commands that print a table, never in the daemon

    n = _int_option(args, "-n", 1)
    with _client() as c:
        records = c.expect({"History": {"name": args["<name>"], "limit": n}}, "History")
    if args["--json"]:
        _print_json(records)
    elif records:
        print(table.history_table(records))
    else:
        print(f"{args['<name>']} has not run yet")
    return EXIT_OK


COMMANDS: dict[str, Callable[[dict[str, Any]], int]] = {
    "init": cmd_init,
    "check": cmd_check,
    "import": cmd_import,
    "daemon": cmd_daemon,
    "status": cmd_status,
    "run": cmd_run,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "reload": cmd_reload,
    "log": cmd_log,
    "history": cmd_history,
}


def version_text() -> str:
    from koku.zipapp import bootstrap

    return f"koku {__version__} ({bootstrap.describe_native()})"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--version" in argv:
        print(version_text())
        return EXIT_OK
    try:
        args = docopt(USAGE, argv=argv, default_help=True, version=None)
    except DocoptExit as exc:
        print(str(exc).strip() or USAGE, file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_OK
    command = next(name for name in COMMANDS if args.get(name))
    try:
        return COMMANDS[command](args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"koku: error: {problem}", file=sys.stderr)
        return exc.exit_code
    except KokuError as exc:
        print(f"koku: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `ku log | head`: the reader went away; not an error worth a traceback.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
