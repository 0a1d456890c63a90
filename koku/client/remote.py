"""Commands that talk to a running daemon over the socket: status, run, pause, resume, reload, log, history."""

from __future__ import annotations

import json
import sys
from typing import Any

from koku.client.common import EXIT_ERROR, EXIT_OK, client, int_option, print_json
from koku.core.durations import parse_duration
from koku.errors import DaemonError, UsageError


def cmd_status(args: dict[str, Any]) -> int:
    from koku.client import table  # prettytable: only for commands that print a table, never in the daemon

    name = args["<name>"]
    with client() as c:
        jobs = c.status(brief=not name and not args["--json"])  # the table needs a fifth of each job
    if name:
        match = [j for j in jobs if j["name"] == name]
        if not match:
            raise DaemonError(f"unknown job \"{name}\"")
        if args["--json"]:
            print_json(match[0])
        else:
            print(table.job_details(match[0]))
        return EXIT_OK
    if args["--json"]:
        print_json(jobs)
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
        with client() as c:
            message = f"started {name} run {c.run(name)}"
        print_json({"message": message}) if args["--json"] else print(message)
        return EXIT_OK
    if args["--json"]:
        with client() as c:
            record = c.run(name, wait=True)
        print_json(record)
        return _exit_code_of(record)
    return _run_and_follow(name)


def _run_and_follow(name: str) -> int:
    """``ku run --wait``: start a run and print its output (its own, not other runs') as it comes."""
    run: list[int] = []
    ends_line = [True]

    def output(text: str) -> None:
        if text:
            sys.stdout.write(text)
            sys.stdout.flush()
            ends_line[0] = text.endswith("\n")

    def skipped(nbytes: int) -> None:
        sys.stdout.flush()
        print(f"koku: [{nbytes} bytes of output not shown here: this terminal fell behind; "
              f"ku log {name} has all of it]", file=sys.stderr)

    try:
        with client() as c:
            record = c.run(name, wait=True, on_output=output, on_start=run.append, on_skipped=skipped)
    except KeyboardInterrupt:
        if not run:
            raise
        print(f"\nkoku: stopped waiting; {name} run {run[0]} goes on in the daemon.\n"
              f"  follow it: ku log {name} -f\n  stop it:   ku cancel {name}", file=sys.stderr)
        return 130
    if not ends_line[0] and sys.stdout.isatty():
        print()  # `printf x` on a terminal: the closing line must not stick to the output
    print(f"{name} run {record['run']}: {record.get('description')}", file=sys.stderr)
    return _exit_code_of(record)


def cmd_cancel(args: dict[str, Any]) -> int:
    with client() as c:
        return _said(args, c.cancel(args["<name>"]))


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
    with client() as c:
        return _said(args, c.pause(name, for_=seconds))


def _said(args: dict[str, Any], message: str) -> int:
    print_json({"message": message}) if args["--json"] else print(message)
    return EXIT_OK


def cmd_resume(args: dict[str, Any]) -> int:
    with client() as c:
        return _said(args, c.resume(args["<name>"]))


def cmd_reload(args: dict[str, Any]) -> int:
    import os

    with client(timeout=60) as c:
        if args["--config"] or os.environ.get("KOKU_CONFIG"):
            # The daemon re-reads its own file: asked to reload another one, say so rather than pretend.
            from koku.client.daemonctl import same_config
            from koku.core.paths import config_path

            path = config_path(args["--config"])
            info = c.daemon_status()
            if not same_config(info, path):
                raise DaemonError(f"the daemon (pid {info['pid']}) runs config {info['config']}, not {path}; "
                                  f"reload re-reads the daemon's own config (run \"ku reload\" without --config), "
                                  f"or stop it and start it with {path}")
        return _said(args, c.reload())  # a broken config raises ConfigError, one line per problem


def cmd_log(args: dict[str, Any]) -> int:
    from koku.core.clock import RealClock

    clock = RealClock()  # the one way koku reads the time (tests/test_clock_use.py)

    name = args["<name>"]
    n = int_option(args, "-n")
    as_json = args["--json"]

    def emit(lines: list[str], first: dict[str, Any] | None = None) -> None:
        if not as_json:
            for line in lines:
                print(line)
        elif first is not None and not args["-f"]:
            print_json(first)
        elif lines or first is not None:
            # Following: one compact JSON object per batch (JSON lines), so a reader can parse as it comes.
            print(json.dumps(first if first is not None else {"lines": lines}, ensure_ascii=False))

    with client() as c:
        body = c.request({"Log": {"name": name, "lines": n}}, "Log")  # with its path, for --json
        emit(body["lines"], {"name": name, "path": body["path"], "lines": body["lines"]})
        if not args["-f"]:
            return EXIT_OK
        offset = body["offset"]
        try:
            while True:
                sys.stdout.flush()
                clock.sleep(0.5)
                body = c.request({"Log": {"name": name, "lines": 0, "offset": offset}}, "Log")
                emit(body["lines"])
                offset = body["offset"]
        except KeyboardInterrupt:
            return EXIT_OK


def cmd_history(args: dict[str, Any]) -> int:
    from koku.client import table  # prettytable: only for commands that print a table, never in the daemon

    n = int_option(args, "-n", 1)
    with client() as c:
        records = c.history(args["<name>"], limit=n)
    if args["--json"]:
        print_json(records)
    elif records:
        print(table.history_table(records))
    else:
        print(f"{args['<name>']} has not run yet")
    return EXIT_OK



def cmd_notify_test(args: dict[str, Any]) -> int:
    # A slow or dead endpoint takes its timeout (10 s by default), perhaps twice over in a pool thread.
    with client() as c:
        delivered, message = c.notify_test(args["<notifier>"])
    if args["--json"]:
        print_json({"delivered": delivered, "message": message})
    else:
        print(message, file=sys.stdout if delivered else sys.stderr)
    return EXIT_OK if delivered else EXIT_ERROR


def cmd_metrics(args: dict[str, Any]) -> int:
    with client() as c:
        text = c.metrics()
    if args["--json"]:
        print_json({"metrics": text})
    else:
        sys.stdout.write(text)
    return EXIT_OK
