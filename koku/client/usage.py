"""What the docopt usage text says, as data: commands, their usage lines, options and which take a value.

One source of truth for three readers: docopt itself (cli.main), the usage-error messages below (docopt's
own read "Warning: found unmatched (duplicate?) arguments [Argument(None, 'stauts')]"), and the shell
completion scripts (completion.py). Imported only when a command line is wrong or a script is asked for,
so that a normal ``ku status`` does not pay for it.
"""

from __future__ import annotations

import difflib
import re
from typing import NamedTuple


class Spec(NamedTuple):
    usage: dict[str, list[str]]  # "run" -> ["ku run <name> [--wait] [options]"]; "daemon" -> its 4 lines
    subcommands: dict[str, list[str]]  # "daemon" -> ["start", "stop", "status", "run"]
    summaries: dict[str, str]  # "run" / "daemon start" -> the Commands: section's line
    options: dict[str, bool]  # every spelling ("-c", "--config") -> whether it takes a value
    option_help: dict[str, str]  # the long (or only) spelling -> its description
    positional: dict[str, list[tuple[str, bool]]]  # "run" -> [("<name>", True)]: (argument, required)
    spellings: dict[str, list[str]]  # "--config" -> ["-c", "--config"]: one Options line's spellings


def _section(text: str, title: str) -> list[str]:
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip().lower() == title.lower())
    except StopIteration:
        return []
    out = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        out.append(line)
    return out


def parse(text: str) -> Spec:
    usage: dict[str, list[str]] = {}
    subcommands: dict[str, list[str]] = {}
    positional: dict[str, list[tuple[str, bool]]] = {}
    for line in _section(text, "Usage:"):
        words = line.split()
        if len(words) < 2 or not re.fullmatch(r"[a-z][a-z-]*", words[1]):
            continue  # "ku (-h | --help)", "ku --version"
        command = words[1]
        usage.setdefault(command, []).append(line.strip())
        rest = words[2:]
        choice = re.match(r"\(([a-z][a-z |-]*)\)", " ".join(rest))
        if choice:  # "ku completion (bash | zsh | fish)": one of these words
            for word in choice.group(1).split("|"):
                subcommands.setdefault(command, []).append(word.strip())
            rest = " ".join(rest)[choice.end():].split()
        elif rest and re.fullmatch(r"[a-z][a-z-]*", rest[0]):
            subcommands.setdefault(command, []).append(rest[0])
            rest = rest[1:]
        args = positional.setdefault(command, [])
        for word in rest:
            alternatives = word.strip("[]()").split("|")
            for alt in alternatives:
                if alt.startswith("<") and (alt, True) not in args and (alt, False) not in args:
                    args.append((alt, not word.startswith("[")))
    summaries: dict[str, str] = {}
    for line in _section(text, "Commands:"):
        name, _, summary = line.strip().partition("  ")
        summaries[name.strip()] = summary.strip()
    options: dict[str, bool] = {}
    option_help: dict[str, str] = {}
    spelled: dict[str, list[str]] = {}
    for line in _section(text, "Options:"):
        forms, _, description = line.strip().partition("  ")
        spellings = re.findall(r"(--?[A-Za-z][\w-]*)(=\S+| [A-Z]+)?", forms)
        takes_value = any(value for _, value in spellings)
        for spelling, _ in spellings:
            options[spelling] = takes_value
        if spellings:
            option_help[spellings[-1][0]] = re.sub(r"\s+", " ", description).strip()
            spelled[spellings[-1][0]] = [spelling for spelling, _ in spellings]
    return Spec(usage, subcommands, summaries, options, option_help, positional, spelled)


def _suggest(word: str, choices: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f' (did you mean "{prefix}{close[0]}"?)' if close else ""


def _short_usage(spec: Spec, command: str | None) -> str:
    if command in spec.usage:
        lines = spec.usage[command]
        return "usage:\n" + "\n".join(f"  {line}" for line in lines) + "\nmore: ku --help"
    return f"usage: ku <command> [options]; commands: {', '.join(spec.usage)}\nmore: ku --help"


def diagnose(text: str, argv: list[str]) -> str:
    """What is wrong with ``argv`` (which docopt rejected), in words, then a short usage. Never raises."""
    spec = parse(text)
    words: list[str] = []
    unknown_options: list[str] = []
    valueless: list[str] = []  # options that take a value, given none
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            words.extend(argv[i + 1:])
            break
        if arg.startswith("-") and arg != "-":
            name = arg.split("=", 1)[0]
            if name not in spec.options and not (len(name) > 2 and name[1] != "-" and name[:2] in spec.options):
                unknown_options.append(name)
            elif spec.options.get(name) and "=" not in arg and len(name) == len(arg):
                if i + 1 >= len(argv):
                    valueless.append(name)
                i += 1  # its value
        else:
            words.append(arg)
        i += 1
    if valueless and not words:
        return f'koku: option "{valueless[0]}" needs a value\n' + _short_usage(spec, None)
    if not words:
        return "koku: missing command\n" + _short_usage(spec, None)
    command, rest = words[0], words[1:]
    if command not in spec.usage:
        return f'koku: unknown command "{command}"{_suggest(command, list(spec.usage))}\n' + _short_usage(spec, None)
    problem = None
    subs = spec.subcommands.get(command)
    if subs:
        if not rest:
            problem = f'"ku {command}" needs one of: {", ".join(subs)}'
        elif rest[0] not in subs:
            hint = _suggest(rest[0], subs, command + " ") or f'; "ku {command}" takes one of: {", ".join(subs)}'
            problem = f'unknown command "{command} {rest[0]}"{hint}'
        else:
            rest = rest[1:]
    if problem is None and valueless:
        problem = f'option "{valueless[0]}" needs a value'
    if problem is None and unknown_options:
        name = unknown_options[0]
        problem = f'unknown option "{name}" for "ku {command}"{_suggest(name, list(spec.options))}'
    if problem is None:
        expected = spec.positional.get(command, [])
        required = [arg for arg, req in expected if req]
        if len(rest) < len(required):
            what = required[len(rest)]
            problem = f'"ku {command}" needs {what}' + (" (a job name)" if what == "<name>" else "")
        elif len(rest) > len(expected):
            problem = f'unexpected argument "{rest[len(expected)]}" for "ku {command}"'
    if problem is None:
        problem = f'invalid options for "ku {command}"'
    return f"koku: {problem}\n" + _short_usage(spec, command)
