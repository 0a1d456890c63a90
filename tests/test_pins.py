"""One gevent for the suite and for users: pyproject.toml pins exactly what koku.pyz ships."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

from conftest import load_build_module

REPO = Path(__file__).resolve().parent.parent


build_zipapp = load_build_module()

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def _pinned_dependencies() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9.]+)", dep.strip())
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


@pytest.mark.parametrize("name", sorted(build_zipapp.NATIVE_PINS))
def test_pyproject_pins_the_native_builds_koku_pyz_ships(name: str) -> None:
    assert _pinned_dependencies().get(name) == build_zipapp.NATIVE_PINS[name], (
        f"pyproject.toml must pin {name}=={build_zipapp.NATIVE_PINS[name]} (build_zipapp.NATIVE_PINS)")


@pytest.mark.parametrize("name", sorted(build_zipapp.NATIVE_PINS))
def test_the_suite_runs_the_pinned_native_build(name: str) -> None:
    # A venv made before the pin keeps its old gevent until reinstalled: say so instead of testing it.
    assert metadata.version(name) == build_zipapp.NATIVE_PINS[name], (
        f"installed {name} {metadata.version(name)} is not the pinned {build_zipapp.NATIVE_PINS[name]}: "
        "run pip install -e '.[test]' again")
