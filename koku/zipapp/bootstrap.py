"""Running koku from one file: native code for the daemon, the extracted copy, re-invoking ourselves.

``koku.pyz`` (built by ``build_zipapp.py``) carries koku and its pure-Python dependencies at its root,
imported straight from the archive, plus gevent and greenlet (C extensions, which cannot be imported
from a zip) once per interpreter as a nested archive ``_native/<key>.zip``, where ``<key>`` is e.g.
``cpython-311-x86_64-linux-gnu``. ``_koku_build.json`` at the root names the build (a hash of every
member) and what each native build needs.

Why nested archives: every start reads the archive's central directory, in pure Python, at 10-20 us
an entry. Twenty native builds are about 2,500 files, tzdata 649; as one entry each they cost nothing
until they are unpacked.

Client commands never come here for native code. The daemon calls ``prepare_daemon()``: the whole
application, with the native build for this interpreter and every ``_lazy/`` package unpacked at its
root, is extracted once into a cache directory keyed by the build and the interpreter, then the
process re-executes itself on that copy. From then on nothing is read from the ``.pyz``, so it can be
replaced while the daemon runs.

tzdata (decided here, used by ``koku.zipapp.zipcache``): ``zoneinfo`` imports the ``tzdata`` package only
when a zone is not in its TZPATH, i.e. on systems without a tz database (minimal containers) or with
one that lacks a newer zone. So tzdata is not at the archive's root but in ``_lazy/tzdata.zip``; the
archive's import hook answers ``import tzdata`` by unpacking it once into
``<cache dir>/<build>-tzdata`` (``extract_lazy()``, pure data and ``__init__.py`` files, never
native code) and importing it from there. Where no cache dir is usable, tzdata cannot be imported
and zones missing from the system are reported as unknown. The daemon's copy has ``tzdata/`` unpacked
at its root, as any installed package.

Every command imports this module, so only cheap stdlib modules are imported up front.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from koku.zipapp.cachedir import _ST_NOEXEC, CacheChoice, cache_candidates, check_cache_dir, select_cache_dir  # noqa: F401
from koku.errors import BootstrapError, KokuError  # noqa: F401

MANIFEST = "_koku_build.json"
NATIVE_DIR = "_native"  # _native/<key>.zip: one interpreter's native build, a nested archive
LAZY_DIR = "_lazy"  # _lazy/<package>.zip: a package unpacked only when first imported
# Set for the re-executed daemon; tells it which extracted copy it is supposed to be running from.
ENV_EXTRACTED = "KOKU_EXTRACTED_APP"
NATIVE_PACKAGES = ("gevent", "greenlet")

# -- where we run from -------------------------------------------------------------------------------


_LOADER_ARCHIVE = getattr(globals().get("__loader__"), "archive", None)
if not isinstance(_LOADER_ARCHIVE, str):
    _LOADER_ARCHIVE = None
# Absolute now: the daemon changes directory later and must still find its own file.
_ARCHIVE = os.path.abspath(_LOADER_ARCHIVE) if _LOADER_ARCHIVE else None
_APP_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # <app>/koku/zipapp/


def running_from_zip() -> bool:
    """True when koku is being imported from a ``.pyz`` archive."""
    return _ARCHIVE is not None


def extracted_app_dir() -> Path | None:
    """The extracted copy we run from (a directory holding the manifest), or None."""
    if _ARCHIVE is None and os.path.isfile(os.path.join(_APP_DIR, MANIFEST)):
        return Path(_APP_DIR)
    return None


def program_argv() -> list[str]:
    """The argv prefix that runs this same koku again: append the command's arguments.

    Always isolated (``-I``): ``python -m koku`` would put the caller's working directory first on
    ``sys.path``, and a ``koku/__main__.py`` or ``ctypes.py`` there would run as the daemon's user
    (root). Isolation also drops ``$PYTHONPATH``, so an installed koku is found through site-packages
    and any other one through its own absolute directory, appended (it can never shadow the stdlib).
    """
    if _ARCHIVE is not None:
        return [sys.executable, "-I", _ARCHIVE]
    app = extracted_app_dir()
    if app is not None:
        return [sys.executable, "-I", str(app)]
    entry = (f"import sys; sys.path.append({_APP_DIR!r}); "
             "from koku.__main__ import main; sys.exit(main())")
    return [sys.executable, "-I", "-c", entry]


# -- which native build fits this interpreter ---------------------------------------------------------


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


def check_libc(native: Native, libc: tuple[str, str | None] | None = None) -> None:
    """Raise BootstrapError when this system's C library cannot load ``native``."""
    kind, version = libc or detect_libc()
    if kind == "glibc" and native.libc == "glibc" and version:
        if _version_tuple(version) < _version_tuple(native.min_libc):
            raise BootstrapError(
                f"gevent for {native.key} needs glibc {native.min_libc} or newer; "
                f"this system has glibc {version}"
            )


# -- extraction ---------------------------------------------------------------------------------------------


def app_dir_name(manifest: Manifest, key: str) -> str:
    return f"{manifest.build_id[:24]}-{key}"


def lazy_dir_name(manifest: Manifest, package: str) -> str:
    return f"{manifest.build_id[:24]}-{package}"


def _unpacked_at_root(name: str, key: str) -> bool | None:
    """For a member under ``_native/`` or ``_lazy/``: True if it is a nested archive the extracted copy
    for ``key`` unpacks at its root, False to skip it. None for an ordinary member, copied as it is."""
    if name.startswith(NATIVE_DIR + "/"):
        return name == f"{NATIVE_DIR}/{key}.zip"
    if name.startswith(LAZY_DIR + "/"):
        return name.endswith(".zip")
    return None


def _safe_relative(name: str) -> bool:
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and ".." not in parts and "\\" not in name


def _prune_dead_temp_dirs(cache_dir: Path) -> None:
    # A temp dir is named after the pid that made it; one whose process is gone is a crash's leftover.
    import shutil

    try:
        names = os.listdir(cache_dir)
    except OSError:
        return
    for name in names:
        if not name.startswith(".tmp-"):
            continue
        try:
            pid = int(name.split("-")[1])
            os.kill(pid, 0)
        except (ValueError, IndexError):
            continue
        except ProcessLookupError:
            shutil.rmtree(cache_dir / name, ignore_errors=True)
        except PermissionError:
            continue


def extract_app(archive: str | os.PathLike[str], cache_dir: str | os.PathLike[str], key: str | None = None) -> Path:
    """Extract the application with the native build for ``key`` (default: this interpreter).

    Returns ``<cache_dir>/<build>-<key>``, a directory ``python`` can run. Safe when many processes do
    it at once: the copy is written to a private temp dir and renamed into place, so a directory under
    the final name is always complete. A lock on the cache dir makes the others wait for the first
    instead of all extracting; where locks do not work, the first rename wins and the others delete
    their copy. Raises BootstrapError (unsupported interpreter, damaged or changing archive,
    unwritable cache).
    """
    archive = os.fspath(archive)
    key = key or native_key()
    manifest = read_manifest(archive)
    manifest.native_for(key)

    def fill(zf: Any, tmp: Path) -> None:
        unpacked = set()
        for info in zf.infolist():
            nested = _unpacked_at_root(info.filename, key)
            if nested is None:
                _write_member(zf, info, tmp, archive)
            elif nested:
                _unpack_nested(zf, info.filename, tmp, archive)
                unpacked.add(info.filename)
        if f"{NATIVE_DIR}/{key}.zip" not in unpacked:
            raise BootstrapError(f"{archive} is damaged: its manifest lists {key}, but {NATIVE_DIR}/{key}.zip "
                                 "is missing; rebuild the file")

    return _materialize(archive, manifest, Path(cache_dir), app_dir_name(manifest, key), fill)


def extract_lazy(archive: str | os.PathLike[str], cache_dir: str | os.PathLike[str], package: str) -> Path:
    """Unpack ``_lazy/<package>.zip`` into ``<cache_dir>/<build>-<package>`` (once) and return that
    directory, which then holds ``<package>/``. Pure Python and data only: the client path may call it.
    Concurrency as in ``extract_app``. Raises BootstrapError."""
    archive = os.fspath(archive)
    manifest = read_manifest(archive)

    def fill(zf: Any, tmp: Path) -> None:
        _unpack_nested(zf, f"{LAZY_DIR}/{package}.zip", tmp, archive)

    return _materialize(archive, manifest, Path(cache_dir), lazy_dir_name(manifest, package), fill)


def _write_member(zf: Any, info: Any, tmp: Path, archive: str) -> None:
    import shutil

    name = info.filename
    if not _safe_relative(name.rstrip("/")):
        raise BootstrapError(f"{archive}: unsafe member name {name!r}")
    dest = tmp / name
    if name.endswith("/"):
        dest.mkdir(parents=True, exist_ok=True)
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(info) as src, open(dest, "xb") as out:
        shutil.copyfileobj(src, out)


def _unpack_nested(zf: Any, member: str, tmp: Path, archive: str) -> None:
    import io
    import zipfile

    # In memory: a few MB at most, and reading it whole checks the outer CRC before anything is used.
    with zipfile.ZipFile(io.BytesIO(zf.read(member))) as inner:
        for info in inner.infolist():
            _write_member(inner, info, tmp, f"{archive}:{member}")


def _materialize(archive: str, manifest: Manifest, cache_dir: Path, name: str,
                 fill: Callable[[Any, Path], None]) -> Path:
    """``cache_dir/name``, made by ``fill(open archive, private temp dir)`` unless it exists."""
    final = cache_dir / name
    if os.path.isdir(final):
        return final
    import fcntl

    try:
        lock = os.open(cache_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise BootstrapError(f"cannot use cache dir {cache_dir}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError:
            pass  # e.g. ENOLCK on some network filesystems: the rename below still keeps it safe
        if not os.path.isdir(final):
            _fill_and_rename(archive, manifest, cache_dir, final, fill)
    finally:
        os.close(lock)
    return final


def _fill_and_rename(archive: str, manifest: Manifest, cache_dir: Path, final: Path,
                     fill: Callable[[Any, Path], None]) -> None:
    import errno
    import shutil
    import tempfile
    import zipfile

    _prune_dead_temp_dirs(cache_dir)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{os.getpid()}-", dir=cache_dir))
    except OSError as exc:
        raise BootstrapError(f"cannot write to cache dir {cache_dir}: {exc.strerror or exc}") from None
    try:
        with zipfile.ZipFile(archive) as zf:
            if _parse_manifest(zf.read(MANIFEST), archive).build_id != manifest.build_id:
                raise BootstrapError(f"{archive} was replaced while koku started; run the command again")
            fill(zf, tmp)
        try:
            os.rename(tmp, final)
        except OSError as exc:
            # Another process got there first; its copy is identical.
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not os.path.isdir(final):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, (zipfile.BadZipFile, EOFError, KeyError)):
            raise BootstrapError(f"{archive} is damaged or was replaced while extracting ({exc})") from None
        if isinstance(exc, OSError):
            raise BootstrapError(f"cannot extract {archive} into {cache_dir}: {exc}") from None
        raise


def find_extracted(manifest: Manifest, key: str, env: Mapping[str, str] | None = None) -> Path | None:
    """The existing extracted copy the daemon would use, without creating anything."""
    uid = os.getuid()
    for choice in cache_candidates(env, uid):
        if check_cache_dir(choice.path, uid, create=False) is not None:
            continue
        path = choice.path / app_dir_name(manifest, key)
        return path if os.path.isdir(path) else None
    return None


# -- what the CLI calls --------------------------------------------------------------------------------------


def _interpreter_options() -> list[str]:
    """Options given to the interpreter itself (``-X dev``, ``-W ...``), to keep them across exec."""
    orig = list(getattr(sys, "orig_argv", []))
    argv = list(sys.argv)
    if len(orig) > len(argv) and orig[len(orig) - len(argv) :] == argv:
        return orig[1 : len(orig) - len(argv)]
    return []


def _extract_own_archive() -> Path:
    manifest = read_manifest(_ARCHIVE)
    key = native_key()
    check_libc(manifest.native_for(key))
    return extract_app(_ARCHIVE, select_cache_dir(), key)


def ensure_native() -> Path | None:
    """Make ``import gevent`` work in this process; returns the extracted dir, or None if not zipped.

    For a process running from the archive that needs gevent in place (the daemon re-executes
    instead). The extracted copy goes at the end of ``sys.path`` so koku itself keeps coming from the
    archive. Raises BootstrapError.
    """
    if _ARCHIVE is None:
        return None
    app = _extract_own_archive()
    if str(app) not in sys.path:
        sys.path.append(str(app))
    return app


def prepare_daemon(execv: Callable[[str, list[str], Mapping[str, str]], Any] | None = None) -> None:
    """Call before importing gevent in a daemon process.

    From a ``.pyz``: extracts the whole application for this interpreter and re-executes the
    interpreter on that copy with the same arguments (never returns). In the copy, or in a normal
    install: returns once gevent can be imported. Raises BootstrapError otherwise.
    """
    expected = os.environ.pop(ENV_EXTRACTED, None)
    if _ARCHIVE is not None:
        app = _extract_own_archive()
        if expected == str(app):
            # We were exec'd onto `app` and still import koku from the archive: stop, do not loop.
            raise BootstrapError(
                f"re-executed koku on {app}, but it still runs from {_ARCHIVE}; "
                f"remove {app} and try again"
            )
        if not sys.executable:
            raise BootstrapError("cannot re-execute koku: the interpreter's path (sys.executable) is unknown")
        options = _interpreter_options()
        if "-I" not in options:
            options.insert(0, "-I")  # see program_argv: the daemon never imports from the cwd or $PYTHONPATH
        argv = [sys.executable, *options, str(app), *sys.argv[1:]]
        env = dict(os.environ)
        env[ENV_EXTRACTED] = str(app)
        sys.stdout.flush()
        sys.stderr.flush()
        (execv or os.execve)(sys.executable, argv, env)
        return
    import importlib.util

    missing = [name for name in NATIVE_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise BootstrapError(
            f"the daemon needs {' and '.join(missing)}, which this Python cannot import "
            f"({sys.executable}); install koku's dependencies or run koku.pyz"
        )
    try:
        import greenlet  # noqa: F401  (the native part most likely not to load)
    except ImportError as exc:
        raise BootstrapError(f"gevent's native code does not load on this system: {exc}") from None


def describe_native() -> str:
    """Which native build the daemon would use, for ``--version``; extracts and imports nothing."""
    if _ARCHIVE is not None:
        try:
            manifest = read_manifest(_ARCHIVE)
        except BootstrapError as exc:
            return f"native: unknown ({exc})"
        key = native_key()
        if key not in manifest.natives:
            have = ", ".join(sorted(manifest.natives)) or "none"
            return f"native: none for {key}; this file has {have}"
        where = find_extracted(manifest, key)
        state = f"extracted in {where}" if where else "not extracted yet"
        return f"native: gevent {manifest.gevent_version()} for {key}, {state}"
    app = extracted_app_dir()
    if app is not None:
        try:
            with open(os.path.join(app, MANIFEST), "rb") as fh:
                manifest = _parse_manifest(fh.read(), str(app))
        except (OSError, BootstrapError) as exc:
            return f"native: unknown ({exc})"
        return f"native: gevent {manifest.gevent_version()} for {native_key()}, extracted in {app}"
    from importlib import metadata

    try:
        version = metadata.version("gevent")
    except metadata.PackageNotFoundError:
        return "native: gevent not installed"
    return f"native: gevent {version} installed for {native_key()}"
