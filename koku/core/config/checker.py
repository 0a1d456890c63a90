"""Whole-file validation: raw TOML data -> Config, every problem collected, none raised early. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timezone, tzinfo
from pathlib import Path
from typing import Any

from koku.core import notifyconf
from koku.core.config.include import DROPIN_KEYS, DropIn
from koku.core.config.model import Config, DaemonConfig, FrozenEnv, JobConfig, dir_problem, resolve_dir
from koku.core.config.values import (DAEMON_FIELDS, DEFAULTS_FIELDS, JOB_FIELDS, TOP_LEVEL_KEYS, _Bad,
                                     _Converter, _name, _REQUIRED, _show, _unknown)
from koku.core.schedule import ScheduleError, parse_schedule, resolve_zone
from koku.errors import ConfigError


class _Checker:
    def __init__(self, label: str, path: Path):
        self.label = label
        self.path = path
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.job_warnings: list[tuple[str, str]] = []  # (job "name", tail): ku check shows them per job
        self.defaults: dict[str, Any] = {}
        self.defaults_bad: set[str] = set()
        self.first_index: dict[str, tuple[str, int]] = {}  # job name -> (file, position) of its first use
        self.local: tzinfo | None = None
        self.file_label = label  # the file whose tables are being checked: main config or a drop-in
        self.file_path = path

    def problem(self, where: str | None, tail: str) -> None:
        label = self.file_label
        self.problems.append(f"{label}: {where}: {tail}" if where else f"{label}: {tail}")

    def in_file(self, label: str, path: Path) -> None:
        self.file_label, self.file_path = label, path

    def table(self, where: str, raw: dict, fields: Mapping[str, _Converter]) -> tuple[dict, set[str]]:
        """Convert each known key; report the rest. Returns (converted values, keys that were bad)."""
        good: dict[str, Any] = {}
        bad: set[str] = set()
        for key, value in raw.items():
            converter = fields.get(key)
            if converter is None:
                if where == "[defaults]" and key == "name":
                    self.problem(where, 'key "name" is not allowed here (every job needs its own name)')
                else:
                    self.problem(where, _unknown("key", key, fields))
                bad.add(key)
                continue
            try:
                good[key] = converter(key, value)
            except (_Bad, notifyconf.Bad) as exc:
                for tail in exc.tails:
                    self.problem(where, tail)
                bad.add(key)
        return good, bad

    def local_zone(self) -> tzinfo:
        """The machine's zone, for jobs without ``tz``; a bad $TZ is reported once, not once per job."""
        if self.local is None:
            try:
                self.local = resolve_zone(None)
            except ScheduleError as exc:
                self.problem(None, f'the local time zone is unusable: {exc}; fix $TZ or set "tz" in [defaults]')
                self.local = timezone.utc
        return self.local

    def section(self, data: dict, key: str) -> dict:
        raw = data.get(key, {})
        if isinstance(raw, dict):
            return raw
        self.problem(None, f'"{key}" must be a table (write [{key}]), got {_show(raw)}')
        return {}

    def run(self, data: dict, dropins: list[DropIn] | None = None, read_problems: list[str] | None = None) -> Config:
        """``dropins``: the files ``[daemon] include`` matched, already parsed; ``read_problems``: full
        messages for the ones that could not be read or parsed."""
        dropins = dropins or []
        self.problems.extend(read_problems or ())
        for key in data:
            if key not in TOP_LEVEL_KEYS:
                self.problem(None, _unknown("top-level key", key, TOP_LEVEL_KEYS))

        defaults, self.defaults_bad = self.table("[defaults]", self.section(data, "defaults"), DEFAULTS_FIELDS)
        if "cron" in defaults:
            try:
                parse_schedule(defaults["cron"], defaults.get("tz"))
            except ScheduleError as exc:
                self.problem("[defaults]", f'key "cron": {exc}')
                del defaults["cron"]
                self.defaults_bad.add("cron")
        self.defaults = defaults
        daemon, _ = self.table("[daemon]", self.section(data, "daemon"), DAEMON_FIELDS)
        self.alerting = self.alerts_of(data, dropins)

        jobs: list[JobConfig] = []
        any_jobs = False
        for label, path, file_data in [(self.label, self.path, data)] + [(d.label, d.path, d.data) for d in dropins]:
            self.in_file(label, path)
            if file_data is not data:
                for key in file_data:
                    if key not in DROPIN_KEYS:
                        self.problem(None, f'"{key}" is not allowed in a drop-in file (only [[job]] and '
                                     f"[notify.NAME] tables; [{key}] belongs in the main config {self.label})")
            raw_jobs = file_data.get("job", [])
            if not isinstance(raw_jobs, list):
                got = "not [job]" if isinstance(raw_jobs, dict) else f"got {_show(raw_jobs)}"
                self.problem(None, f'"job" must be an array of tables: write [[job]] for each job, {got}')
                raw_jobs = []
            any_jobs = any_jobs or bool(raw_jobs)
            jobs += [job for index, raw in enumerate(raw_jobs, 1) if (job := self.job(index, raw)) is not None]
        self.in_file(self.label, self.path)
        if not any_jobs and not self.problems:
            self.warnings.append(f"{self.label}: no jobs defined (add a [[job]] table)")
        if self.problems:
            raise ConfigError(self.problems)
        return Config(self.path, tuple(jobs), DaemonConfig(**daemon), tuple(self.warnings), tuple(self.job_warnings),
                      self.alerting, tuple(d.label for d in dropins))

    def alerts_of(self, data: dict, dropins: list[DropIn]) -> notifyconf.Alerting:
        """[notify.*] from the main config and every drop-in; one notifier name in two files is an error."""
        main = notifyconf.check_alerting(data, self.problem)
        notifiers = dict(main.notifiers)
        declared = set(main.declared)
        where_declared = {name: self.label for name in main.declared}
        for dropin in dropins:
            if "notify" not in dropin.data:
                continue
            self.in_file(dropin.label, dropin.path)
            found = notifyconf.check_alerting({"notify": dropin.data["notify"]}, self.problem)
            for name in sorted(found.declared):
                if name in where_declared:
                    self.problem(f"[notify.{name}]", f"already defined in {where_declared[name]} (notifier names "
                                 "must be unique across the config and its drop-ins)")
                    continue
                where_declared[name] = dropin.label
                declared.add(name)
                if name in found.notifiers:
                    notifiers[name] = found.notifiers[name]
        self.in_file(self.label, self.path)
        return notifyconf.Alerting(notifiers, main.smtp, frozenset(declared))

    def job(self, index: int, raw: object) -> JobConfig | None:
        if not isinstance(raw, dict):
            self.problem(None, f"job #{index} must be a table ([[job]]), got {_show(raw)}")
            return None
        name = raw.get("name")
        try:
            where = f'job "{_name("name", name)}"'
        except _Bad:
            where = f"job #{index}"
        before = len(self.problems)
        good, bad = self.table(where, raw, JOB_FIELDS)

        here = (self.file_label, index)
        first = self.first_index.setdefault(good["name"], here) if "name" in good else here
        if first != here:
            other = "" if first[0] == self.file_label else f" in {first[0]}"
            scope = "" if first[0] == self.file_label else " across the config and its drop-ins"
            self.problem(where, f'key "name": {_show(name)} is already used by job #{first[1]}{other} (names must '
                         f"be unique{scope})")
        defaults, defaults_bad = self.defaults, self.defaults_bad
        merged = {**defaults, **good}
        if "env" in defaults and "env" in good:
            merged["env"] = FrozenEnv({**defaults["env"], **good["env"]})
        # A key that was present but bad is already reported: no "missing" on top, but no job either.
        incomplete = [key for key in _REQUIRED if key not in merged]
        for key in incomplete:
            if key not in bad and key not in defaults_bad:
                self.problem(where, f'missing key "{key}"')

        schedule = None
        if "cron" in merged:
            # With a bad zone (already reported) UTC still lets the expression itself be checked.
            tz_ok = "tz" not in bad and ("tz" in raw or "tz" not in defaults_bad)
            zone = (merged.get("tz") or self.local_zone()) if tz_ok else timezone.utc
            try:
                schedule = parse_schedule(merged["cron"], zone)
            except ScheduleError as exc:
                origin = "" if "cron" in raw else " (from [defaults])"
                self.problem(where, f'key "cron"{origin}: {exc}')

        alerts = notifyconf.split_job_alerts(merged)
        for tail in notifyconf.job_problems(alerts, self.alerting.declared):
            self.problem(where, tail)
        if incomplete or len(self.problems) > before:
            return None
        source = "" if self.file_label == self.label else self.file_label
        job = JobConfig(**merged, source=source, alerts=alerts, schedule=schedule)
        if job.dir is not None:
            self.check_dir(where, job.dir)
        return job

    def check_dir(self, where: str, directory: str) -> None:
        resolved = resolve_dir(directory, self.file_path)
        problem = dir_problem(resolved)
        if problem is not None:
            shown = f"{_show(directory)}" + (f" ({resolved})" if str(resolved) != directory else "")
            tail = f'key "dir": directory {shown} {problem}'
            self.job_warnings.append((where, tail))
            self.warnings.append(f"{self.file_label}: {where}: {tail}")
