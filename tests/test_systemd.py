"""packaging/koku.service works as written: its ExecStart line, with its paths moved into a temp dir,
starts a daemon that `ku` finds through packaging/koku.sh (issue 12, item 8)."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import KU, alive, wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "packaging" / "koku.service"
PROFILE = REPO / "packaging" / "koku.sh"


def unit_settings(text: str) -> dict[str, list[str]]:
    """Key -> values (Environment= may repeat), comments and section headers dropped."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key, []).append(value)
    return found


def test_unit_restarts_raises_fd_limit_and_agrees_with_the_profile_and_readme():
    unit = unit_settings(UNIT.read_text())
    assert unit["Restart"][0] in ("on-failure", "always", "on-abnormal")
    assert int(unit["LimitNOFILE"][0]) >= 4096
    assert unit["StateDirectory"] == ["koku"] and unit["CacheDirectory"] == ["koku"]
    env = dict(v.split("=", 1) for v in unit["Environment"])
    assert env["KOKU_STATE_DIR"] == "/var/lib/koku"  # what StateDirectory=koku creates
    profile = dict(line.removeprefix("export ").split("=", 1) for line in PROFILE.read_text().splitlines()
                   if line.startswith("export "))
    assert profile == {k: env[k] for k in ("KOKU_CONFIG", "KOKU_STATE_DIR")}
    program = shlex.split(unit["ExecStart"][0])[0]
    readme = (REPO / "README.md").read_text()
    assert f"install -m 0755 koku.pyz {program}" in readme
    assert "packaging/koku.service" in readme and "packaging/koku.sh" in readme


def _substituted(root: Path, text: str) -> str:
    return (text.replace("/etc/koku", str(root / "etc/koku"))
                .replace("/var/lib/koku", str(root / "var/lib/koku"))
                .replace("/var/cache/koku", str(root / "var/cache/koku")))


def test_exec_start_starts_a_daemon_that_ku_status_reaches_through_the_profile(kenv):
    root = kenv.root / "sys"
    unit_text = _substituted(root, UNIT.read_text())
    unit = unit_settings(unit_text)
    argv = shlex.split(unit["ExecStart"][0])
    assert argv[0] == "/usr/local/bin/koku"
    argv = KU + argv[1:]  # the program the install lines put at /usr/local/bin/koku
    # What systemd gives the service: its Environment= lines, CACHE_DIRECTORY, and little else.
    env = {"PATH": os.environ["PATH"], **dict(v.split("=", 1) for v in unit["Environment"])}
    state_dir = Path(env["KOKU_STATE_DIR"])
    state_dir.mkdir(parents=True, mode=0o700)  # StateDirectory=
    (root / "var/cache/koku").mkdir(parents=True, mode=0o700)  # CacheDirectory=
    env["CACHE_DIRECTORY"] = str(root / "var/cache/koku")
    kenv.state = state_dir  # so the fixture stops this daemon too
    kenv.env.update(KOKU_STATE_DIR=env["KOKU_STATE_DIR"], KOKU_CONFIG=env["KOKU_CONFIG"])

    # The install lines: `. /etc/profile.d/koku.sh && ku init && ku check`, in a login-like shell.
    profile = root / "koku.sh"
    profile.write_text(_substituted(root, PROFILE.read_text()))
    ku = " ".join(shlex.quote(a) for a in KU)
    user_env = {k: v for k, v in kenv.env.items() if not k.startswith("KOKU_")}

    def login_shell(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", "-c", f". {shlex.quote(str(profile))} && {command}"], env=user_env,
                              capture_output=True, text=True, timeout=60, cwd=kenv.work)

    res = login_shell(f"{ku} init && {ku} check")
    assert res.returncode == 0, res.stderr
    assert (root / "etc/koku/config.toml").exists()

    if shutil.which("systemd-analyze") and len(KU) == 1:
        # systemd's own parser: unknown keys, bad values, a non-executable ExecStart.
        test_unit = root / "koku.service"
        test_unit.write_text(unit_text.replace("/usr/local/bin/koku", KU[0]))
        verify = subprocess.run(["systemd-analyze", "verify", str(test_unit)], capture_output=True, text=True,
                                timeout=60)
        assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr

    daemon = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              cwd="/")
    kenv.daemon_pids.add(daemon.pid)
    try:
        wait_for(lambda: (state_dir / "daemon.sock").exists() or daemon.poll() is not None, 15, what="the socket")
        assert daemon.poll() is None, daemon.stderr.read()
        res = login_shell(f"{ku} daemon status")
        assert res.returncode == 0, res.stderr
        fields = dict(line.split(None, 1) for line in res.stdout.splitlines() if line.strip())
        assert fields["config:"].strip() == f"{root}/etc/koku/config.toml", res.stdout
        assert str(state_dir / "daemon.sock") in res.stdout
        status = login_shell(f"{ku} status")
        assert status.returncode == 0 and "backup" in status.stdout, status.stderr
        # ExecReload, then systemctl stop (SIGTERM to the main process; KillMode=mixed).
        os.kill(daemon.pid, signal.SIGHUP)
        assert login_shell(f"{ku} status").returncode == 0
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
        assert "daemon stopped" in daemon.stderr.read()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        daemon.stderr.close()
    assert not alive(daemon.pid)
