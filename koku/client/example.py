"""The commented example config that ``ku init`` writes.

Every job key and every ``[defaults]`` / ``[daemon]`` key appears here, optional ones as commented-out
lines holding their default or a typical value; uncommenting any of them keeps the file valid (a test
uncomments them all), except ``user`` and ``group``, written with two spaces after the "#" so that test
leaves them alone: they are valid only for a root daemon and an account that exists. The jobs work as written in a fresh home (they need only sh, tar and find): a new
user's first ``ku run`` must not fail on a script that does not exist.
"""

from __future__ import annotations

from pathlib import Path

from koku.errors import KokuError, UsageError

EXAMPLE_CONFIG = """\
# koku config: one [[job]] table per job. Check it with "ku check", apply it with "ku reload".
# Durations are "90s", "30m", "1h30m", "2d" or a bare number of seconds.

[[job]]
name = "backup"            # letters, digits, "_", "." and "-"; also names the job's log file
cron = "0 2 * * *"         # minute hour day-of-month month day-of-week: every day at 02:00
# Run by the [daemon] shell ("/bin/sh -c" by default): archive the config files next to this one.
command = "mkdir -p ~/backups && tar -czf ~/backups/koku-config-$(date +%F).tar.gz *.toml"
dir = "."                  # working directory; "." is this file's directory, "~" is expanded
on_error = "backoff"       # continue | backoff | stop (default: continue)
                           #   continue: ignore failures and keep the schedule
                           #   backoff:  after a failure wait exponentially longer between runs,
                           #             back to the normal schedule after a success
                           #   stop:     stop the job after max_failures failures in a row ("ku resume")
overlap = false            # allow a run to start while the previous one is still running
timeout = "30m"            # kill the job (its whole process group) after this long
# max_failures = 3         # consecutive failures before on_error = "stop" stops the job
# tz = "Europe/Berlin"     # IANA time zone for the cron expression (default: this machine's zone)
# jitter = "0s"            # wait a random delay in [0, jitter) before each scheduled run
# catch_up = "skip"        # runs missed while koku was down: "skip", "once" (= true) or "all"
# catch_up_limit = 100     # with catch_up = "all": at most this many missed runs, oldest first
# start_deadline = "10m"   # a run that cannot start this long after its slot is skipped (and recorded)
# jitter_mode = "random"   # "random": a new delay per run; "hash": one fixed delay per job and host
# retries = 0              # try a failed run again this many times, before it counts for on_error
# retry_delay = "30s"      # before the first retry; doubled for each next one
# max_running = 2          # with overlap = true: at most this many runs of this job at once
# description = "Nightly backup of this config"
# env = { BACKUP_TARGET = "/mnt/backup" }   # extra environment variables (strings)
# notify = ["ops", "mail"] # notifiers (the [notify.NAME] tables below) told about this job
# notify_on = ["failure", "recovery", "stopped"]  # the default; also "start", "success", "slow", "skipped"
# notify_after = 1         # failures in a row before the first failure alert; then silence until recovery
# remind_every = "6h"      # while it keeps failing, one reminder per period (default: none)
# slow_after = "30m"       # one "slow" event per run still going after this long (setting it asks for it)
# ping = "https://hc-ping.com/your-uuid"  # Healthchecks pings: /start, success, /<exit code>
#  user = "backup"         # run as this user (daemon running as root only): its uid, groups, HOME, SHELL
#  group = "backup"        # and this group instead of the user's primary one
# nice = 10                # CPU priority, -20 (highest) to 19, relative to the daemon; below 0 needs root
# umask = "027"            # file creation mask, octal digits

[[job]]
name = "cleanup"
cron = "30 3 * * *"        # every day at 03:30
command = "mkdir -p ~/backups && find ~/backups -name 'koku-config-*.tar.gz' -mtime +30 -delete"
description = "delete backups older than 30 days"

# [defaults] sets any job key except "name" for every job; a job's own value wins and "env" tables
# are merged (the job's value wins per variable).
[defaults]
# on_error = "continue"
# overlap = false
# timeout = "1h"
# tz = "UTC"
# jitter = "0s"
# max_failures = 3
# catch_up = false
# dir = "~"
# env = { PATH = "/usr/local/bin:/usr/bin:/bin" }

# Settings of the daemon itself (the values shown are the defaults).
[daemon]
# shell = "/bin/sh"         # runs each command as: <shell> -c "<command>"
# history = 100             # runs remembered per job
# log_max_bytes = "10MiB"   # rotate a job's log file at this size (bytes, or B/KB/MB/GB/KiB/MiB/GiB)
# log_keep = 3              # rotated log files kept per job
# kill_grace = "10s"        # after SIGTERM, wait this long before SIGKILL
# shutdown_grace = "30s"    # on daemon stop, let running jobs finish for this long
# forget_removed_after = "30d"  # a job removed from the config: its state, history and logs go after this
# max_running = 8           # runs at once across all jobs (default: no limit); more wait in order
# socket_group = "staff"    # group allowed to use the control socket (default: only this user)
# include = ["jobs.d/*.toml"]  # drop-in files of [[job]] (and [notify.NAME]) tables; globs, relative to this file
# metrics_listen = "127.0.0.1:9101"  # serve Prometheus metrics on http://HOST:PORT/metrics
# metrics_file = "/var/lib/prometheus/node-exporter/koku.prom"  # or write them here after every run

# Notifiers: named, used by jobs through notify = [...]. Nothing is sent until a job names one.
[notify.ops]
webhook = "https://hooks.example.com/services/T0/B0"  # POST, the event as JSON
# format = "json"           # json | slack (a "text" field, for Slack/Mattermost incoming webhooks)
# headers = { Authorization = "Bearer abc" }
# timeout = "10s"           # per attempt; failed deliveries are retried a few times with backoff

[notify.mail]
mail = ["ops@example.com"]  # through "sendmail -t -oi", or through SMTP when [smtp] is set

[notify.page]
command = "/usr/local/bin/page-me"  # the event as JSON on stdin; KOKU_EVENT, KOKU_JOB, KOKU_RUN_ID in env

# SMTP instead of sendmail (write these under a [smtp] line):
#  host = "127.0.0.1"  port = 25  starttls = false  from = "koku@myhost"
#  username = "koku"  password_file = "~/.config/koku/smtp-password"
"""


def write_example(path: Path, force: bool = False) -> Path:
    """Write ``EXAMPLE_CONFIG`` to ``path``, creating parent directories; returns ``path``.

    Raises UsageError if the file exists and ``force`` is false, KokuError if it cannot be written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # "x" makes the existence check and the creation one step, so a racing writer is not clobbered.
        with open(path, "w" if force else "x", encoding="utf-8") as handle:
            handle.write(EXAMPLE_CONFIG)
    except FileExistsError:
        raise UsageError(f"config file {path} already exists; use --force to overwrite") from None
    except OSError as exc:
        raise KokuError(f"cannot write config file {path}: {exc.strerror or exc}") from None
    return path
