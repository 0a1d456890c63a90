"""Jobs as other users (user, group, supplementary groups, HOME/USER/LOGNAME/SHELL, home as cwd), nice, umask.

The end-to-end tests need root: they create a user and a group (useradd/groupadd) and remove them after.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import wait_for
from koku.core.config import identity, parse_config
from koku.errors import ConfigError

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT or not shutil.which("useradd"), reason="needs root and useradd")


def job(extra: str) -> str:
    return f'[[job]]\nname = "j"\ncron = "@daily"\ncommand = "true"\n{extra}\n'


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return info.value.problems


@pytest.mark.parametrize("extra, tail", [
    ('user = "no-such-user-kk"', 'key "user": unknown user "no-such-user-kk" (no passwd entry)'),
    ('group = "no-such-group-kk"', 'key "group": unknown group "no-such-group-kk" (no group entry)'),
    ('user = ""', 'key "user" must be a user name, got ""'),
    ("nice = 20", 'key "nice" must be a whole number from -20 to 19, got 20'),
    ('nice = "5"', 'key "nice" must be a whole number from -20 to 19, got "5"'),
    ('umask = "089"', 'key "umask" must be octal digits like "027" or "0022", got "089"'),
    ("umask = 22", 'key "umask" must be octal digits like "027" or "0022", got 22 (write it as a string: '
                   'umask = "027")'),
])
def test_bad_identity_keys_name_job_and_key(extra, tail):
    assert problems(job(extra)) == [f'config.toml: job "j": {tail}']


def test_good_identity_keys():
    cfg = parse_config(job('user = "root"\ngroup = "root"\nnice = 10\numask = "027"')) if ROOT else \
        parse_config(job('nice = 10\numask = "0027"'))
    j = cfg.job("j")
    assert (j.nice, j.umask) == (10, 0o27)
    assert parse_config(job("")).job("j").umask is None


def test_user_on_a_non_root_daemon_is_an_error_naming_the_job(monkeypatch):
    # ku check judges as the user running it: pretend to be uid 4242 ("4242" if it has no passwd entry).
    monkeypatch.setattr(identity.os, "geteuid", lambda: 4242)
    monkeypatch.setattr(identity.os, "getegid", lambda: 4242)
    me = identity._daemon_user()
    found = problems(job('user = "root"\ngroup = "root"\nnice = -1'))
    assert found == [
        f'config.toml: job "j": key "user": running jobs as "root" needs a daemon running as root; this one runs '
        f'as "{me}" (remove "user", or run koku as root)',
        'config.toml: job "j": key "group": running jobs with group "root" needs a daemon running as root',
        'config.toml: job "j": key "nice": a negative nice (-1) needs a daemon running as root']


# ----- as root, with a real user ------------------------------------------------------------------------
@pytest.fixture
def account(tmp_path_factory):
    """A user with its own home and a supplementary group, removed afterwards."""
    name = f"kk{secrets.token_hex(3)}"
    group = f"{name}g"
    home = Path(f"/tmp/{name}-home")
    subprocess.run(["groupadd", group], check=True)
    try:
        subprocess.run(["useradd", "-m", "-d", str(home), "-s", "/bin/sh", "-G", group, name], check=True)
        try:
            yield pwd.getpwnam(name), group
        finally:
            subprocess.run(["userdel", "-r", name], check=False, capture_output=True)
            shutil.rmtree(home, ignore_errors=True)
    finally:
        subprocess.run(["groupdel", group], check=False)


REPORT = ('id -u > id; id -g >> id; id -G > groups; echo "$HOME|$USER|$LOGNAME|$SHELL" > env; pwd > cwd; '
          'nice > nice; umask > umask; echo data > written')


@needs_root
@pytest.mark.e2e
def test_job_runs_as_the_user_with_its_groups_home_and_environment(kenv, account):
    entry, group = account
    home = Path(entry.pw_dir)
    import grp
    extra_gid = grp.getgrnam(group).gr_gid
    kenv.write_config(f'[[job]]\nname = "as-user"\ncron = "@reboot"\nuser = "{entry.pw_name}"\nnice = 7\n'
                      f"umask = \"027\"\ncommand = '''{REPORT}'''\n"
                      f'[[job]]\nname = "as-root"\ncron = "@reboot"\ncommand = "id -u > {kenv.work}/root-id"\n')
    assert kenv.ku("check").returncode == 0
    kenv.start()
    wait_for(lambda: (home / "written").exists() and (kenv.work / "root-id").exists(), timeout=20,
             what="both jobs ran")
    wait_for(lambda: kenv.status("as-user")["last_outcome"] == "success", timeout=10)
    assert (home / "id").read_text().split() == [str(entry.pw_uid), str(entry.pw_gid)]
    assert set((home / "groups").read_text().split()) == {str(entry.pw_gid), str(extra_gid)}  # not root's
    assert (home / "env").read_text().strip() == f"{home}|{entry.pw_name}|{entry.pw_name}|/bin/sh"
    assert (home / "cwd").read_text().strip() == str(home)  # no dir: the user's home
    assert (home / "nice").read_text().strip() == "7"
    assert (home / "umask").read_text().strip() == "0027"
    written = (home / "written").stat()
    assert (written.st_uid, written.st_gid) == (entry.pw_uid, entry.pw_gid)
    assert written.st_mode & 0o777 == 0o640  # 0666 & ~027
    assert (kenv.work / "root-id").read_text().strip() == "0"  # other jobs stay root
    assert kenv.status("as-user")["user"] == entry.pw_name and kenv.status("as-root")["user"] is None
    log = kenv.state / "logs" / "as-user.log"
    assert (log.stat().st_uid, log.stat().st_gid) == (0, 0)  # koku's own files stay root's
    assert (kenv.state / "state.json").stat().st_uid == 0


@needs_root
@pytest.mark.e2e
def test_group_overrides_the_primary_group_and_a_vanished_user_is_an_error_run(kenv, account):
    entry, group = account
    import grp
    gid = grp.getgrnam(group).gr_gid
    out = Path(entry.pw_dir)
    kenv.write_config(f'[[job]]\nname = "g"\ncron = "@reboot"\nuser = "{entry.pw_name}"\ngroup = "{group}"\n'
                      f'command = "id -g > gid; echo x > file"\n')
    kenv.start()
    wait_for(lambda: (out / "file").exists(), timeout=20, what="job ran")
    assert (out / "gid").read_text().strip() == str(gid)
    assert (out / "file").stat().st_gid == gid
    # The user disappears while the daemon runs: the next run is an error that says why, nothing runs as root.
    subprocess.run(["userdel", entry.pw_name], check=True)
    res = kenv.ku("run", "g", "--wait")
    assert res.returncode != 0
    record = kenv.request({"History": {"name": "g", "limit": 1}})["History"][0]
    assert record["outcome"] == "error"
    assert record["description"] == f'could not start: user "{entry.pw_name}" does not exist'
