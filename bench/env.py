"""Setting up what the benchmark runs: koku's venv (koku from this checkout, plus matplotlib for the
chart), a separate venv for yacron (its dependencies must not enter koku's), Debian's cron; and what
results.md says about the machine and the versions.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from bench.daemons import Kind, Tools

REPO = Path(__file__).resolve().parent.parent


class SetupError(Exception):
    pass


def _pip_venv(path: Path, packages: list[str], stamp: str, log) -> Path:
    """A venv at ``path`` with ``packages`` installed; reused while its stamp matches. Returns its python."""
    python = path / "bin/python"
    marker = path / ".bench-stamp"
    if python.exists() and marker.exists() and marker.read_text() == stamp:
        return python
    log(f"creating {path} ({' '.join(packages)})")
    if path.exists():
        shutil.rmtree(path)
    steps = [[sys.executable, "-m", "venv", str(path)],
             [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages]]
    for argv in steps:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        if res.returncode != 0:
            tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-5:])
            raise SetupError(f"{' '.join(argv[:4])} failed: {tail}")
    marker.write_text(stamp)
    return python


def koku_python(work: Path, given: str | None, log) -> Path:
    """The Python that runs koku: ``given``, else a venv under ``work`` with this checkout installed."""
    if given:
        return Path(os.path.abspath(given))  # not resolve(): a venv's python is a symlink out of it
    stamp = "koku+matplotlib " + hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    return _pip_venv(work / "venv-koku", ["-e", str(REPO), "matplotlib"], stamp, log)


def ku_argv(python: Path) -> list[str]:
    script = python.parent / "ku"
    return [str(script)] if script.exists() else [str(python), "-m", "koku"]


def yacron_argv(work: Path, log) -> list[str]:
    python = _pip_venv(work / "venv-yacron", ["yacron"], "yacron", log)
    return [str(python.parent / "yacron")]


def _cron_binary() -> str | None:
    return shutil.which("cron", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def cron_binary(install: bool, log) -> tuple[str | None, str]:
    """Debian's cron, installed with apt-get when ``install`` and missing; (path or None, why not)."""
    if os.geteuid() != 0:
        return None, "needs root (it runs in a private mount namespace with its own crontab)"
    if shutil.which("unshare") is None:
        return None, "unshare(1) not found"
    found = _cron_binary()
    if found or not install:
        return found, "" if found else "not installed (apt-get install cron)"
    if shutil.which("apt-get") is None:
        return None, "not installed and no apt-get here"
    log("installing Debian's cron with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "install", "-y", "-q", "cron"], ["apt-get", "update", "-q"],
                 ["apt-get", "install", "-y", "-q", "cron"]):
        subprocess.run(argv, env=env, capture_output=True, timeout=600)
        if _cron_binary():
            break
    found = _cron_binary()
    return found, "" if found else "apt-get install cron failed"


def tools(work: Path, given_python: str | None, want_yacron: bool, want_cron: bool, install_cron: bool,
          log) -> tuple[Tools, Path]:
    python = koku_python(work, given_python, log)
    why: dict[str, str] = {}
    yacron = None
    if want_yacron:
        try:
            yacron = yacron_argv(work, log)
        except (SetupError, OSError, subprocess.SubprocessError) as exc:
            why[Kind.YACRON.value] = f"unavailable: pip install yacron failed ({exc})"
    else:
        why[Kind.YACRON.value] = "skipped (--no-yacron)"
    cron = None
    if want_cron:
        cron, reason = cron_binary(install_cron, log)
        if cron is None:
            why[Kind.CRON.value] = f"unavailable: {reason}"
    else:
        why[Kind.CRON.value] = "skipped (--no-cron)"
    return Tools(ku=ku_argv(python), yacron=yacron, cron=cron, why=why), python


def _output(argv: list[str]) -> str:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (res.stdout or res.stderr).strip().splitlines()[0] if (res.stdout or res.stderr).strip() else "?"


def machine() -> str:
    model = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "?")
        with open("/proc/meminfo") as fh:
            mem_kb = int(next(line for line in fh if line.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration, ValueError):
        mem_kb = 0
    return (f"{model}, {os.cpu_count()} cores, {mem_kb / 1024 / 1024:.0f} GiB, "
            f"{platform.system()} {platform.release()}")


def versions(t: Tools, python: Path) -> dict[str, str]:
    out = {"koku": _output(t.ku + ["--version"]).removeprefix("koku "),
           "koku's Python": _output([str(python), "--version"]).removeprefix("Python ")}
    gev = _output([str(python), "-c", "import gevent; print(gevent.__version__)"]).split()
    if gev:
        out["gevent"] = gev[0]
    if t.yacron:
        yac_python = str(Path(t.yacron[0]).parent / "python")
        out["yacron"] = _output(t.yacron + ["--version"])
        out["yacron's Python"] = _output([yac_python, "--version"]).removeprefix("Python ")
    if t.cron:
        out["cron (Debian)"] = _output(["dpkg-query", "-W", "-f=${Version}", "cron"])
    return out
