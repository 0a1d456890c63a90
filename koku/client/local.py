"""Commands that need no daemon: ``ku init``, ``ku check`` and ``ku import``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from koku.client.common import EXIT_OK, int_option, load_config_from, print_json
from koku.core.paths import config_path, config_source
from koku.errors import UsageError


def cmd_init(args: dict[str, Any]) -> int:
    from koku.client.example import write_example

    target = config_path(args["--config"])
    if target.is_dir():
        source = {"--config": " (given with --config)", "$KOKU_CONFIG": " (from $KOKU_CONFIG)"}.get(
            config_source(args["--config"]), "")
        raise UsageError(f"config path {target}{source} is a directory; name a file in it, e.g. {target / 'config.toml'}")
    path = write_example(target, force=args["--force"])
    if args["--json"]:
        print_json({"path": str(path)})
    else:
        print(f"wrote {path}\ncheck it with: ku check\nstart the daemon with: ku daemon start")
    return EXIT_OK


def cmd_check(args: dict[str, Any]) -> int:
    from dataclasses import replace
    from datetime import datetime

    from koku.client import table  # prettytable: only for commands that print a table, never in the daemon
    from koku.core.clock import RealClock
    from koku.core.preview import preview_jobs

    n = int_option(args, "--next", 1)
    start = RealClock().now()
    if args["--from"]:
        try:
            start = datetime.fromisoformat(args["--from"].replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(f"--from expects an ISO 8601 time such as 2026-03-08T01:00:00-05:00, got {args['--from']!r}") from None
        if start.tzinfo is None:
            start = start.astimezone()  # a naive time means the local wall clock
    cfg = load_config_from(args)
    previews = [replace(p, warnings=(*cfg.warnings_for(p.name), *p.warnings))
                for p in preview_jobs(cfg.jobs, start, n)]
    per_job = {f"{job}: {tail}" for job, tail in cfg.job_warnings}
    general = [w for w in cfg.warnings if w.split(": ", 1)[-1] not in per_job]
    files = {job.name: job.source or str(cfg.path) for job in cfg.jobs}
    if args["--json"]:
        print_json([
            {"name": p.name, "cron": p.cron, "tz": p.tz, "next": [dt.isoformat() for dt in p.next],
             "warnings": list(p.warnings), "file": files[p.name], "notify": list(job.alerts.notify),
             "ping": job.alerts.ping}
            for p, job in zip(previews, cfg.jobs)
        ])
        for w in general:
            print(f"koku: warning: {w}", file=sys.stderr)
        return EXIT_OK
    print(f"{cfg.path}: {len(cfg.jobs)} job{'s' if len(cfg.jobs) != 1 else ''}, valid"
          + (f" (with {len(cfg.dropins)} drop-in file{'s' if len(cfg.dropins) != 1 else ''})" if cfg.dropins else ""))
    if previews:
        # The FILE column only when there is more than one file to tell apart.
        print(table.check_table(previews, files if cfg.dropins else None))
    from koku.core.notifyconf import check_lines

    for line in check_lines(cfg.jobs, cfg.alerting):
        print(line)
    for p in previews:
        for w in p.warnings:
            print(f"warning: job \"{p.name}\": {w}")
    for w in general:
        print(f"warning: {w}")
    return EXIT_OK



def cmd_import(args: dict[str, Any]) -> int:
    from koku.client.importer import run_import

    system = True if args["--system"] else False if args["--no-system"] else None
    target = config_path(args["--config"]) if args["--write"] or args["--into"] else None
    into = Path(args["--into"]) if args["--into"] else None
    result, toml, code = run_import(args["<file>"] or "-", system=system, write=target, into=into)
    for note in result.notes:
        print(f"koku: warning: {note}", file=sys.stderr)
    for skip in result.skipped:
        print(f"koku: error: {result.source}: line {skip.line}: not converted: {skip.reason}: {skip.text.strip()}",
              file=sys.stderr)
    if args["--json"]:
        print_json({"jobs": [job.table for job in result.jobs],
                    "skipped": [{"line": s.line, "text": s.text, "reason": s.reason} for s in result.skipped],
                    "notes": result.notes, "written": str(into or target) if target else None})
    elif target is None:
        sys.stdout.write(toml)
    else:
        print(f"{into or target}: added {len(result.jobs)} job{'s' if len(result.jobs) != 1 else ''} from "
              f"{result.source}, valid")
    if result.skipped:
        print(f"koku: {len(result.skipped)} line{'s' if len(result.skipped) != 1 else ''} of {result.source} "
              "could not be converted (listed above)", file=sys.stderr)
    return code


def cmd_completion(args: dict[str, Any]) -> int:
    from koku.client.cli import USAGE
    from koku.client.completion import script

    shell = next(name for name in ("bash", "zsh", "fish") if args[name])
    sys.stdout.write(script(shell, USAGE))
    return EXIT_OK
