"""The import hook of koku.pyz: a bytecode cache for its modules, and packages unpacked on demand.

Python writes no ``.pyc`` for modules it imports from a zip, so every ``ku status`` would compile koku,
docopt and prettytable from source again (about 150 ms). The archive's ``__main__.py`` installs this
finder first: modules found in the archive get their code from marshalled files under
``<cache dir>/pyc/<archive key>/``, written the first time each one is compiled. The key covers the
archive's path, size and mtime and the interpreter's cache tag, so a replaced ``koku.pyz`` or another
Python never reads stale code. Only bytecode is cached here; native code is never extracted for client
commands. The cache dir is chosen with the same checks as the daemon's (``koku.zipapp.cachedir``): code is
only ever loaded from a directory that we own and nobody else can write. Any failure to cache just
means compiling from source, as before.

The same finder answers the import of a top-level package the archive keeps as ``_lazy/<name>.zip``
(tzdata: see ``koku.zipapp.bootstrap`` for why): it is unpacked once into the cache dir and imported from
there. That import is rare, so it may use the heavy machinery; the common path here imports only
what the interpreter has already loaded to run a zip (no hashlib: its OpenSSL load costs ~5 ms).
"""

from __future__ import annotations

import _frozen_importlib_external  # always loaded; importlib.util would cost ~5 ms at every start
import importlib.machinery
import marshal
import os
import sys
import zipimport
from types import CodeType, ModuleType
from typing import Any

_HEADER = _frozen_importlib_external.MAGIC_NUMBER + b"koku-zip-cache\0\0"  # 4 + 16 bytes


class _CachedLoader:
    """Wraps the archive's zipimporter; code comes from the cache (if any), everything else from the archive."""

    def __init__(self, zip_loader: zipimport.zipimporter, cache: str | None):
        self._zip = zip_loader
        self._cache = cache

    def __getattr__(self, name: str) -> Any:
        # get_data, get_source, get_resource_reader, is_package, archive, prefix ...: as the archive has them
        return getattr(self._zip, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        exec(self.get_code(module.__spec__.name), module.__dict__)  # type: ignore[union-attr]

    def get_code(self, fullname: str) -> CodeType:
        if self._cache is None:
            return self._zip.get_code(fullname)
        path = os.path.join(self._cache, fullname + ".pyc")
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            if data[: len(_HEADER)] == _HEADER:
                return marshal.loads(memoryview(data)[len(_HEADER):])
        except (OSError, ValueError, EOFError, TypeError):
            pass
        code = self._zip.get_code(fullname)
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(_HEADER + marshal.dumps(code))
            os.replace(tmp, path)
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        return code


class _Finder:
    """Sits just before PathFinder and answers for modules in the archive itself.

    zipimport's own ``find_spec`` compiles a module just to learn its file name, which would undo the
    cache, so specs for archive members are made here from the archive's member list. Anything else
    (stdlib, namespace packages, an interpreter whose zipimport hides its member list) goes to
    PathFinder as usual. ``cache`` None: no bytecode cache, modules are compiled from the archive (once;
    zipimport alone compiles each twice). ``base`` None: no usable cache dir, so the lazy packages
    cannot be unpacked and are not found.
    """

    def __init__(self, archive: str, cache: str | None, base: str | None):
        self._archive = archive
        self._cache = cache
        self._base = base

    def _importer(self, entry: str) -> zipimport.zipimporter | None:
        importer = sys.path_importer_cache.get(entry)
        if not isinstance(importer, zipimport.zipimporter):
            try:
                importer = zipimport.zipimporter(entry)
            except zipimport.ZipImportError:
                return None
            sys.path_importer_cache[entry] = importer
        return importer

    @staticmethod
    def _files(importer: zipimport.zipimporter) -> dict[str, Any] | None:
        # Private, but present on every CPython koku supports; without it PathFinder does the work.
        files = importer._get_files() if hasattr(importer, "_get_files") else getattr(importer, "_files", None)
        return files if isinstance(files, dict) else None

    def _spec_in(self, entry: str, fullname: str, cache: str | None) -> importlib.machinery.ModuleSpec | None:
        importer = self._importer(entry)
        files = None if importer is None else self._files(importer)
        if files is None:
            return None
        prefix = entry[len(self._archive):].strip(os.sep)
        rel = os.path.join(prefix, fullname.rpartition(".")[2])
        if os.path.join(rel, "__init__.py") in files:
            origin, package = os.path.join(self._archive, rel, "__init__.py"), True
        elif rel + ".py" in files:
            origin, package = os.path.join(self._archive, rel + ".py"), False
        else:
            return None
        spec = importlib.machinery.ModuleSpec(fullname, _CachedLoader(importer, cache), origin=origin,
                                              is_package=package)
        spec.has_location = True
        if package:
            spec.submodule_search_locations = [os.path.join(self._archive, rel)]
        return spec

    def _lazy_spec(self, fullname: str) -> importlib.machinery.ModuleSpec | None:
        importer = self._importer(self._archive)
        files = None if importer is None else self._files(importer)
        if self._base is None or files is None or f"_lazy/{fullname}.zip" not in files:
            return None
        from koku.zipapp.bootstrap import extract_lazy
        from koku.errors import KokuError

        try:
            where = extract_lazy(self._archive, self._base, fullname)
        except KokuError as exc:
            # An ImportError, as if the package were not there: zoneinfo turns that into "zone not found".
            raise ImportError(f"cannot unpack {fullname} from {self._archive}: {exc}", name=fullname) from None
        return importlib.machinery.PathFinder.find_spec(fullname, [str(where)])

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        for entry in sys.path if path is None else path:
            if not (isinstance(entry, str) and (entry == self._archive or entry.startswith(self._archive + os.sep))):
                break  # the archive's entries come first; past them, the ordinary search decides
            spec = self._spec_in(entry, fullname, self._cache)
            if spec is not None:
                return spec
        if path is None and "." not in fullname:
            return self._lazy_spec(fullname)
        return None

    def invalidate_caches(self) -> None:
        pass


def _fnv1a64(text: str) -> int:
    # A stable hash of a short string with nothing to import; it only tells our own archives apart.
    value = 0xCBF29CE484222325
    for byte in text.encode("utf-8", "surrogateescape"):
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def _cache_base() -> str | None:
    """The first cache dir ``koku.zipapp.cachedir`` accepts (created), or None."""
    from koku.zipapp.cachedir import cache_candidates, check_cache_dir

    uid = os.getuid()
    return next((str(c.path) for c in cache_candidates(uid=uid) if check_cache_dir(c.path, uid, create=True) is None),
                None)


def _pyc_dir(base: str, archive: str) -> str | None:
    try:
        st = os.stat(archive)
    except OSError:
        return None
    where = f"{_fnv1a64(archive):016x}"
    what = f"{st.st_size:x}-{st.st_mtime_ns:x}-{sys.implementation.cache_tag}"
    root = os.path.join(base, "pyc")
    cache = os.path.join(root, f"{where}-{what}")
    if not os.path.isdir(cache):
        try:
            os.makedirs(cache, mode=0o700, exist_ok=True)
        except OSError:
            return None
        # This archive was replaced (or the interpreter changed): its old caches are dead weight.
        import shutil

        for name in os.listdir(root):
            if name.startswith(where + "-") and name != f"{where}-{what}":
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    return cache


def install(archive: str) -> None:
    """Serve ``archive``'s modules from a bytecode cache and its lazy packages from the cache dir, as far
    as a safe cache dir can be had. ``KOKU_NO_PYC_CACHE`` set: no bytecode cache."""
    archive = os.path.abspath(archive)
    # In place before the cache dir is known, so the modules that choose it are compiled once, not twice.
    finder = _Finder(archive, None, None)
    position = next((i for i, f in enumerate(sys.meta_path) if f is importlib.machinery.PathFinder), len(sys.meta_path))
    sys.meta_path.insert(position, finder)
    finder._base = _cache_base()
    if finder._base is not None and not os.environ.get("KOKU_NO_PYC_CACHE"):
        finder._cache = _pyc_dir(finder._base, archive)
