"""Shared fixtures: a temp home for the real `ku` command, and a check that no process outlives a test."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import pytest

BIN = Path(sys.executable).parent
KU = [str(BIN / "ku")] if (BIN / "ku").exists() else [sys.executable, "-m", "koku"]


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line or working directory mention ``text`` (our temp home).

    Its own /proc scan on purpose, not koku.core.procinfo's: the leftover-process check must not share
    a bug with the code it checks."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if text in cmdline or cwd.startswith(text):
            found.append(int(entry))
    return found


class KokuEnv:
    """A user's world in a temp dir: HOME, XDG dirs, config, and the real `ku` command."""

    def __init__(self, root: Path):
        self.root = root
        self.home = root / "home"
        self.home.mkdir()
        self.work = root / "work"  # where jobs write what the tests read
        self.work.mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("KOKU_", "XDG_"))}
        self.env.update(
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.home / ".config"),
            XDG_STATE_HOME=str(self.home / ".local/state"),
            XDG_CACHE_HOME=str(self.home / ".cache"),
            PYTHONDONTWRITEBYTECODE="1",
        )
        self.config = self.home / ".config/koku/config.toml"
        self.state = self.home / ".local/state/koku"
        self.daemon_pids: set[int] = set()

    def write_config(self, text: str) -> Path:
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(text)
        return self.config

    def ku(self, *args: str, timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(KU + list(args), env=self.env, capture_output=True, text=True, timeout=timeout,
                              input=input, cwd=self.work)

    def start(self) -> int:
        res = self.ku("daemon", "start")
        assert res.returncode == 0, res.stderr + res.stdout
        pid = self.daemon_pid()
        assert pid
        self.daemon_pids.add(pid)
        return pid

    def daemon_pid(self) -> int | None:
        try:
            return int((self.state / "daemon.pid").read_text())
        except (OSError, ValueError):
            return None

    def request(self, value: Any, timeout: float = 10) -> Any:
        """One request framed as muzan does: JSON + newline, read one line."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(str(self.state / "daemon.sock"))
            s.sendall(json.dumps(value).encode() + b"\n")
            return json.loads(read_line(s))

    def status(self, name: str) -> dict[str, Any]:
        jobs = self.request("Status")["Status"]
        return next(j for j in jobs if j["name"] == name)

    def daemon_log(self) -> str:
        try:
            return (self.state / "logs/daemon.log").read_text()
        except OSError:
            return ""


def read_line(s: socket.socket) -> bytes:
    """One answer line from the daemon, checked against docs/protocol.schema.json."""
    from schema import check_response

    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {buf[:200]!r}")
        buf += chunk
    for line in buf.splitlines():
        check_response(json.loads(line))
    return buf


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def kenv():
    # A short path: Unix socket paths must stay under 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="ku-", dir="/tmp"))
    env = KokuEnv(root)
    yield env
    leftovers = []
    pid = env.daemon_pid()
    if pid and alive(pid):
        env.ku("daemon", "stop", timeout=60)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
            leftovers.append(f"daemon {pid} survived `ku daemon stop`")
    for pid in env.daemon_pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
            leftovers.append(f"daemon {pid}")
    time.sleep(0.05)
    for pid in processes_mentioning(str(root)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        leftovers.append(f"process {pid}")
    shutil.rmtree(root, ignore_errors=True)
    assert not leftovers, f"processes left behind: {leftovers}"


# The fast lane (`pytest -m "not e2e and not slow"`, under a minute) must not start daemons: anything
# using the real `ku` and daemon (the kenv fixture) is e2e whether or not its author marked it.
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "kenv" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.e2e)


def load_build_module():
    """build_zipapp.py (a script, not a package) as the module ``build_zipapp``, loaded once."""
    import importlib.util

    if "build_zipapp" in sys.modules:
        return sys.modules["build_zipapp"]
    spec = importlib.util.spec_from_file_location("build_zipapp", Path(__file__).resolve().parent.parent / "build_zipapp.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_zipapp"] = module
    spec.loader.exec_module(module)
    return module
