"""Unpacking koku.pyz into a cache dir: the daemon's whole copy (``extract_app``) and lazily imported
packages (``extract_lazy``). Each is filled under a temp name and renamed into place, so a crash or a
concurrent start never leaves a half-written copy that looks complete.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from koku.errors import BootstrapError
from koku.zipapp.layout import LAZY_DIR, MANIFEST, NATIVE_DIR, Manifest, _parse_manifest, native_key, read_manifest


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
        lock = os.open(cache_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)  # checked: never a symlink
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
