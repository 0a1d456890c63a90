"""A crontab (user or system) -> koku ``[[job]]`` tables, for ``ku import``. Pure: stdlib + koku.core.

What is read, as Vixie cron / cronie / Debian cron read it:
  * blank lines and ``#`` comments (a comment block is kept above the job that follows it);
  * ``NAME=value`` lines (spaces around ``=`` allowed, one pair of matching quotes stripped); each applies
    to the job lines after it. ``CRON_TZ`` becomes ``tz``, cronie's ``RANDOM_DELAY`` (minutes) becomes
    ``jitter``, ``SHELL`` other than /bin/sh wraps the command in that shell, and everything else
    (``PATH``, ``MAILTO``, ``HOME`` ...) goes to ``env``, as cron exports them;
  * 5 time fields or a macro (``@daily``, ``@reboot`` ...), then in a system crontab the user column,
    then the command;
  * ``%`` in the command: the first unescaped one starts the job's stdin, later ones are newlines, ``\\%``
    is a literal ``%`` (cron's do_command); stdin becomes a quoted here-doc on a brace group, so the shell
    and every command in the line read exactly the bytes cron would have piped (plus cron's final newline);
  * cronie's ``-`` before the minute field (do not syslog the run) is dropped with a note;
  * OpenBSD's ``~`` (``~``, ``a~b``, ``~b``, ``a~``: a value picked at random when the crontab is loaded)
    is resolved here, once, from a hash of the line, so importing the same file twice gives the same output.

A line that cannot be converted is reported with the reason and left out; the caller decides the exit code.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Iterable

from koku.core.config import NAME_MAX
from koku.core.schedule import ScheduleError, parse_schedule, resolve_zone

MACROS = ("@reboot", "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
# Lowest and highest value of each of cron's five fields, for resolving "~".
_FIELD_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_ENV = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
_TILDE = re.compile(r"(\d*)~(\d*)")
_NAME_BAD = re.compile(r"[^A-Za-z0-9_.-]+")
# Commands that only guard or wrap the real work: the job is named after something else in the line.
_GUARDS = frozenset({
    "test", "[", "[[", "]", "]]", "cd", "command", "if", "then", "else", "elif", "fi", "do", "done", "while",
    "until", "for", "in", "case", "esac", "true", "false", ":", "exec", "nice", "ionice", "sudo", "env",
    "timeout", "flock", "sleep", "echo", "!", "{", "}", "chronic", "date", "nohup", "su", "runuser",
})
# Generic runners: named after their first real argument too ("run-parts-cron.daily").
_RUNNERS = frozenset({
    "run-parts", "invoke-rc.d", "systemctl", "service", "sh", "bash", "dash", "zsh", "python", "python3",
    "perl", "php", "ruby", "node", "java",
})
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*")
_RESERVED_SPLIT = frozenset({"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "{", "}", "!"})


@dataclass(frozen=True)
class Skipped:
    """A line left out: 1-based line number, the line as written, why."""

    line: int
    text: str
    reason: str


@dataclass
class ImportedJob:
    table: dict[str, Any]  # the [[job]] table, in the order keys are written
    line: int
    comments: list[str] = field(default_factory=list)  # the comment block above it, without "#"


@dataclass
class ImportResult:
    source: str
    system: bool
    jobs: list[ImportedJob] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # converted, but behaviour differs: the user should know


def looks_like_system(text: str, path: str | None, user_exists) -> bool:
    """Whether a crontab has the user column: /etc/crontab and /etc/cron.d/* do; otherwise guessed from
    the lines (every job line's sixth word, or second after a macro, is an existing user)."""
    if path and path != "-":
        parts = os.path.abspath(path).split(os.sep)
        if parts[-1] == "crontab" and parts[-2:-1] == ["etc"] or "cron.d" in parts[:-1]:
            return True
    users = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or _is_env(line):
            continue
        words = line.lstrip("-").split()
        at = 1 if words[0].startswith("@") else 5
        if len(words) <= at + 1:
            return False
        users.append(words[at])
    return bool(users) and all(user_exists(u) for u in users)


def _is_env(line: str) -> bool:
    match = _ENV.match(line)
    # "0 * * * * a=b" is a job: cron's name ends at the first blank, and the next character must be "=".
    return match is not None and not line[0].isdigit() and line[0] not in "*@-~"


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def split_percent(command: str) -> tuple[str, str | None]:
    """cron's ``%`` rule: (command, stdin or None). ``\\%`` is a literal %; a non-empty stdin gets cron's
    final newline unless it already ends with one."""
    out: list[str] = []
    i = 0
    while i < len(command):
        ch = command[i]
        if ch == "\\" and command[i + 1 : i + 2] == "%":
            out.append("%")
            i += 2
            continue
        if ch == "%":
            rest = command[i + 1 :]
            text: list[str] = []
            j = 0
            while j < len(rest):
                if rest[j] == "\\" and rest[j + 1 : j + 2] == "%":
                    text.append("%")
                    j += 2
                    continue
                text.append("\n" if rest[j] == "%" else rest[j])
                j += 1
            stdin = "".join(text)
            if stdin and not stdin.endswith("\n"):  # cron writes nothing at all for an empty stdin
                stdin += "\n"
            return "".join(out), stdin
        out.append(ch)
        i += 1
    return "".join(out), None


def with_stdin(command: str, stdin: str) -> str:
    """``command`` with ``stdin`` fed to all of it: a brace group and a quoted here-doc (no expansion)."""
    lines = stdin[:-1].split("\n") if stdin else []
    delimiter = "KOKU_EOF"
    n = 0
    while delimiter in lines:
        n += 1
        delimiter = f"KOKU_EOF_{n}"
    # The newline before "}" also ends a trailing "# comment" or "&" in the command.
    return "{\n" + command + "\n} <<'" + delimiter + "'\n" + "".join(line + "\n" for line in lines) + delimiter


def _resolve_tilde(fields: list[str], seed: str) -> tuple[list[str], bool]:
    used = False
    out = []
    for index, value in enumerate(fields):
        lo_default, hi_default = _FIELD_RANGES[index]

        def pick(match: re.Match[str], index: int = index) -> str:
            lo = int(match.group(1)) if match.group(1) else lo_default
            hi = int(match.group(2)) if match.group(2) else hi_default
            if hi < lo:
                raise ValueError(f'"~" range {match.group(0)} in field {index + 1} is empty')
            digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
            return str(lo + int.from_bytes(digest[:4], "big") % (hi - lo + 1))

        if "~" in value:
            used = True
            value = _TILDE.sub(pick, value)
        out.append(value)
    return out, used


def _programs(command: str) -> list[tuple[str, list[str]]]:
    """The simple commands in a shell line, roughly: (program basename, the words after it)."""
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: a name only needs a rough split
        tokens = command.split()
    segments: list[list[str]] = [[]]
    skip_next = False
    for token in tokens:
        if skip_next:
            skip_next = False
            continue
        if token and all(c in "();<>|&" for c in token):
            if "<" in token or ">" in token:
                skip_next = not token.endswith("&")  # "> file" names a file; ">&" is followed by an fd
                continue
            segments.append([])
            continue
        if token in _RESERVED_SPLIT:
            segments.append([])
            continue
        if token.startswith("$("):
            segments.append([token[2:]] if len(token) > 2 else [])
            continue
        segments[-1].append(token)
    programs = []
    for words in segments:
        while words and _ASSIGNMENT.fullmatch(words[0]):
            words = words[1:]
        if words:
            programs.append((os.path.basename(words[0].rstrip("/")) or words[0], words[1:]))
    return programs


def derive_name(command: str) -> str:
    """A job name from its command: the last program that does real work (guards like ``test -x`` and
    ``cd /`` skipped), plus the first argument of a generic runner (``run-parts-cron.daily``)."""
    programs = _programs(command)
    chosen = next((p for p in reversed(programs) if p[0] not in _GUARDS), programs[0] if programs else None)
    if chosen is None:
        return "job"
    name, args = chosen
    if name in _RUNNERS:
        arg = next((a for a in args if not a.startswith("-")), None)
        if arg:
            name = f"{name}-{os.path.basename(arg.rstrip('/')) or arg}"
    return clean_name(name)


def clean_name(text: str) -> str:
    name = _NAME_BAD.sub("-", text).strip("-.")
    name = re.sub(r"-{2,}", "-", name)[:40].strip("-.")
    return name or "job"


def unique_name(base: str, taken: set[str]) -> str:
    name = base
    n = 1
    while name in taken:
        n += 1
        suffix = f"-{n}"
        name = base[: NAME_MAX - len(suffix)] + suffix
    taken.add(name)
    return name


def _take(line: str, n: int) -> tuple[list[str], str] | None:
    """The first ``n`` blank-separated words and the rest of the line as written (None if too short)."""
    match = re.match(r"\s*" + r"(\S+)\s+" * n + r"(.*)$", line, re.DOTALL)
    if match is None:
        return None
    return list(match.groups()[:n]), match.group(n + 1)


class _Reader:
    def __init__(self, source: str, system: bool, taken: Iterable[str], own_user: str | None):
        self.result = ImportResult(source, system)
        self.taken = set(taken)
        self.own_user = own_user
        self.env: dict[str, str] = {}
        self.tz: str | None = None
        self.tz_error: str | None = None
        self.jitter: int = 0
        self.shell = "/bin/sh"
        self.comments: list[str] = []
        self.noted: set[str] = set()

    def note(self, key: str, text: str) -> None:
        if key not in self.noted:
            self.noted.add(key)
            self.result.notes.append(text)

    def skip(self, lineno: int, text: str, reason: str) -> None:
        self.result.skipped.append(Skipped(lineno, text, reason))

    def line(self, lineno: int, raw: str) -> None:
        text = raw.rstrip("\r")
        stripped = text.strip()
        if not stripped:
            self.comments = []
        elif stripped.startswith("#"):
            self.comments.append(stripped[1:].strip())
        elif _is_env(stripped):
            self.comments = []
            self.assign(lineno, text, *_ENV.match(stripped).groups())  # type: ignore[union-attr]
        else:
            self.job(lineno, text, stripped)
            self.comments = []

    def assign(self, lineno: int, text: str, name: str, value: str) -> None:
        value = _unquote(value)
        where = f"{self.result.source}: line {lineno}"
        if name == "CRON_TZ":
            self.tz = self.tz_error = None
            if value:
                try:
                    resolve_zone(value)
                    self.tz = value
                except ScheduleError as exc:
                    self.tz_error = f"CRON_TZ={value} (line {lineno}) is unusable: {exc}"
                    self.skip(lineno, text, f"CRON_TZ: {exc}")
            return
        if name == "RANDOM_DELAY":
            if not value.isdigit():
                self.skip(lineno, text, f'RANDOM_DELAY must be a whole number of minutes, got "{value}"')
            else:
                self.jitter = int(value)
            return
        if name == "SHELL":
            self.shell = value or "/bin/sh"
        if name == "MAILTO" and value:  # MAILTO="" is cron's "no mail": nothing lost
            self.note("MAILTO", f"{where}: MAILTO={value}: koku does not mail job output (it is in the job's "
                                "log: ku log NAME); MAILTO is passed on in env only")
        self.env[name] = value

    def job(self, lineno: int, text: str, stripped: str) -> None:
        body = stripped
        if body.startswith("-"):
            body = body[1:]
            self.note("-", f"{self.result.source}: line {lineno}: the \"-\" prefix (do not log the run to "
                           "syslog) has no koku equivalent and was dropped; koku always logs runs")
        want_user = 1 if self.result.system else 0
        if body.startswith("@"):
            taken = _take(body, 1 + want_user)
            if taken is None:
                return self.skip(lineno, text, "no command after the schedule")
            words, command = taken
            macro = words[0].lower()
            if macro not in MACROS:
                return self.skip(lineno, text, f'unknown macro "{words[0]}" (known: {", ".join(MACROS)})')
            cron, tilde = macro, False
        else:
            taken = _take(body, 5 + want_user)
            if taken is None:
                return self.skip(lineno, text, "not a job line (five time fields or an @macro, "
                                 + ("then a user, " if want_user else "") + "then a command) nor a VAR=value line")
            words, command = taken
            try:
                fields, tilde = _resolve_tilde(words[:5], f"{self.result.source}:{stripped}")
            except ValueError as exc:
                return self.skip(lineno, text, str(exc))
            cron = " ".join(fields)
        user = words[-1] if want_user else None
        if not command.strip():
            return self.skip(lineno, text, "no command after the schedule")
        if self.tz_error:
            return self.skip(lineno, text, self.tz_error)
        try:
            parse_schedule(cron, self.tz)
        except ScheduleError as exc:
            return self.skip(lineno, text, str(exc))
        shell_command, stdin = split_percent(command)
        if not shell_command.strip():
            return self.skip(lineno, text, "the command is empty before its first %")
        run = shell_command
        if self.shell != "/bin/sh":
            # cron runs `$SHELL -c command`; koku runs its daemon's shell, so hand the line to $SHELL.
            run = f"exec {shlex.quote(self.shell)} -c {shlex.quote(run)}"
        if stdin is not None:
            run = with_stdin(run, stdin)
        table: dict[str, Any] = {"name": unique_name(derive_name(shell_command), self.taken), "cron": cron,
                                 "command": run}
        if user is not None and user != self.own_user:
            table["user"] = user
        if self.tz:
            table["tz"] = self.tz
        if self.jitter:
            table["jitter"] = f"{self.jitter}m"
        if self.env:
            table["env"] = dict(self.env)
        table["description"] = text.strip()
        if tilde:
            table["description"] += f"  (~ resolved at import: {cron})"
        self.result.jobs.append(ImportedJob(table, lineno, list(self.comments)))


def import_crontab(text: str, *, source: str = "crontab", system: bool = False, taken: Iterable[str] = (),
                   own_user: str | None = None) -> ImportResult:
    """Convert crontab ``text``. ``system``: lines carry the user column. ``taken``: job names already in
    use (new names avoid them). ``own_user``: the user the daemon runs as; jobs for that user get no
    ``user`` key (they would run as it anyway). Never raises for bad lines: they land in ``skipped``."""
    reader = _Reader(source, system, taken, own_user)
    for lineno, raw in enumerate(text.split("\n"), 1):
        reader.line(lineno, raw)
    return reader.result
