"""Root safety, against the real daemon (this machine and CI run as root).

Each test reproduces an attack from issue 10 and asserts on what the attacker would observe: a file
written by planted code, a file overwritten through a symlink, a socket that stops answering.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import resource
import socket
import subprocess
import time
from pathlib import Path

import pytest
import tomli_w

from conftest import KU, alive, read_line, wait_for

pytestmark = pytest.mark.e2e

EVERY_SECOND = {"name": "tick", "cron": "* * * * * *", "command": "echo tick"}


def config(kenv, jobs=(EVERY_SECOND,), **daemon) -> None:
    kenv.write_config(tomli_w.dumps({"job": list(jobs), "daemon": {"kill_grace": "1s", "shutdown_grace": "2s",
                                                                     **daemon}}))


def ku_in(kenv, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(KU + list(args), env=kenv.env, capture_output=True, text=True, timeout=60, cwd=cwd)


# ----- 1. code from the caller's working directory -----------------------------------------------

def test_daemon_start_does_not_run_koku_main_from_the_cwd(kenv):
    config(kenv)
    hostile = kenv.root / "hostile"
    (hostile / "koku").mkdir(parents=True)
    marker = kenv.root / "PWNED-main"
    (hostile / "koku" / "__main__.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    (hostile / "koku" / "__init__.py").write_text("")
    res = ku_in(kenv, hostile, "daemon", "start")
    pid = kenv.daemon_pid()
    if pid:
        kenv.daemon_pids.add(pid)
    assert not marker.exists(), "koku/__main__.py from the caller's cwd ran in the daemon"
    assert res.returncode == 0, res.stderr + res.stdout
    assert kenv.request("Ping") == {"Ok": "pong"}


def test_daemon_never_imports_from_the_cwd_and_leaves_it(kenv):
    config(kenv)
    hostile = kenv.root / "hostile"
    hostile.mkdir()
    marker = kenv.root / "PWNED-ctypes"
    # Shadows the stdlib's ctypes, which the daemon needs (malloc_trim) a second after start.
    (hostile / "ctypes.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    res = ku_in(kenv, hostile, "daemon", "start")
    assert res.returncode == 0, res.stderr + res.stdout
    pid = kenv.daemon_pid()
    kenv.daemon_pids.add(pid)
    wait_for(lambda: kenv.status("tick")["runs"] >= 2, 10, what="two runs")  # past the 1 s malloc_trim
    assert not marker.exists(), "ctypes.py from the caller's cwd ran in the daemon"
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"-I" in cmdline, cmdline


# ----- 7. requests that got no answer ------------------------------------------------------------

HOSTILE_LINES = [
    b'{"Run":"\\ud800"}',
    b"[" * 100_000,
    b'{"PauseFor":{"name":"tick","seconds":1e300}}',
    b'{"PauseFor":{"name":"tick","seconds":NaN}}',
    b'{"PauseFor":{"name":"tick","seconds":Infinity}}',
]


def test_hostile_requests_get_an_invalid_request_answer_on_a_usable_connection(kenv):
    config(kenv)
    kenv.start()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(kenv.state / "daemon.sock"))
        for line in HOSTILE_LINES:
            s.sendall(line + b"\n")
            reply = json.loads(read_line(s))
            assert list(reply) == ["Error"], (line[:60], reply)
            assert reply["Error"].startswith("invalid request: "), (line[:60], reply)
            s.sendall(b'"Ping"\n')
            assert json.loads(read_line(s)) == {"Ok": "pong"}, line[:60]
    assert kenv.status("tick")["state"] == "idle"  # not paused by any of them
    assert "Traceback" not in kenv.daemon_log()


# ----- helpers: a forked client as user nobody ---------------------------------------------------

def nobody_or_skip():
    if os.geteuid() != 0:
        pytest.skip("needs root: peer credentials are checked only when the daemon runs as root")
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")


def unlisted_group(user: str, primary: int) -> grp.struct_group:
    """A group in /etc/group that ``user`` is not listed in and that is not their primary group."""
    for g in grp.getgrall():
        if g.gr_gid not in (0, primary) and user not in g.gr_mem and g.gr_name not in ("nogroup", "nobody"):
            return g
    pytest.skip("no suitable group")


def open_to(kenv, *paths: Path) -> None:
    # The temp home is 0700 (mkdtemp): let nobody walk down to the socket; the socket's own mode decides.
    for path in paths:
        os.chmod(path, 0o711)


def fork_as(uid: int, gid: int, groups: list[int], body) -> tuple[int, int]:
    """Run ``body(write_fd)`` in a forked child with these credentials; returns (pid, read_fd)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        try:
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            body(w)
        except BaseException as exc:
            os.write(w, json.dumps({"child failed": repr(exc)}).encode())
        finally:
            os._exit(0)
    os.close(w)
    return pid, r


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


# ----- 6. socket_group: the peer's real groups ---------------------------------------------------

def test_socket_group_counts_a_supplementary_group_not_listed_in_etc_group(kenv):
    nobody = nobody_or_skip()
    group = unlisted_group("nobody", nobody.pw_gid)
    config(kenv, socket_group=group.gr_name)
    kenv.start()
    open_to(kenv, kenv.root)
    path = str(kenv.state / "daemon.sock")

    def ask(w):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(path)
            s.sendall(b'"Status"\n')
            os.write(w, read_line(s))

    # nobody with the group granted by setgroups() (as newgrp, sg or an NSS module would): served
    pid, r = fork_as(nobody.pw_uid, nobody.pw_gid, [group.gr_gid], ask)
    raw = read_all(r)
    os.waitpid(pid, 0)
    assert "Status" in json.loads(raw), raw
    # nobody without it, all else the same: refused (by the directory's mode before the daemon sees it)
    pid, r = fork_as(nobody.pw_uid, nobody.pw_gid, [], ask)
    reply = json.loads(read_all(r))
    os.waitpid(pid, 0)
    assert reply in ({"Error": "permission denied: not root or in socket_group"},
                     {"child failed": "PermissionError(13, 'Permission denied')"}), reply


# ----- 4. fd starvation --------------------------------------------------------------------------

def raise_own_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"needs a hard RLIMIT_NOFILE of {need}, have {hard}")
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def start_with_fd_limit(kenv, soft: int, hard: int) -> int:
    """`ku daemon start` as systemd would run it: a soft nofile limit of ``soft``."""
    def limit():  # in the child, before exec; the daemon it starts inherits it
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    res = subprocess.run(KU + ["daemon", "start"], env=kenv.env, capture_output=True, text=True, timeout=60,
                         cwd=kenv.work, preexec_fn=limit)
    assert res.returncode == 0, res.stderr + res.stdout
    pid = kenv.daemon_pid()
    kenv.daemon_pids.add(pid)
    return pid


def connect(kenv, timeout: float = 5.0) -> socket.socket:
    """A connection; a full listen backlog (EAGAIN: the daemon has not accepted yet) is retried."""
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(timeout)
        try:
            s.connect(str(kenv.state / "daemon.sock"))
            return s
        except BlockingIOError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@pytest.mark.parametrize("soft, hard", [(1024, 4096), (1024, 1024)], ids=["raisable", "at-hard-limit"])
def test_1100_idle_connections_starve_neither_runs_nor_state_saves(kenv, soft, hard):
    raise_own_fd_limit(1400)
    config(kenv, jobs=[{"name": "manual", "cron": "0 0 1 1 *", "command": "echo ran $KOKU_RUN_ID"}])
    pid = start_with_fd_limit(kenv, soft, hard)
    idle = []
    try:
        for _ in range(1100):
            idle.append(connect(kenv))
        time.sleep(1.5)  # idle for over a second: a new client may now take the slot of the oldest
        state_file = kenv.state / "state.json"
        for n in range(11):
            with connect(kenv, timeout=20) as s:
                s.sendall(b'{"Trigger":"manual"}\n')
                started = json.loads(read_line(s))
                assert "Started" in started, started
                s.sendall(json.dumps({"Wait": {"name": "manual", "run": started["Started"]["run"]}}).encode() + b"\n")
                record = json.loads(read_line(s))["Finished"]
            assert record["outcome"] == "success", record
            assert record["tail"] == [f"ran {record['run']}"], record
        saved = wait_for(lambda: (json.loads(state_file.read_text())["jobs"]["manual"]["history"] or [{}])[-1]
                         .get("run") == record["run"], 10, what="the last run in state.json")
        assert saved
    finally:
        for s in idle:
            s.close()
    log = kenv.daemon_log()
    assert "Too many open files" not in log and "EMFILE" not in log, log[-2000:]
    assert kenv.request("Ping") == {"Ok": "pong"}
    limits = Path(f"/proc/{pid}/limits").read_text()
    assert f"Max open files            {hard:<21}" in limits, limits  # the soft limit, raised to the hard one


# ----- 5. slow clients ---------------------------------------------------------------------------

def timed_ping(kenv) -> float:
    t0 = time.monotonic()
    with connect(kenv, timeout=10) as s:
        s.sendall(b'"Ping"\n')
        assert json.loads(read_line(s)) == {"Ok": "pong"}
    return time.monotonic() - t0


def test_1030_dribbling_root_clients_do_not_lock_out_a_new_ping(kenv):
    raise_own_fd_limit(1400)
    config(kenv)
    kenv.start()
    slow = []
    try:
        for _ in range(1030):
            slow.append(connect(kenv))
        for _ in range(2):  # one byte a second each, never a newline
            for s in slow:
                try:
                    s.send(b"x")
                except OSError:
                    pass  # refused: more than the daemon serves at once
            time.sleep(1.0)
        assert timed_ping(kenv) < 2.0
        assert kenv.status("tick")["last_exit"] == 0
    finally:
        for s in slow:
            s.close()


def test_dribbling_clients_of_one_uid_are_bounded_and_cut_at_the_line_deadline(kenv):
    from koku.daemon.server import LINE_DEADLINE, PER_UID

    nobody = nobody_or_skip()
    group = unlisted_group("nobody", nobody.pw_gid)
    raise_own_fd_limit(1400)
    config(kenv, socket_group=group.gr_name)
    kenv.start()
    open_to(kenv, kenv.root)
    path = str(kenv.state / "daemon.sock")

    def dribble(w):
        socks = []
        for _ in range(1030):
            while True:
                s = socket.socket(socket.AF_UNIX)
                try:
                    s.connect(path)
                    break
                except BlockingIOError:
                    s.close()
                    time.sleep(0.01)
            socks.append(s)
        os.write(w, b"connected\n")
        live = list(socks)
        end = time.monotonic() + LINE_DEADLINE + 4
        while live and time.monotonic() < end:
            for s in list(live):
                try:
                    s.send(b"x")
                except OSError:
                    live.remove(s)
            time.sleep(1.0)
        counts = {"per_uid": 0, "late": 0, "other": []}
        for s in socks:
            s.settimeout(0.5)
            try:
                data = s.recv(4096)
            except OSError as exc:
                data = repr(exc).encode()
            if b"too many connections from uid" in data:
                counts["per_uid"] += 1
            elif b"not complete within" in data:
                counts["late"] += 1
            else:
                counts["other"].append(data.decode(errors="replace"))
        os.write(w, json.dumps(counts).encode())

    pid, r = fork_as(nobody.pw_uid, nobody.pw_gid, [group.gr_gid], dribble)
    try:
        first = b""
        while not first.endswith(b"\n"):
            chunk = os.read(r, 1)
            assert chunk, "the client child died"
            first += chunk
        assert first == b"connected\n", first
        time.sleep(2.0)
        assert timed_ping(kenv) < 2.0  # root, with nobody's 1,030 dribbling connections open
        assert kenv.status("tick")["last_exit"] == 0
        counts = json.loads(read_all(r))
    finally:
        if not os.waitpid(pid, os.WNOHANG)[0]:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    assert counts["per_uid"] == 1030 - PER_UID, counts
    assert counts["late"] == PER_UID, counts
    assert timed_ping(kenv) < 2.0


# ----- 2. the state dir: symlinks, FIFOs, foreign owners ----------------------------------------

ONE_JOB = [{"name": "job", "cron": "* * * * * *", "command": "echo out-$KOKU_RUN_ID"}]


def start_fails(kenv, *needles: str) -> str:
    res = kenv.ku("daemon", "start")
    pid = kenv.daemon_pid()
    if pid:
        kenv.daemon_pids.add(pid)
    text = res.stderr + res.stdout
    assert res.returncode == 1, text
    assert "Traceback" not in text, text
    for needle in needles:
        assert needle in text, text
    return text


def test_symlinked_job_log_is_not_followed(kenv):
    config(kenv, jobs=ONE_JOB)
    victim = kenv.root / "victim"
    victim.write_text("precious\n")
    (kenv.state / "logs").mkdir(parents=True)
    os.symlink(victim, kenv.state / "logs" / "job.log")
    kenv.start()
    wait_for(lambda: kenv.status("job")["runs"] >= 2, 10, what="two runs")
    assert victim.read_text() == "precious\n"
    assert kenv.status("job")["last_outcome"] == "success"  # the run itself is not harmed
    assert "is a symlink; refusing to follow it" in kenv.daemon_log()
    assert kenv.request({"Log": {"name": "job", "lines": 5}})["Error"].startswith("cannot read the log of job")


def test_fifo_as_job_log_blocks_nothing(kenv):
    # More than a pipe holds (64 KiB): a write into a FIFO nobody reads would block the whole daemon.
    config(kenv, jobs=[{**ONE_JOB[0], "command": "head -c 200000 /dev/zero | tr '\\0' x; echo"}])
    (kenv.state / "logs").mkdir(parents=True)
    os.mkfifo(kenv.state / "logs" / "job.log")
    kenv.start()
    wait_for(lambda: kenv.status("job")["runs"] >= 3, 10, what="three runs")
    assert timed_ping(kenv) < 2.0
    assert "not a regular file" in kenv.daemon_log()


def test_fifo_as_state_json_is_moved_aside(kenv):
    config(kenv, jobs=ONE_JOB)
    kenv.state.mkdir(parents=True)
    os.mkfifo(kenv.state / "state.json")
    kenv.start()
    wait_for(lambda: kenv.status("job")["runs"] >= 1, 10, what="a run")
    wait_for(lambda: (kenv.state / "state.json").is_file(), 10, what="a real state.json")
    assert (kenv.state / "state.json.corrupt-1").is_fifo()


def test_symlinked_pid_file_is_replaced_and_its_target_untouched(kenv):
    config(kenv, jobs=ONE_JOB)
    victim = kenv.root / "victim"
    victim.write_text("precious\n")
    kenv.state.mkdir(parents=True)
    os.symlink(victim, kenv.state / "daemon.pid")
    pid = kenv.start()
    assert victim.read_text() == "precious\n"
    assert not (kenv.state / "daemon.pid").is_symlink()
    assert (kenv.state / "daemon.pid").read_text() == f"{pid}\n"


def test_symlinked_daemon_log_is_refused_and_its_target_untouched(kenv):
    config(kenv, jobs=ONE_JOB)
    victim = kenv.root / "victim"
    victim.write_text("precious\n")
    (kenv.state / "logs").mkdir(parents=True)
    os.symlink(victim, kenv.state / "logs" / "daemon.log")
    start_fails(kenv, "daemon.log", "fix: remove it")
    assert victim.read_text() == "precious\n"


def test_state_dir_of_another_user_is_refused(kenv):
    nobody = nobody_or_skip()
    config(kenv, jobs=ONE_JOB)
    kenv.state.mkdir(parents=True)
    os.chown(kenv.state, nobody.pw_uid, nobody.pw_gid)
    start_fails(kenv, str(kenv.state), f"owned by uid {nobody.pw_uid}", f"fix: chown {os.geteuid()} {kenv.state}")
    assert not (kenv.state / "daemon.pid").exists()


def test_parent_writable_by_others_is_refused(kenv):
    config(kenv, jobs=ONE_JOB)
    parent = kenv.home / ".local"
    parent.mkdir()
    os.chmod(parent, 0o777)
    start_fails(kenv, f"{parent} is writable by group and others (mode 0777)", f"fix: chmod go-w {parent}")
    assert not kenv.state.exists()


def test_parent_symlink_of_another_user_is_refused(kenv):
    nobody = nobody_or_skip()
    config(kenv, jobs=ONE_JOB)
    real = kenv.root / "elsewhere"
    real.mkdir()
    (kenv.home / ".local").mkdir()
    link = kenv.home / ".local" / "state"
    os.symlink(real, link)
    os.lchown(link, nobody.pw_uid, nobody.pw_gid)
    start_fails(kenv, f"{link} is a symlink owned by uid {nobody.pw_uid}")
    assert os.listdir(real) == []


def test_logs_dir_open_to_all_is_made_0700_and_a_trusted_symlinked_parent_works(kenv):
    config(kenv, jobs=ONE_JOB)
    real = kenv.root / "elsewhere"
    real.mkdir()
    (kenv.home / ".local").mkdir()
    os.symlink(real, kenv.home / ".local" / "state")  # ours: followed
    (real / "koku" / "logs").mkdir(parents=True)
    os.chmod(real / "koku" / "logs", 0o777)
    kenv.start()
    wait_for(lambda: kenv.status("job")["runs"] >= 1, 10, what="a run")
    assert oct(os.stat(real / "koku" / "logs").st_mode & 0o777) == oct(0o700)
    assert oct(os.stat(real / "koku").st_mode & 0o777) == oct(0o700)
    log = real / "koku" / "logs" / "job.log"
    wait_for(lambda: log.exists() and "out-1" in log.read_text(), 10, what="job output")
