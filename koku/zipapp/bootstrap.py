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
from pathlib import Path
from typing import Any, Callable, Mapping

from koku.zipapp.cachedir import _ST_NOEXEC, CacheChoice, cache_candidates, check_cache_dir, select_cache_dir  # noqa: F401
from koku.errors import BootstrapError, KokuError  # noqa: F401
# Re-exported: callers (cli, zipcache, tests) reach the whole zipapp side through this module.
from koku.zipapp.extract import (_prune_dead_temp_dirs, _safe_relative, _unpacked_at_root, app_dir_name,  # noqa: F401
                                 extract_app, extract_lazy, lazy_dir_name)
from koku.zipapp.layout import (_ARCHIVE, _LOADER_ARCHIVE, LAZY_DIR, MANIFEST, NATIVE_DIR, Manifest, Native,  # noqa: F401
                                _parse_manifest, _version_tuple, check_libc, detect_libc, native_key, read_manifest)

# Set for the re-executed daemon; tells it which extracted copy it is supposed to be running from.
ENV_EXTRACTED = "KOKU_EXTRACTED_APP"
NATIVE_PACKAGES = ("gevent", "greenlet")

# -- where we run from -------------------------------------------------------------------------------


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
