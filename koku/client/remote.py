"""Commands that talk to a running daemon over the socket: status, run, pause, resume, reload, log, history."""

from __future__ import annotations

import json
import sys
from typing import Any

from koku.client.common import EXIT_ERROR, EXIT_OK, client, int_option, print_json
from koku.core.durations import parse_duration
from koku.errors import ConfigError, DaemonError, UsageError


def cmd_status(args: dict[str, Any]) -> int:
    from koku.client import table  # prettytable: only for commands that print a table, never in the daemon

    with client() as c:
        jobs = c.expect("Status", "Status")
    name = args["<name>"]
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
            message = c.expect({"Run": name}, "Ok")
        print_json({"message": message}) if args["--json"] else print(message)
        return EXIT_OK
    if args["--json"]:
        with client() as c:
            started = c.expect({"Trigger": name}, "Started")
            record = c.expect({"Wait": {"name": name, "run": started["run"]}}, "Finished", timeout=None)
        print_json(record)
        return _exit_code_of(record)
    return _run_and_follow(name)


def _run_and_follow(name: str) -> int:
    """``ku run --wait``: start a run and print its output (its own, not other runs') as it comes."""
    run = None
    try:
        with client() as c:
            started = c.expect({"RunFollow": name}, "Started")
            run = started["run"]
            while True:
                tag, body = c.receive()
                if tag == "Output":
                    if body.get("cut"):
                        sys.stdout.flush()
                        print(f"koku: [{body['cut']} bytes of output not shown here: this terminal fell behind; "
                              f"ku log {name} has all of it]", file=sys.stderr)
                    sys.stdout.write(body.get("text") or "")
                    sys.stdout.flush()
                elif tag == "Finished":
                    record = body
                    break
                elif tag == "Error":
                    raise DaemonError(str(body))
                else:
                    raise DaemonError(f"unexpected answer {tag} while following {name} run {run}")
    except KeyboardInterrupt:
        if run is None:
            raise
        print(f"\nkoku: stopped waiting; {name} run {run} goes on in the daemon.\n"
              f"  follow it: ku log {name} -f\n  stop it:   ku cancel {name}", file=sys.stderr)
        return 130
    print(f"{name} run {record['run']}: {record.get('description')}", file=sys.stderr)
    return _exit_code_of(record)


def cmd_cancel(args: dict[str, Any]) -> int:
    return _simple(args, {"Cancel": args["<name>"]})


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
    with client() as c:
        message = c.expect(request, "Ok")
    print_json({"message": message}) if args["--json"] else print(message)
    return EXIT_OK


def cmd_resume(args: dict[str, Any]) -> int:
    return _simple(args, {"Resume": args["<name>"]})


def cmd_reload(args: dict[str, Any]) -> int:
    import os

    with client(timeout=60) as c:
        if args["--config"] or os.environ.get("KOKU_CONFIG"):
            # The daemon re-reads its own file: asked to reload another one, say so rather than pretend.
            from koku.client.daemonctl import same_config
            from koku.core.paths import config_path

            path = config_path(args["--config"])
            info = c.expect("DaemonStatus", "DaemonStatus")
            if not same_config(info, path):
                raise DaemonError(f"the daemon (pid {info['pid']}) runs config {info['config']}, not {path}; "
                                  f"reload re-reads the daemon's own config (run \"ku reload\" without --config), "
                                  f"or stop it and start it with {path}")
        tag, body = c.call("Reload")
    if tag == "Ok":
        print_json({"message": body}) if args["--json"] else print(body)
        return EXIT_OK
    if tag == "Error":
        raise ConfigError(str(body).splitlines())
    raise DaemonError(f"unexpected answer {tag}")


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
        body = c.expect({"Log": {"name": name, "lines": n}}, "Log")
        emit(body["lines"], {"name": name, "path": body["path"], "lines": body["lines"]})
        if not args["-f"]:
            return EXIT_OK
        offset = body["offset"]
        try:
            while True:
                sys.stdout.flush()
                clock.sleep(0.5)
                body = c.expect({"Log": {"name": name, "lines": 0, "offset": offset}}, "Log")
                emit(body["lines"])
                offset = body["offset"]
        except KeyboardInterrupt:
            return EXIT_OK


def cmd_history(args: dict[str, Any]) -> int:
    from koku.client import table  # prettytable: only for commands that print a table, never in the daemon

    n = int_option(args, "-n", 1)
    with client() as c:
        records = c.expect({"History": {"name": args["<name>"], "limit": n}}, "History")
    if args["--json"]:
        print_json(records)
    elif records:
        print(table.history_table(records))
    else:
        print(f"{args['<name>']} has not run yet")
    return EXIT_OK



def cmd_notify_test(args: dict[str, Any]) -> int:
    # A slow or dead endpoint takes its timeout (10 s by default), perhaps twice over in a pool thread.
    with client(timeout=120) as c:
        tag, body = c.call({"NotifyTest": args["<notifier>"]})
    if tag not in ("Ok", "Error"):
        raise DaemonError(f"unexpected answer {tag}")
    if args["--json"]:
        print_json({"delivered": tag == "Ok", "message": body})
    else:
        print(body, file=sys.stdout if tag == "Ok" else sys.stderr)
    return EXIT_OK if tag == "Ok" else EXIT_ERROR


def cmd_metrics(args: dict[str, Any]) -> int:
    with client(timeout=60) as c:
        text = c.expect("Metrics", "Metrics")
    if args["--json"]:
        print_json({"metrics": text})
    else:
        sys.stdout.write(text)
    return EXIT_OK
