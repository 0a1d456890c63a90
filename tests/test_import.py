"""`ku import`: crontabs (Debian's own and hand-written edge cases) -> koku TOML that passes `ku check`."""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import wait_for
from koku.core.config import parse_config
from koku.core.crontab import derive_name, import_crontab, looks_like_system, split_percent, with_stdin

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FIXTURES = Path(__file__).parent / "fixtures" / "crontabs"
DEBIAN = sorted(FIXTURES.glob("debian-*"))
ALL = sorted(p for p in FIXTURES.iterdir() if p.name != "README.md")
ME = pwd.getpwuid(os.geteuid()).pw_name


# ----- pure: the pieces -----------------------------------------------------------------------------
@pytest.mark.parametrize("command, expected", [
    ("echo hi", ("echo hi", None)),
    ("cat%hello", ("cat", "hello\n")),
    ("cat%a%b", ("cat", "a\nb\n")),
    ("cat%a%", ("cat", "a\n")),  # ends with a newline already: cron adds none
    ("cat%a%%", ("cat", "a\n\n")),
    ("cat%", ("cat", "")),  # cron pipes nothing at all
    (r"date +\%d", ("date +%d", None)),
    (r"date +\%d%in \% out", ("date +%d", "in % out\n")),
    (r"echo \\n%x", (r"echo \\n", "x\n")),  # other backslashes stay
])
def test_percent_follows_crons_do_command(command, expected):
    assert split_percent(command) == expected


@pytest.mark.parametrize("stdin", ["hello\n", "a\nb\n", "a\n\n", "", "KOKU_EOF\nx\n", "$HOME `id` 'q' \"d\"\n"])
def test_stdin_encoding_gives_the_command_exactly_crons_bytes(tmp_path, stdin):
    out = tmp_path / "out"
    # Two commands: cron pipes stdin to the shell, so the whole line shares it (the first reader takes it).
    command = with_stdin(f"cat > {out}; cat >> {out}", stdin)
    subprocess.run(["/bin/sh", "-c", command], check=True, stdin=subprocess.DEVNULL, timeout=10)
    assert out.read_bytes() == stdin.encode()


@pytest.mark.parametrize("command, name", [
    ("cd / && run-parts --report /etc/cron.hourly", "run-parts-cron.hourly"),
    ("command -v debian-sa1 > /dev/null && debian-sa1 1 1", "debian-sa1"),
    ("test -x /usr/bin/certbot -a \\! -d /run/systemd/system && perl -e 'sleep int(rand(43200))' && "
     "certbot -q renew", "certbot"),
    ("test -e /run/systemd/system || SERVICE_MODE=1 /sbin/e2scrub_all -A -r", "e2scrub_all"),
    ("[ -x /etc/init.d/anacron ] && if [ ! -d /run/systemd/system ]; then /usr/sbin/invoke-rc.d anacron "
     "start >/dev/null; fi", "invoke-rc.d-anacron"),
    ("/usr/bin/backup.sh 2>&1 | logger -t backup", "logger"),
    ("echo hi", "echo"),
    ("'unbalanced", "unbalanced"),
    ("/weird/na me$%!", "na"),
    ("/usr/bin/make-report --day $(date +%F)", "make-report"),
])
def test_job_names_come_from_the_command(command, name):
    assert derive_name(command) == name


def test_names_are_unique_valid_and_avoid_names_already_taken():
    text = "\n".join(["0 * * * * /bin/backup"] * 3 + ["0 * * * * " + "x" * 200])
    result = import_crontab(text, taken={"backup"})
    names = [job.table["name"] for job in result.jobs]
    assert names[:3] == ["backup-2", "backup-3", "backup-4"]
    assert len(names[3]) <= 64
    parse_config("\n".join(f'[[job]]\nname = "{n}"\ncron = "@daily"\ncommand = "true"' for n in names))


def test_env_lines_apply_to_the_jobs_after_them():
    text = ("A=1\n0 * * * * one\nB = 'two words'\nCRON_TZ=Europe/Berlin\n0 * * * * two\nCRON_TZ=\n"
            "RANDOM_DELAY=7\n0 * * * * three\n")
    one, two, three = import_crontab(text).jobs
    assert one.table["env"] == {"A": "1"} and "tz" not in one.table
    assert two.table["env"] == {"A": "1", "B": "two words"} and two.table["tz"] == "Europe/Berlin"
    assert "tz" not in three.table and three.table["jitter"] == "7m"


def test_system_crontab_user_column_becomes_user_except_the_daemons_own():
    result = import_crontab("0 * * * * root /bin/a\n@daily backup /bin/b\n", system=True, own_user="root")
    assert [j.table.get("user") for j in result.jobs] == [None, "backup"]
    assert [j.table["command"] for j in result.jobs] == ["/bin/a", "/bin/b"]


def test_tilde_is_resolved_once_stably_and_inside_its_range():
    text = "0~9 ~ * * * /bin/x\n"
    first = import_crontab(text).jobs[0].table["cron"]
    assert first == import_crontab(text).jobs[0].table["cron"]
    minute, hour = map(int, first.split()[:2])
    assert 0 <= minute <= 9 and 0 <= hour <= 23
    crons = {import_crontab(f"~ ~ * * * /bin/x{i}\n").jobs[0].table["cron"] for i in range(20)}
    assert len(crons) > 10  # different lines spread out


def test_system_crontabs_are_recognised():
    exists = {"root", "backup"}.__contains__
    assert looks_like_system("0 * * * * root /bin/a\n@daily backup b\n", None, exists)
    assert not looks_like_system("0 * * * * /bin/a\n", None, exists)
    assert not looks_like_system("0 * * * * root-thing\n", None, exists)
    assert looks_like_system("0 * * * * /bin/a\n", "/etc/cron.d/x", exists)
    assert looks_like_system("", "/etc/crontab", exists)


@pytest.mark.parametrize("line, reason", [
    ("this is not a crontab line", 'minute "this" is not a number'),
    ("@fortnightly /bin/x", 'unknown macro "@fortnightly"'),
    ("61 * * * * /bin/x", "minute 61 out of range"),
    ("0 0 30 2 * /bin/x", "can never fire"),
    ("* * * * *", "not a job line"),
    ("0 * * * * cat%stdin only", None),
    ("0 * * * * %only stdin", "empty before its first %"),
    ("9~3 * * * * /bin/x", '"~" range 9~3 in field 1 is empty'),
])
def test_lines_that_cannot_be_converted_say_why(line, reason):
    result = import_crontab(line + "\n")
    if reason is None:
        assert result.jobs and not result.skipped
    else:
        assert not result.jobs
        assert len(result.skipped) == 1 and reason in result.skipped[0].reason
        assert result.skipped[0].line == 1 and result.skipped[0].text == line


def test_jobs_under_a_bad_cron_tz_are_not_silently_moved_to_another_zone():
    result = import_crontab("CRON_TZ=Mars/Base\n0 1 * * * /bin/a\nCRON_TZ=UTC\n0 2 * * * /bin/b\n")
    assert [s.line for s in result.skipped] == [1, 2]
    assert "CRON_TZ=Mars/Base (line 1)" in result.skipped[1].reason
    assert [j.table["tz"] for j in result.jobs] == ["UTC"]


def test_each_job_carries_its_line_and_comment_block():
    result = import_crontab("# nightly\n# (really)\n30 2 * * * /bin/nightly\n\n# lost\n\n@hourly /bin/h\n")
    nightly, hourly = result.jobs
    assert nightly.comments == ["nightly", "(really)"] and nightly.table["description"] == "30 2 * * * /bin/nightly"
    assert hourly.comments == [] and hourly.table["description"] == "@hourly /bin/h"


# ----- the real `ku import` on the fixtures ---------------------------------------------------------
def _import(kenv, *args, input=None):
    return kenv.ku("import", *args, input=input)


@pytest.mark.e2e
@pytest.mark.parametrize("fixture", ALL, ids=lambda p: p.name)
def test_every_fixture_converts_and_its_output_passes_ku_check(kenv, fixture):
    res = _import(kenv, str(fixture))
    bad = fixture.name == "edge-bad.crontab"
    assert res.returncode == (1 if bad else 0), res.stderr
    data = tomllib.loads(res.stdout)
    crontab_jobs = [line for line in fixture.read_text().splitlines()
                    if line.strip() and not line.lstrip().startswith("#")
                    and not re.match(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*=", line)]
    if not bad:
        assert len(data["job"]) == len(crontab_jobs)  # every job line became a job
        assert "not converted" not in res.stderr
    for job in data["job"]:
        assert job["description"].split("  (~")[0] in fixture.read_text()
    if fixture in DEBIAN and ME != "root":
        pytest.skip("Debian's crontabs run as root: their user = \"root\" is valid only for a root daemon")
    kenv.write_config(res.stdout)
    check = kenv.ku("check")
    assert check.returncode == 0, check.stderr
    assert f"{len(data['job'])} job" in check.stdout


@pytest.mark.e2e
def test_debian_crontab_converts_to_the_expected_jobs(kenv):
    res = _import(kenv, str(FIXTURES / "debian-cron-daemon-common.crontab"))
    jobs = tomllib.loads(res.stdout)["job"]
    assert [(j["name"], j["cron"]) for j in jobs] == [
        ("run-parts-cron.hourly", "17 * * * *"), ("run-parts-cron.daily", "25 6 * * *"),
        ("run-parts-cron.weekly", "47 6 * * 7"), ("run-parts-cron.monthly", "52 6 1 * *")]
    assert jobs[1]["command"] == "test -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }"
    assert all(j["env"] == {"SHELL": "/bin/sh", "PATH": "/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin"}
               for j in jobs)
    assert all(j.get("user") == (None if ME == "root" else "root") for j in jobs)
    mdadm = tomllib.loads(_import(kenv, str(FIXTURES / "debian-mdadm.cron.d.mdadm")).stdout)["job"][0]
    assert "$(date +%d)" in mdadm["command"]  # cron's \% is a plain % for the shell


@pytest.mark.e2e
def test_unconvertible_lines_are_listed_and_the_exit_code_says_so(kenv):
    res = _import(kenv, str(FIXTURES / "edge-bad.crontab"))
    assert res.returncode == 1
    for line in (3, 4, 5, 6, 7, 8, 9):
        assert f"edge-bad.crontab: line {line}: not converted: " in res.stderr
    assert "7 lines of" in res.stderr
    assert [j["name"] for j in tomllib.loads(res.stdout)["job"]] == ["true", "after-a-good-zone"]
    assert "# NOT CONVERTED: " in res.stdout


@pytest.mark.e2e
def test_import_reads_stdin_and_forced_formats(kenv):
    res = _import(kenv, "-", input="0 * * * * root /bin/x\n")
    assert res.returncode == 0 and tomllib.loads(res.stdout)["job"][0]["command"] == "/bin/x"  # guessed system
    res = _import(kenv, "--no-system", input="0 * * * * root /bin/x\n")
    assert tomllib.loads(res.stdout)["job"][0]["command"] == "root /bin/x"
    res = _import(kenv, "--system", input="0 * * * * nobody /bin/x\n")
    assert tomllib.loads(res.stdout)["job"][0].get("user") == ("nobody" if ME != "nobody" else None)
    res = _import(kenv, str(kenv.root / "missing"))
    assert res.returncode == 2 and "cannot read crontab" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.e2e
def test_write_appends_to_the_config_with_unique_names_and_validates(kenv):
    kenv.write_config('[defaults]\ntimeout = "1h"\n\n[[job]]\nname = "sync"\ncron = "@daily"\ncommand = "true"\n')
    res = _import(kenv, "--write", "--no-system", input="*/5 * * * * /usr/bin/sync%x\n")
    assert res.returncode == 0, res.stderr
    assert "added 1 job" in res.stdout
    data = tomllib.loads(kenv.config.read_text())
    assert [j["name"] for j in data["job"]] == ["sync", "sync-2"]
    assert kenv.config.read_text().startswith('[defaults]\ntimeout = "1h"')  # the old text is kept as is
    assert kenv.ku("check").returncode == 0


@pytest.mark.e2e
def test_write_refuses_a_result_that_would_break_the_config(kenv):
    kenv.write_config('[[job]]\nname = "a"\ncron = "@daily"\ncommand = "true"\n')
    before = kenv.config.read_text()
    # A system line for a user that does not exist converts, but the config would not pass `ku check`.
    res = _import(kenv, "--write", "--system", input="0 * * * * no-such-user-k /bin/x\n")
    assert res.returncode == 2 and 'job "x"' in res.stderr and "was not changed" in res.stderr
    assert "Traceback" not in res.stderr
    assert kenv.config.read_text() == before


@pytest.mark.e2e
def test_imported_reboot_job_gets_crons_stdin_in_the_real_daemon(kenv):
    out = kenv.work / "stdin.txt"
    kenv.write_config("")
    crontab = f"GREETING=hi there\n@reboot cat > {out}; echo \"$GREETING\" >> {out}%line one%  line two \\% x\n"
    res = _import(kenv, "--write", "--no-system", input=crontab)
    assert res.returncode == 0, res.stderr
    kenv.start()
    wait_for(lambda: out.exists() and out.read_text().endswith("hi there\n"), timeout=20)
    assert out.read_text() == "line one\n  line two % x\nhi there\n"
