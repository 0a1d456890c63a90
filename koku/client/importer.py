"""``ku import``: a crontab file (or stdin) -> koku TOML on stdout, or appended to the config.

The conversion itself is koku.core.crontab (pure); this module reads the input, writes the TOML with
tomli-w (one ``[[job]]`` table at a time, so each can carry its crontab comments above it), and with
``--write`` validates the config *with* the new jobs before touching the file.
"""

from __future__ import annotations

import os
import pwd
import sys
import tempfile
from pathlib import Path

import tomli_w

from koku.core.crontab import ImportResult, import_crontab, looks_like_system
from koku.errors import ConfigError, UsageError

EXIT_OK, EXIT_PARTIAL = 0, 1


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def own_user() -> str | None:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return None


def to_toml(result: ImportResult) -> str:
    """The import as TOML text: a header, each job with its comment block and origin, then what was left out."""
    kind = "system crontab (with user column)" if result.system else "user crontab"
    out = [f"# Imported by `ku import` from {result.source} ({kind}): {len(result.jobs)} job"
           f"{'s' if len(result.jobs) != 1 else ''}"
           + (f", {len(result.skipped)} line{'s' if len(result.skipped) != 1 else ''} not converted"
              if result.skipped else "") + "\n"]
    for job in result.jobs:
        out.append("\n")
        out.extend(f"# {c}\n".replace("# \n", "#\n") for c in job.comments)
        out.append(f"# {result.source} line {job.line}\n")
        out.append(tomli_w.dumps({"job": [job.table]}, multiline_strings=True))
    for skip in result.skipped:
        out.append(f"\n# NOT CONVERTED: {result.source} line {skip.line}: {skip.reason}\n#   {skip.text.strip()}\n")
    return "".join(out)


def _read(source: str) -> tuple[str, str]:
    if source == "-":
        return sys.stdin.read(), "stdin"
    try:
        return Path(source).read_text(encoding="utf-8", errors="surrogateescape"), source
    except OSError as exc:
        raise UsageError(f"cannot read crontab {source}: {exc.strerror or exc}") from None


def _existing_names(config: Path) -> tuple[str, set[str]]:
    """The config's text and its job names (the new names must differ). A broken config stops here."""
    from koku.core.config import parse_config

    if not config.exists():
        return "", set()
    text = config.read_text(encoding="utf-8")
    return text, {job.name for job in parse_config(text, config).jobs}


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _write_dropin(config: Path, current: str, into: Path, toml: str) -> None:
    from koku.core.config import parse_config

    if os.path.lexists(into):
        raise UsageError(f"{into} already exists; --into writes a new drop-in file (use --write to append to "
                         f"the config {config})")
    try:
        cfg = parse_config(current, config, extra={into: toml})
    except ConfigError as exc:
        raise ConfigError([*exc.problems, f"{into} was not written"]) from None
    if str(into) not in cfg.dropins:
        raise ConfigError(f"{into} is not matched by [daemon] include in {config}, so the daemon would never read "
                          f"it (include = {list(cfg.daemon.include)}); {into} was not written")
    _write_atomically(into, toml)


def run_import(source: str, *, system: bool | None, write: Path | None,
               into: Path | None = None) -> tuple[ImportResult, str, int]:
    """Convert ``source`` (a path or "-"); with ``write``, append to that config after validating the result;
    with ``into`` (and ``write``, the main config), write a new drop-in file that its include must match.

    Returns (result, the TOML text, exit code: 0 everything converted, 1 some lines left out). Raises
    ConfigError (nothing written) when the config with the new jobs would not pass ``ku check``.
    """
    from koku.core.config import parse_config

    text, label = _read(source)
    if system is None:
        system = looks_like_system(text, None if source == "-" else source, _user_exists)
    current, taken = _existing_names(write) if write is not None else ("", set())
    result = import_crontab(text, source=label, system=system, taken=taken, own_user=own_user())
    toml = to_toml(result)
    if write is not None and into is not None:
        _write_dropin(write, current, into.absolute(), toml)
    elif write is not None:
        joined = current + ("\n" if current and not current.endswith("\n") else "") + ("\n" if current else "") + toml
        try:
            parse_config(joined, write)
        except ConfigError as exc:
            raise ConfigError([*exc.problems, f"{write} was not changed"]) from None
        _write_atomically(write, joined)
    return result, toml, EXIT_PARTIAL if result.skipped else EXIT_OK
