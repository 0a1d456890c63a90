"""What koku.pyz looks like inside, shared by the build (build_zipapp.py) and the run (bootstrap):
member names, the manifest, and which native build an interpreter needs. Stdlib only, cheap to import.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Mapping

from koku.errors import BootstrapError

MANIFEST = "_koku_build.json"
NATIVE_DIR = "_native"  # _native/<key>.zip: one interpreter's native build, a nested archive
LAZY_DIR = "_lazy"  # _lazy/<package>.zip: a package unpacked only when first imported

_LOADER_ARCHIVE = getattr(globals().get("__loader__"), "archive", None)
if not isinstance(_LOADER_ARCHIVE, str):
    _LOADER_ARCHIVE = None
# Absolute now: the daemon changes directory later and must still find its own file.
_ARCHIVE = os.path.abspath(_LOADER_ARCHIVE) if _LOADER_ARCHIVE else None


def detect_libc() -> tuple[str, str | None]:
    """``("glibc", "2.36")``, ``("musl", None)`` or ``("unknown", None)`` for the running process."""
    try:
        value = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        value = None
    if value and value.startswith("glibc "):
        return "glibc", value.split()[1]
    for lib in ("/lib", "/usr/lib"):
        try:
            if any(name.startswith("ld-musl-") for name in os.listdir(lib)):
                return "musl", None
        except OSError:
            continue
    return "unknown", None


def native_key(ext_suffixes: list[str] | None = None, libc: str | None = None) -> str:
    """The native folder this interpreter needs, e.g. ``cpython-311-x86_64-linux-gnu``.

    Taken from the extension-module suffix, with its libc part replaced by what the process really
    runs on: CPython before 3.13 on musl (Alpine) still says ``linux-gnu``.
    """
    if ext_suffixes is None:
        import importlib.machinery

        ext_suffixes = importlib.machinery.EXTENSION_SUFFIXES
    tag = ""
    for suffix in ext_suffixes:
        parts = suffix.split(".")
        if len(parts) == 3 and parts[2] == "so" and parts[1] != "abi3":
            tag = parts[1]
            break
    if not tag:
        return f"{sys.implementation.name}-{sys.version_info[0]}{sys.version_info[1]}-unknown"
    if libc is None:
        libc = detect_libc()[0]
    for old in ("-linux-gnu", "-linux-musl"):
        if tag.endswith(old):
            if libc == "musl":
                return tag[: -len(old)] + "-linux-musl"
            if libc == "glibc":
                return tag[: -len(old)] + "-linux-gnu"
    return tag


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int("".join(ch for ch in part if ch.isdigit()) or 0) for part in text.split("."))


# -- the manifest ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Native:
    """One native folder: the interpreter it is for and the C library it needs."""

    key: str
    libc: str  # "glibc" or "musl"
    min_libc: str  # e.g. "2.28"


@dataclass(frozen=True)
class Manifest:
    build_id: str  # hex digest of every member but the manifest
    koku: str
    versions: Mapping[str, str]  # native package name -> version
    natives: Mapping[str, Native]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        natives = {
            key: Native(key, value["libc"], value["min_libc"]) for key, value in data["natives"].items()
        }
        return cls(data["build_id"], data["koku"], dict(data["versions"]), natives)

    def native_for(self, key: str) -> Native:
        """The native build for ``key``; raises BootstrapError naming what this file supports."""
        native = self.natives.get(key)
        if native is None:
            have = ", ".join(sorted(self.natives)) or "none"
            raise BootstrapError(
                f"this koku file has no native build (gevent) for this interpreter ({key}); it has: {have}"
            )
        return native

    def gevent_version(self) -> str:
        return self.versions.get("gevent", "?")


def _parse_manifest(raw: bytes, where: str) -> Manifest:
    import json

    try:
        return Manifest.from_json(json.loads(raw))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BootstrapError(f"{where}: {MANIFEST} is damaged ({exc}); rebuild the file") from None


def check_libc(native: Native, libc: tuple[str, str | None] | None = None) -> None:
    """Raise BootstrapError when this system's C library cannot load ``native``."""
    kind, version = libc or detect_libc()
    if kind == "glibc" and native.libc == "glibc" and version:
        if _version_tuple(version) < _version_tuple(native.min_libc):
            raise BootstrapError(
                f"gevent for {native.key} needs glibc {native.min_libc} or newer; "
                f"this system has glibc {version}"
            )


def read_manifest(archive: str | os.PathLike[str]) -> Manifest:
    """The manifest of a ``.pyz``; raises BootstrapError if it cannot be read."""
    archive = os.fspath(archive)
    if archive == _ARCHIVE and _LOADER_ARCHIVE:
        # The zipimporter already holds the archive's directory: no zipfile import for `--version`.
        try:
            raw = __loader__.get_data(os.path.join(_LOADER_ARCHIVE, MANIFEST))  # type: ignore[name-defined]
        except OSError as exc:
            raise BootstrapError(f"{archive}: cannot read {MANIFEST}: {exc}") from None
        return _parse_manifest(raw, archive)
    import zipfile

    try:
        with zipfile.ZipFile(archive) as zf:
            return _parse_manifest(zf.read(MANIFEST), archive)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise BootstrapError(f"{archive}: not a koku.pyz with a {MANIFEST} ({exc})") from None
