"""Build side only (build_zipapp.py; never imported at run time, and left out of koku.pyz): wheels
fetched with pip, which of their members go in, and the Requires-Python and C-library checks.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from koku.errors import BuildError

SKIP_DIRS = {"__pycache__", "tests", "test", "testing"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".c", ".cpp", ".h", ".hpp", ".pyx", ".pxd", ".pxi", ".asm", ".obj", ".cmd")
# Install-time bookkeeping that would describe files we left out, or a platform wheel we stripped.
SKIP_DIST_INFO = {"RECORD", "WHEEL", "INSTALLER", "REQUESTED", "direct_url.json"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


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
