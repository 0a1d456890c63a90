"""The three daemons under test, each with its jobs, in its own temp directory.

The same list of ``Job``s becomes koku's TOML, yacron's YAML (one main file holding the control socket
and an ``include`` list of files of 50 jobs: a single yacron file takes quadratic time to parse, see
results.md) and a system crontab for Debian's cron. Every job runs in UTC in all three.

koku runs as ``ku daemon run`` in a temp HOME with XDG_* set; yacron as ``yacron -c main.yaml`` with
its REST API on a Unix socket; Debian's cron as ``cron -f`` inside a private mount namespace whose
/etc/crontab, /etc/cron.d, spool and /run are the benchmark's own, so the machine's crontabs never run
and a system cron (if any) is not disturbed.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from bench import procs

YACRON_CHUNK = 50  # jobs per included yacron file


class Kind(str, Enum):
    KOKU = "koku"
    YACRON = "yacron"
    CRON = "cron"


@dataclass(frozen=True)
class Job:
    name: str
    cron: str  # 5 fields; 6 fields (seconds first) for koku only
    command: str


@dataclass(frozen=True)
class Tools:
    """How to run each program; ``None`` where it is unavailable (``why`` says why)."""

    ku: list[str]
    yacron: list[str] | None
    cron: str | None
    why: dict[str, str] = field(default_factory=dict)

    def has(self, kind: Kind) -> bool:
        return {Kind.KOKU: True, Kind.YACRON: self.yacron is not None, Kind.CRON: self.cron is not None}[kind]


def stamp_command(label: str, out: Path) -> str:
    """A command that appends ``label <epoch seconds with ns>`` to ``out`` the moment it starts."""
    return f"date +'{label} %s.%N' >> {out}"


def read_stamps(path: Path) -> list[tuple[str, float]]:
    try:
        text = path.read_text()
    except OSError:
        return []
    stamps = []
    for line in text.splitlines():
        label, _, value = line.rpartition(" ")
        try:
            stamps.append((label, float(value)))
        except ValueError:
            continue  # a line cut short by a concurrent append
    return stamps


def _base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOKU_", "XDG_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_STATE_HOME=str(home / ".local/state"),
               XDG_CACHE_HOME=str(home / ".cache"), TZ="UTC", PYTHONDONTWRITEBYTECODE="1")
    env["PATH"] = env.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
    return env


class Daemon:
    kind: Kind

    def __init__(self, tools: Tools, root: Path, label: str, jobs: list[Job]):
        self.tools = tools
        self.label = label
        self.jobs = jobs
        self.root = root / label
        self.home = self.root / "home"
        self.home.mkdir(parents=True)
        self.stamps = self.root / "stamps.txt"
        self.log = self.root / "daemon.log"
        self.env = _base_env(self.home)
        self.proc: procs.Owned | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def argv(self) -> list[str]:
        raise NotImplementedError

    def write_config(self) -> None:
        raise NotImplementedError

    def answers(self) -> bool:
        raise NotImplementedError

    def start(self) -> Daemon:
        self.write_config()
        self.proc = procs.spawn(self.label, self.argv(), self.env, self.root, self.log)
        return self

    def ready(self, timeout: float) -> bool:
        """Wait until the daemon serves (or, for cron, has read its crontab); False if it died or timed out."""
        proc = self.proc
        assert proc is not None
        return procs.wait_until(lambda: not proc.running() or self.answers(), timeout, 0.1) and proc.running()

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        procs.kill_leftovers(str(self.root))


class Koku(Daemon):
    kind = Kind.KOKU

    @property
    def config(self) -> Path:
        return self.home / ".config/koku/config.toml"

    @property
    def socket(self) -> Path:
        return self.home / ".local/state/koku/daemon.sock"

    def argv(self) -> list[str]:
        return self.tools.ku + ["daemon", "run", "--config", str(self.config)]

    def write_config(self) -> None:
        self.config.parent.mkdir(parents=True, exist_ok=True)
        parts = ['[defaults]\ntz = "UTC"\n']
        for job in self.jobs:
            parts.append(f"[[job]]\nname = {json.dumps(job.name)}\ncron = {json.dumps(job.cron)}\n"
                         f"command = {json.dumps(job.command)}\n")
        self.config.write_text("\n".join(parts))

    def request(self, value: Any, timeout: float = 30.0) -> Any:
        """One request on the control socket: JSON + newline out, one line back."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.socket))
            sock.sendall(json.dumps(value).encode() + b"\n")
            buf = bytearray()
            while not buf.endswith(b"\n"):
                chunk = sock.recv(1 << 16)
                if not chunk:
                    raise ConnectionError(f"{self.label}: connection closed mid-answer")
                buf += chunk
        return json.loads(buf)

    def answers(self) -> bool:
        try:
            return self.request("DaemonStatus", 2.0)["DaemonStatus"]["pid"] == self.pid
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def runs(self) -> int:
        """Runs started so far, over all jobs."""
        return sum(job["runs"] for job in self.request("Status")["Status"])


def http_unix(path: Path, method: str, target: str, timeout: float = 30.0) -> tuple[int, bytes]:
    """One HTTP/1.1 request over a Unix socket (Connection: close); returns (status, body)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
                     f"Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
        buf = bytearray()
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            buf += chunk
    head, _, body = bytes(buf).partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise ConnectionError(f"not an HTTP answer from {path}: {head[:100]!r}") from None
    return status, body


class Yacron(Daemon):
    kind = Kind.YACRON

    @property
    def config(self) -> Path:
        return self.root / "yacron.yaml"

    @property
    def socket(self) -> Path:
        return self.root / "yacron.sock"

    def argv(self) -> list[str]:
        assert self.tools.yacron is not None
        return self.tools.yacron + ["-c", str(self.config)]

    def write_config(self) -> None:
        parts = self.root / "parts"
        parts.mkdir()
        includes = []
        for start in range(0, len(self.jobs), YACRON_CHUNK):
            name = f"parts/jobs{start // YACRON_CHUNK:05d}.yaml"
            lines = ["defaults:", "  utc: true", "jobs:"]
            for job in self.jobs[start:start + YACRON_CHUNK]:
                lines += [f"  - name: {job.name}", f"    command: {json.dumps(job.command)}",
                          f"    schedule: {json.dumps(job.cron)}"]
            (self.root / name).write_text("\n".join(lines) + "\n")
            includes.append(name)
        main = ["web:", "  listen:", f"    - unix://{self.socket}"]
        if includes:
            main += ["include:"] + [f"  - {name}" for name in includes]
        self.config.write_text("\n".join(main) + "\n")

    def get(self, target: str, timeout: float = 30.0) -> tuple[int, bytes]:
        return http_unix(self.socket, "GET", target, timeout)

    def post(self, target: str, timeout: float = 30.0) -> tuple[int, bytes]:
        return http_unix(self.socket, "POST", target, timeout)

    def answers(self) -> bool:
        try:
            return self.get("/version", 2.0)[0] == 200
        except OSError:
            return False

    def running_jobs(self) -> int:
        status, body = self.get("/status")
        return sum(1 for job in json.loads(body) if job.get("status") == "running") if status == 200 else -1


class Cron(Daemon):
    kind = Kind.CRON

    def argv(self) -> list[str]:
        assert self.tools.cron is not None
        r = self.root
        binds = [(r / "crontab", "/etc/crontab"), (r / "cron.d", "/etc/cron.d"),
                 (r / "spool", "/var/spool/cron/crontabs"), (r / "run", "/run")]
        mounts = " && ".join(f"mount --bind {src} {dst}" for src, dst in binds)
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                f"{mounts} && exec {self.tools.cron} -f"]

    def write_config(self) -> None:
        for sub in ("cron.d", "spool", "run"):
            (self.root / sub).mkdir()
        lines = ["SHELL=/bin/sh", "PATH=/usr/bin:/bin"]
        for job in self.jobs:
            # crontab(5): an unescaped % ends the command; output is thrown away so no mail is sent.
            lines.append(f"{job.cron} root {{ {job.command.replace('%', chr(92) + '%')} ; }} >/dev/null 2>&1")
        crontab = self.root / "crontab"
        crontab.write_text("\n".join(lines) + "\n")
        os.chmod(crontab, 0o644)

    def answers(self) -> bool:
        # cron has no control channel: it is ready once it has exec'd and written its pid file.
        try:
            with open(f"/proc/{self.pid}/comm") as fh:
                return fh.read().strip() == "cron" and (self.root / "run/crond.pid").exists()
        except OSError:
            return False


DAEMONS: dict[Kind, type[Daemon]] = {Kind.KOKU: Koku, Kind.YACRON: Yacron, Kind.CRON: Cron}


def make(kind: Kind, tools: Tools, root: Path, label: str, jobs: list[Job]) -> Daemon:
    return DAEMONS[kind](tools, root, label, jobs)


def start_all(daemons: list[Daemon], timeout: float) -> dict[str, str]:
    """Start every daemon, wait for all; returns {label: problem} for those that did not come up."""
    for d in daemons:
        d.start()
    problems = {}
    deadline = time.monotonic() + timeout
    for d in daemons:
        if not d.ready(max(0.1, deadline - time.monotonic())):
            problems[d.label] = f"not ready after {timeout:.0f}s: {d.log_tail()}"
    return problems
