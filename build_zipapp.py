#!/usr/bin/env python3
"""Build dist/koku.pyz: koku and every dependency in one executable file.

    python build_zipapp.py              # all targets (every Python x arch x libc below)
    python build_zipapp.py --current    # only the running interpreter's native build (fast)
    python build_zipapp.py --output /tmp/koku.pyz --wheels build/wheels

Any CPython 3.10+ with pip runs it, from a fresh clone: every dependency, pure and native, is pinned
below and fetched as a wheel with ``pip download`` into ``--wheels`` (default build/wheels) once; later
builds read them from there without the network. Nothing the running interpreter has installed goes
in, so the file is the same, byte for byte, whichever interpreter builds it
(tests/test_zipapp.py::test_builds_by_the_oldest_and_newest_cpython_are_identical_and_run_on_each_other).

Layout of the archive (see koku/zipapp/bootstrap.py for how it is used):
    __main__.py, koku/, croniter/, ...    pure Python, imported straight from the archive
    _py/cp310/...                         replacements for Pythons the pinned versions do not support
    _native/cpython-311-x86_64-linux-gnu.zip   gevent and greenlet for one interpreter, a nested archive
    _lazy/tzdata.zip                      packages imported only on some systems, nested (see LAZY_PACKAGES)
    _koku_build.json                      build id (hash of all members), versions, native builds

Every start of koku.pyz pays for reading the archive's central directory, in pure Python, at about
10-20 us per entry: that is why the thousands of files of the native builds and of tzdata sit in
nested archives (one entry each, stored uncompressed around their own deflated members) instead of
at the root.

Two builds from the same inputs are byte-identical: sorted members, fixed timestamps and modes, in
the nested archives too.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # koku.zipapp.layout: the archive's layout, shared with the bootstrap

from koku.zipapp.layout import LAZY_DIR, MANIFEST, NATIVE_DIR, native_key  # noqa: E402
SHEBANG = b"#!/usr/bin/env python3\n"

# The native code, pinned in this one place: the newest versions with wheels for every target below.
# (gevent 26.x has no wheel for CPython 3.10 on aarch64 glibc.) pyproject.toml pins the same (tests/test_pins.py).
NATIVE_PINS = {"gevent": "25.9.1", "greenlet": "3.5.6"}
PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")
ARCHES = ("x86_64", "aarch64")
LIBCS = ("glibc", "musl")
# Newest C library a native wheel may need: manylinux_2_28 runs on RHEL 8, Debian 10, Ubuntu 20.04.
GLIBC_TAGS = tuple(f"manylinux_2_{minor}" for minor in range(28, 16, -1)) + ("manylinux2014",)
MUSL_TAGS = ("musllinux_1_2", "musllinux_1_1")

# Pure-Python dependencies (koku's and gevent's), pinned: the build never looks at what the running
# interpreter has installed. tests/test_zipapp.py checks that each satisfies pyproject.toml.
PURE_PINS = {
    "croniter": "7.0.0",
    "python-dateutil": "4.0.0",
    "tzdata": "2026.6",
    "docopt-ng": "0.9.0",
    "prettytable": "3.18.0",
    "wcwidth": "0.9.4",
    "tomli-w": "1.2.0",
    "prometheus_client": "0.26.0",
    "zope.event": "6.2",
    "zope.interface": "8.7",
}
PURE_DISTS = tuple(PURE_PINS)
# These ship optional C speedups in platform wheels; without the .so they run in pure-Python mode.
STRIP_NATIVE = {"wcwidth", "zope.interface"}
# Where PURE_PINS need a newer Python than a target, that Python gets its own layer, first on
# its sys.path (the generated __main__.py does it). tomli is only ever needed on 3.10.
LAYER_PINS = {
    "3.10": {"python-dateutil": "3.0.0", "six": "1.17.0", "zope.interface": "8.6", "tomli": "2.4.1"},
}
# Platform wheels of pure dists (see STRIP_NATIVE) are taken from this one target, for reproducibility.
PURE_PLATFORMS = ("any", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_5_x86_64")
PURE_PYTHON = "3.12"

SKIP_DIRS = {"__pycache__", "tests", "test", "testing"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".c", ".cpp", ".h", ".hpp", ".pyx", ".pxd", ".pxi", ".asm", ".obj", ".cmd")
# Install-time bookkeeping that would describe files we left out, or a platform wheel we stripped.
SKIP_DIST_INFO = {"RECORD", "WHEEL", "INSTALLER", "REQUESTED", "direct_url.json"}
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
# Top-level packages kept out of the root as one nested archive each: koku.zipapp.zipcache unpacks one into
# the cache on its first import, and the daemon's extracted copy has them unpacked at its root.
# tzdata: zoneinfo imports it only when the system has no tz database (or lacks a zone); its 649
# files would otherwise cost every start about 8 ms. Its dist-info (licence) stays at the root.
LAZY_PACKAGES = ("tzdata",)

MAIN_TEMPLATE = '''\
# Generated by build_zipapp.py: the entry of koku.pyz and of its extracted copies.
import os
import sys

_LAYERS = {layers!r}
_layer = _LAYERS.get("%d.%d" % sys.version_info[:2])
if _layer:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), *_layer.split("/")))

if os.path.isfile(os.path.dirname(os.path.abspath(__file__))):  # the .pyz itself, not an extracted copy
    import koku.zipapp.zipcache

    koku.zipapp.zipcache.install(os.path.dirname(os.path.abspath(__file__)))

from koku.__main__ import main

sys.exit(main())
'''


class BuildError(Exception):
    pass


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


@dataclass(frozen=True)
class Target:
    python: str  # "3.12"
    arch: str  # "x86_64" | "aarch64"
    libc: str  # "glibc" | "musl"

    @property
    def key(self) -> str:
        """The folder name; koku.zipapp.bootstrap.native_key() computes the same at run time."""
        return f"cpython-{self.python.replace('.', '')}-{self.arch}-linux-{'musl' if self.libc == 'musl' else 'gnu'}"

    @property
    def platforms(self) -> list[str]:
        tags = MUSL_TAGS if self.libc == "musl" else GLIBC_TAGS
        return [f"{tag}_{self.arch}" for tag in tags]

    @classmethod
    def from_key(cls, key: str) -> Target:
        match = re.fullmatch(r"cpython-3(\d+)-(x86_64|aarch64)-linux-(gnu|musl)", key)
        if not match:
            raise BuildError(f"no native build for {key}: supported are CPython on Linux x86_64/aarch64")
        python = f"3.{match[1]}"
        if python not in PYTHONS:
            raise BuildError(f"no native build for {key}: supported Pythons are {', '.join(PYTHONS)}")
        return cls(python, match[2], "musl" if match[3] == "musl" else "glibc")


ALL_TARGETS = tuple(Target(p, a, l) for p in PYTHONS for a in ARCHES for l in LIBCS)


def current_target() -> Target:
    return Target.from_key(native_key())


# -- Requires-Python ---------------------------------------------------------------------------------


def _vtuple(text: str) -> tuple[int, ...]:
    return tuple(int(re.match(r"\d*", part)[0] or 0) for part in text.split("."))


def python_satisfies(spec: str, python: str) -> bool:
    """Whether Python ``python`` ("3.10", taken as 3.10.0) meets a Requires-Python ``spec``."""
    have = _vtuple(python) + (0,)
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        match = re.fullmatch(r"(~=|===|==|!=|<=|>=|<|>)\s*([\d.]+)(\.\*)?", clause)
        if not match:
            raise BuildError(f"cannot read Requires-Python clause {clause!r}")
        op, version, wildcard = match[1], _vtuple(match[2]), match[3]
        width = max(len(have), len(version))
        a, b = have + (0,) * (width - len(have)), version + (0,) * (width - len(version))
        if wildcard:
            same = have[: len(version)] == version
            ok = same if op == "==" else not same
        elif op == "~=":
            ok = a >= b and have[: len(version) - 1] == version[:-1]
        else:
            ok = {"==": a == b, "===": a == b, "!=": a != b, "<=": a <= b, ">=": a >= b, "<": a < b, ">": a > b}[op]
        if not ok:
            return False
    return True


# -- wheels ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wheel:
    path: Path
    name: str  # project name as pinned
    version: str

    def requires_python(self) -> str:
        with zipfile.ZipFile(self.path) as zf:
            meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
            for line in zf.read(meta).decode("utf-8", "replace").splitlines():
                if not line.strip():
                    break
                if line.lower().startswith("requires-python:"):
                    return line.split(":", 1)[1].strip()
        return ""

    def requires_dist(self) -> list[str]:
        with zipfile.ZipFile(self.path) as zf:
            meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
            text = zf.read(meta).decode("utf-8", "replace").split("\n\n", 1)[0]
        return [line.split(":", 1)[1].strip() for line in text.splitlines()
                if line.lower().startswith("requires-dist:")]

    def platform_tags(self) -> list[str]:
        return self.path.name[:-4].split("-")[-1].split(".")


def fetch(wheels_dir: Path, group: str, pins: dict[str, str], python: str, platforms: Iterable[str],
          verbose: bool) -> list[Wheel]:
    """The wheels for ``pins``, from ``wheels_dir/group`` or else downloaded there with pip."""
    folder = wheels_dir / group

    def cached(name: str, version: str) -> Path | None:
        hits = sorted(folder.glob(f"{norm(name)}-{version}-*.whl")) if folder.is_dir() else []
        return hits[0] if hits else None

    missing = [f"{name}=={version}" for name, version in pins.items() if cached(name, version) is None]
    if missing:
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
               "--only-binary=:all:", "--no-deps", "--python-version", python, "--implementation", "cp",
               "--dest", str(folder)]
        for platform in platforms:
            cmd += ["--platform", platform]
        cmd += missing
        if verbose:
            print("+", " ".join(cmd), file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"pip download failed for {group}: {' '.join(missing)}\n{proc.stderr.strip()}")
    wheels = []
    for name, version in pins.items():
        path = cached(name, version)
        if path is None:
            raise BuildError(f"pip did not save a wheel for {name}=={version} in {folder}")
        wheels.append(Wheel(path, name, version))
    return wheels


def _skip(path: str, strip_native: bool) -> bool:
    parts = path.split("/")
    if any(part in SKIP_DIRS for part in parts[:-1]):
        return True
    if parts[-1].endswith(SKIP_SUFFIXES) or (strip_native and parts[-1].endswith(".so")):
        return True
    return len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] in SKIP_DIST_INFO


def wheel_members(wheel: Wheel, strip_native: bool = False) -> Iterator[tuple[str, bytes]]:
    """(path in site-packages, bytes) for what koku needs from a wheel."""
    with zipfile.ZipFile(wheel.path) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            name = info.filename
            parts = name.split("/")
            if parts[0].endswith(".data"):
                # Only library code from the data dir; headers and scripts have no place here.
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue
                name = "/".join(parts[2:])
            if not _skip(name, strip_native):
                yield name, zf.read(info)


def min_libc(wheels: list[Wheel], libc: str) -> str:
    """The newest C library any of ``wheels`` demands, e.g. "2.28" (glibc) or "1.2" (musl)."""
    legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
    need = (0, 0)
    for wheel in wheels:
        floor = None
        for tag in wheel.platform_tags():
            match = re.match(r"(?:manylinux|musllinux)_(\d+)_(\d+)_", tag)
            version = (int(match[1]), int(match[2])) if match else next(
                (v for k, v in legacy.items() if tag.startswith(k + "_")), None)
            if version and (floor is None or version < floor):
                floor = version
        need = max(need, floor or (0, 0))
    if need == (0, 0):
        raise BuildError(f"cannot tell which {libc} version {[w.path.name for w in wheels]} need")
    return f"{need[0]}.{need[1]}"


# -- what goes in -------------------------------------------------------------------------------------


def _requirement_class() -> Any:
    try:
        from packaging.requirements import Requirement
    except ImportError:  # a bare interpreter: pip's own copy (pip is needed for the download anyway)
        from pip._vendor.packaging.requirements import Requirement
    return Requirement


def pyproject_dependencies() -> list[str]:
    """The ``dependencies`` array of pyproject.toml, read without tomllib (3.10 has none)."""
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r"^dependencies\s*=\s*(\[.*?^\])", text, re.M | re.S)
    if not match:
        raise BuildError("pyproject.toml has no [project] dependencies array")
    return ast.literal_eval(re.sub(r"#[^\n]*", "", match.group(1)))


def check_dependencies_covered(wheels: Iterable[Wheel]) -> None:
    """Fail when koku (or a dependency, by the Requires-Dist of the wheels fetched) needs a distribution
    this script does not bundle, or when a pin does not satisfy pyproject.toml."""
    Requirement = _requirement_class()
    requires = {norm(w.name): w.requires_dist() for w in wheels}
    pinned = {norm(n): v for n, v in (*PURE_PINS.items(), *NATIVE_PINS.items())}
    covered = set(pinned) | {norm(n) for layer in LAYER_PINS.values() for n in layer}
    environments = [
        {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix", "extra": "",
         "platform_python_implementation": "CPython", "implementation_name": "cpython",
         "python_version": python, "python_full_version": f"{python}.0", "platform_machine": arch}
        for python in PYTHONS for arch in ARCHES
    ]
    todo = pyproject_dependencies()
    for text in todo:
        req = Requirement(text)
        if norm(req.name) in pinned and not req.specifier.contains(pinned[norm(req.name)], prereleases=True):
            raise BuildError(f"{req.name}=={pinned[norm(req.name)]} in build_zipapp.py does not satisfy "
                             f"pyproject.toml's {text!r}")
    seen: set[str] = set()
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not any(req.marker.evaluate(env) for env in environments):
            continue
        name = norm(req.name)
        if name in seen:
            continue
        seen.add(name)
        if name not in covered:
            raise BuildError(f"dependency {name!r} (from {req!r}) is not bundled: add it to PURE_PINS or "
                             f"NATIVE_PINS in build_zipapp.py")
        todo.extend(requires.get(name, []))  # a layer-only dist (tomli): its deps are in LAYER_PINS


def koku_members() -> Iterator[tuple[str, bytes]]:
    for path in sorted((ROOT / "koku").rglob("*")):
        rel = path.relative_to(ROOT).as_posix()
        if path.is_file() and (path.suffix == ".py" or path.name == "py.typed") and not _skip(rel, False):
            yield rel, path.read_bytes()


def koku_version() -> str:
    text = (ROOT / "koku" / "__init__.py").read_text()
    return re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.M)[1]


@dataclass
class Contents:
    files: dict[str, bytes] = field(default_factory=dict)

    def add(self, name: str, data: bytes, origin: str) -> None:
        if name in self.files and self.files[name] != data:
            raise BuildError(f"{name} comes from two places with different contents (second: {origin})")
        self.files[name] = data

    def names_with_dirs(self) -> list[str]:
        names = set(self.files)
        for name in self.files:
            parts = name.split("/")[:-1]
            # zipimport finds namespace packages (zope/) only through explicit directory entries.
            names.update("/".join(parts[: i + 1]) + "/" for i in range(len(parts)))
        return sorted(names)


def gather(targets: list[Target], wheels_dir: Path, verbose: bool) -> tuple[Contents, dict]:
    contents = Contents()
    for name, data in koku_members():
        contents.add(name, data, "koku")
    layers = {python: f"_py/cp{python.replace('.', '')}" for python in LAYER_PINS}
    contents.add("__main__.py", MAIN_TEMPLATE.format(layers=layers).encode(), "generated")

    root = fetch(wheels_dir, f"pure-{PURE_PYTHON}", PURE_PINS, PURE_PYTHON, PURE_PLATFORMS, verbose)
    layer_wheels = {python: fetch(wheels_dir, f"layer-{python}", pins, python, PURE_PLATFORMS, verbose)
                    for python, pins in LAYER_PINS.items()}
    for python in PYTHONS:
        replaced = set(LAYER_PINS.get(python, {}))
        for wheel in root + layer_wheels.get(python, []):
            spec = wheel.requires_python()
            in_layer = wheel not in root
            if (in_layer or wheel.name not in replaced) and not python_satisfies(spec, python):
                where = f"LAYER_PINS[{python!r}]" if in_layer else "PURE_PINS"
                raise BuildError(f"{wheel.name} {wheel.version} (from {where}) needs Python {spec}, not {python}: "
                                 f"add a pin for it to LAYER_PINS[{python!r}] in build_zipapp.py")
    for wheel in root:
        for name, data in wheel_members(wheel, wheel.name in STRIP_NATIVE):
            contents.add(name, data, wheel.path.name)
    for python, wheels in layer_wheels.items():
        for wheel in wheels:
            for name, data in wheel_members(wheel, wheel.name in STRIP_NATIVE):
                contents.add(f"{layers[python]}/{name}", data, wheel.path.name)

    def natives_for(target: Target) -> list[Wheel]:
        group = f"native-{target.python}-{target.arch}-{target.libc}"
        return fetch(wheels_dir, group, NATIVE_PINS, target.python, target.platforms, verbose)

    with ThreadPoolExecutor(max_workers=4) as pool:
        fetched = list(pool.map(natives_for, targets))
    check_dependencies_covered(root + [w for wheels in fetched for w in wheels])
    natives = {}
    for target, wheels in zip(targets, fetched):
        native = Contents()
        for wheel in wheels:
            for name, data in wheel_members(wheel):
                native.add(name, data, wheel.path.name)
        contents.add(f"{NATIVE_DIR}/{target.key}.zip", nested_zip(native.files), target.key)
        natives[target.key] = {"libc": target.libc, "min_libc": min_libc(wheels, target.libc),
                               "wheels": [w.path.name for w in wheels]}
    for package in LAZY_PACKAGES:
        moved = {name: contents.files.pop(name) for name in sorted(contents.files)
                 if name.startswith(package + "/")}
        if not moved:
            raise BuildError(f"LAZY_PACKAGES names {package!r}, but no bundled distribution provides it")
        contents.add(f"{LAZY_DIR}/{package}.zip", nested_zip(moved), package)
    manifest = {"koku": koku_version(), "versions": dict(NATIVE_PINS), "natives": natives,
                "pure": {w.name: w.version for w in root},
                "layers": {p: {"path": layers[p], "pins": LAYER_PINS[p]} for p in LAYER_PINS}}
    return contents, manifest


def build_id(contents: Contents) -> str:
    digest = hashlib.sha256()
    for name in contents.names_with_dirs():
        data = contents.files.get(name, b"")
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def _member_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
    info.create_system = 3  # Unix, so the modes below mean what they say
    if name.endswith("/"):
        info.external_attr = (0o40755 << 16) | 0x10
    else:
        info.external_attr = 0o644 << 16
        # A nested archive is already deflated inside; deflating it again gains nothing.
        info.compress_type = zipfile.ZIP_STORED if name.endswith(".zip") else zipfile.ZIP_DEFLATED
    return info


def nested_zip(files: dict[str, bytes]) -> bytes:
    """An archive of ``files`` (path -> bytes) to store as one member: sorted, fixed times, no
    directory entries (nothing imports from it; extraction makes the directories)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name in sorted(files):
            zf.writestr(_member_info(name), files[name], compresslevel=9)
    return buffer.getvalue()


def write_archive(contents: Contents, manifest: dict, output: Path) -> None:
    manifest = {"build_id": build_id(contents), **manifest}
    contents.add(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n", "generated")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(SHEBANG)
            with zipfile.ZipFile(fh, "w") as zf:
                for name in contents.names_with_dirs():
                    zf.writestr(_member_info(name), contents.files.get(name, b""), compresslevel=9)
        os.chmod(tmp, 0o755)
        # A rename, so a daemon started from the old file never sees a half-written one.
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build koku.pyz, a self-contained koku.")
    parser.add_argument("--current", action="store_true", help="only the running interpreter's native build")
    parser.add_argument("--target", action="append", default=[], metavar="KEY",
                        help="a native build such as cpython-312-aarch64-linux-musl (repeatable)")
    parser.add_argument("--output", type=Path, default=ROOT / "dist" / "koku.pyz")
    parser.add_argument("--wheels", type=Path, default=ROOT / "build" / "wheels", help="wheel cache")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    try:
        targets = [Target.from_key(key) for key in args.target]
        if args.current:
            targets.append(current_target())
        targets = sorted(set(targets or ALL_TARGETS), key=lambda t: t.key)
        contents, manifest = gather(targets, args.wheels.resolve(), args.verbose)
        write_archive(contents, manifest, args.output)
    except BuildError as exc:
        print(f"build_zipapp: error: {exc}", file=sys.stderr)
        return 1
    size = args.output.stat().st_size
    print(f"{args.output}: {size / 1e6:.1f} MB, {len(contents.names_with_dirs())} entries, natives: "
          f"{', '.join(t.key for t in targets)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
