"""koku's command line: the usage text below is the one source of truth for commands.

Client commands talk to the daemon over the socket with the stdlib; they never import gevent (nor
croniter, except ``check``, ``init`` and ``daemon start``, which read the config). The daemon is reached
through one lazy import in ``daemonctl._daemon_run``. Exit codes: 0 ok; 1 the daemon answered with an error;
2 usage or config error; 3 the daemon is not running.
"""

from __future__ import annotations

import importlib
import os
import sys

from docopt import DocoptExit, docopt

from koku import __version__
from koku.client.common import EXIT_OK, EXIT_USAGE
from koku.errors import ConfigError, KokuError

USAGE = """\
koku (刻): a cron daemon and manager.

Usage:
  ku init [--force] [options]
  ku check [--next=N] [--from=TIME] [options]
  ku import [<file>] [--write | --into=FILE] [--system | --no-system] [options]
  ku daemon start [options]
  ku daemon stop [options]
  ku daemon status [options]
  ku daemon run [--log-format=FMT] [options]
  ku status [<name>] [options]
  ku run <name> [--wait] [options]
  ku cancel <name> [options]
  ku pause <name> [--hours=H | --for=DURATION] [options]
  ku resume <name> [options]
  ku reload [options]
  ku log <name> [-n N] [-f] [options]
  ku history <name> [-n N] [options]
  ku notify test <notifier> [options]
  ku metrics [options]
  ku completion (bash | zsh | fish) [options]
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
  run             Run a job now; --wait prints its output as it comes and exits with its exit code.
  cancel          Stop a job's runs in flight (SIGTERM to the group, SIGKILL after kill_grace).
  pause           Pause a job's schedule (until resumed, or for a while).
  resume          Resume a paused or stopped job.
  reload          Re-read the config; a broken config is rejected and the old one keeps running.
  log             Show a job's log; -f follows it.
  history         Show a job's past runs.
  notify test     Send a test event through a notifier now and show the answer.
  metrics         Print the daemon's Prometheus metrics.
  completion      Print a shell completion script (bash, zsh or fish); see the README to install it.

Options:
  -c PATH --config=PATH  Config file (default: $KOKU_CONFIG, else $XDG_CONFIG_HOME/koku/config.toml).
  --json                 Machine-readable output.
  --force                Overwrite an existing config file.
  --next=N               How many runs to preview [default: 3].
  --from=TIME            Preview from this ISO 8601 instant instead of now.
  --write                Append the imported jobs to the config (validated first; unchanged if invalid).
  --into=FILE            Write the imported jobs to a new drop-in file that [daemon] include matches.
  --system               The crontab has a user column (/etc/crontab, /etc/cron.d); default: guessed.
  --no-system            The crontab has no user column (crontab -l output).
  --wait                 Wait for the run to end.
  --hours=H              Pause for H hours.
  --for=DURATION         Pause for a duration such as 30m, 2h, 1d.
  -n N                   How many lines or runs to show [default: 20].
  -f                     Follow the log as it grows (Ctrl-C to stop).
  --log-format=FMT       Daemon log format: logfmt or json [default: logfmt].
  -h --help              Show this help.
  --version              Show the version (with --json, as JSON).
"""


# command -> (module in koku.client, function): imported on dispatch, so `ku status` loads none of the
# other commands' modules (daemonctl's /proc and state-dir helpers, local's config and preview).
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("local", "cmd_init"),
    "check": ("local", "cmd_check"),
    "import": ("local", "cmd_import"),
    "daemon": ("daemonctl", "cmd_daemon"),
    "status": ("remote", "cmd_status"),
    "run": ("remote", "cmd_run"),
    "cancel": ("remote", "cmd_cancel"),
    "pause": ("remote", "cmd_pause"),
    "resume": ("remote", "cmd_resume"),
    "reload": ("remote", "cmd_reload"),
    "log": ("remote", "cmd_log"),
    "history": ("remote", "cmd_history"),
    "notify": ("remote", "cmd_notify_test"),
    "metrics": ("remote", "cmd_metrics"),
    "completion": ("local", "cmd_completion"),
}


def version_text() -> str:
    from koku.zipapp import bootstrap

    return f"koku {__version__} ({bootstrap.describe_native()})"



def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--version" in argv:
        if "--json" in argv:
            from koku.client.common import print_json
            from koku.zipapp import bootstrap

            print_json({"version": __version__, "native": bootstrap.describe_native()})
        else:
            print(version_text())
        return EXIT_OK
    try:
        args = docopt(USAGE, argv=argv, default_help=True, version=None)
    except DocoptExit:
        from koku.client.usage import diagnose  # only a wrong command line pays for this

        print(diagnose(USAGE, argv), file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_OK
    command = next(name for name in COMMANDS if args.get(name))
    try:
        module, function = COMMANDS[command]
        return getattr(importlib.import_module(f"koku.client.{module}"), function)(args)
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

