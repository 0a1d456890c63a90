"""Config validation: every rejection names file, job, key and value; defaults; durations; example."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import tomli_w

from koku.core.config import (CatchUp, 
    DAEMON_KEYS,
    JOB_KEYS,
    DaemonConfig,
    JobConfig,
    OnError,
    load_config,
    parse_config,
    parse_size,
)
from koku.errors import ConfigError, UsageError
from koku.core.schedule import parse_schedule
from koku.client.example import EXAMPLE_CONFIG, write_example

JOB = 'name = "x"\ncron = "* * * * *"\ncommand = "true"\n'


def job(**keys: object) -> str:
    """A [[job]] table: the valid base job with ``keys`` replaced (None removes a key)."""
    base: dict[str, object] = {"name": "x", "cron": "* * * * *", "command": "true"}
    base.update(keys)
    return tomli_w.dumps({"job": [{k: v for k, v in base.items() if v is not None}]})


def problems_of(text: str, path: str = "config.toml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, path)
    return info.value.problems


# One row per kind of rejection: (toml, the exact message).
EXACT = [
    pytest.param(job(comand="x"), 'config.toml: job "x": unknown key "comand" (did you mean "command"?)',
                 id="unknown-job-key"),
    pytest.param(job(shell="/bin/bash"), 'config.toml: job "x": unknown key "shell" (it belongs in [daemon])',
                 id="daemon-key-in-job"),
    pytest.param("[[job]]\n" + JOB + '[[job]]\nname = "y"\ncron = "* * * * *"\ncommand = "true"\n'
                 '[[job]]\ncron = "* * * * *"\ncommand = "true"\n',
                 'config.toml: job #3: missing key "name"', id="missing-name"),
    pytest.param(job(cron=None), 'config.toml: job "x": missing key "cron"', id="missing-cron"),
    pytest.param(job(command=None), 'config.toml: job "x": missing key "command"', id="missing-command"),
    pytest.param("[[job]]\n" + JOB + "[[job]]\n" + JOB,
                 'config.toml: job "x": key "name": "x" is already used by job #1 (names must be unique)',
                 id="duplicate-name"),
    pytest.param(job(name="a b"), 'config.toml: job #1: key "name" may only contain letters, digits, "_", '
                 '"." and "-" (it names the job\'s log file), got "a b"', id="name-charset"),
    pytest.param(job(name="../etc"), 'config.toml: job #1: key "name" may only contain letters, digits, "_", '
                 '"." and "-" (it names the job\'s log file), got "../etc"', id="name-slash"),
    pytest.param(job(name=""), 'config.toml: job #1: key "name" must not be empty', id="name-empty"),
    pytest.param(job(name=".."), 'config.toml: job #1: key "name" must not be "." or ".." (it names the '
                 'job\'s log file), got ".."', id="name-dotdot"),
    pytest.param(job(name="n" * 65), 'config.toml: job #1: key "name" must be at most 64 characters, got 65 '
                 "characters", id="name-too-long"),
    pytest.param(job(name=7), 'config.toml: job #1: key "name" must be a string, got 7', id="name-type"),
    pytest.param(job(timeout="abc"), 'config.toml: job "x": key "timeout" must be a duration like "90s", '
                 '"30m", "1h30m" or "2d" (a bare number is seconds), got "abc"', id="bad-duration"),
    pytest.param(job(timeout=0), 'config.toml: job "x": key "timeout" must be longer than 0 seconds, got 0',
                 id="zero-timeout"),
    pytest.param(job(jitter=-5), 'config.toml: job "x": key "jitter" must not be negative, got -5',
                 id="negative-jitter"),
    pytest.param(job(on_error="stopp"), 'config.toml: job "x": key "on_error" must be one of "continue", '
                 '"backoff" or "stop", got "stopp" (did you mean "stop"?)', id="bad-on-error"),
    pytest.param(job(overlap="yes"), 'config.toml: job "x": key "overlap" must be true or false, got "yes"',
                 id="bool-type"),
    pytest.param(job(catch_up=1), 'config.toml: job "x": key "catch_up" must be "skip", "once" or "all" '
                 '(true means "once", false "skip"), got 1',
                 id="bool-type-int"),
    pytest.param(job(max_failures="3"), 'config.toml: job "x": key "max_failures" must be a whole number, '
                 'got "3"', id="int-type"),
    pytest.param(job(max_failures=0), 'config.toml: job "x": key "max_failures" must be at least 1, got 0',
                 id="int-range"),
    pytest.param(job(command=["ls", "-l"]), 'config.toml: job "x": key "command" must be a string, got an '
                 "array", id="string-type"),
    pytest.param(job(command="  "), 'config.toml: job "x": key "command" must not be empty, got "  "',
                 id="blank-command"),
    pytest.param(job(description=5), 'config.toml: job "x": key "description" must be a string, got 5',
                 id="description-type"),
    pytest.param(job(env="A=1"), 'config.toml: job "x": key "env" must be a table of strings like '
                 '{ PATH = "/usr/bin" }, got "A=1"', id="env-type"),
    pytest.param(job(env={"PORT": 8080}), 'config.toml: job "x": key "env.PORT" must be a string, got 8080',
                 id="env-value-type"),
    pytest.param(job(timeout=True), 'config.toml: job "x": key "timeout" must be a duration like "90s", '
                 '"30m", "1h30m" or "2d" (a bare number is seconds), got true', id="duration-bool"),
    pytest.param("[job]\n" + JOB, 'config.toml: "job" must be an array of tables: write [[job]] for each '
                 "job, not [job]", id="job-not-array"),
    pytest.param("job = [1]\n", "config.toml: job #1 must be a table ([[job]]), got 1", id="job-item-type"),
    pytest.param("[[jobs]]\n" + JOB, 'config.toml: unknown top-level key "jobs" (did you mean "job"?)',
                 id="unknown-top-level"),
    pytest.param('name = "x"\n', 'config.toml: unknown top-level key "name" (it belongs in a [[job]])',
                 id="job-key-at-top-level"),
    pytest.param("defaults = 5\n", 'config.toml: "defaults" must be a table (write [defaults]), got 5',
                 id="defaults-type"),
    pytest.param('[defaults]\nname = "x"\n', 'config.toml: [defaults]: key "name" is not allowed here '
                 "(every job needs its own name)", id="name-in-defaults"),
    pytest.param("[defaults]\ntimout = 5\n", 'config.toml: [defaults]: unknown key "timout" (did you mean '
                 '"timeout"?)', id="unknown-defaults-key"),
    pytest.param("[daemon]\nhistroy = 5\n", 'config.toml: [daemon]: unknown key "histroy" (did you mean '
                 '"history"?)', id="unknown-daemon-key"),
    pytest.param('[daemon]\ntimeout = "1m"\n', 'config.toml: [daemon]: unknown key "timeout" (it belongs in '
                 'a [[job]])', id="job-key-in-daemon"),
    pytest.param("[daemon]\nhistory = 0\n", 'config.toml: [daemon]: key "history" must be at least 1, got 0',
                 id="daemon-history"),
    pytest.param("[daemon]\nlog_keep = -1\n", 'config.toml: [daemon]: key "log_keep" must be at least 0, '
                 "got -1", id="daemon-log-keep"),
    pytest.param('[daemon]\nlog_max_bytes = "10 parsecs"\n', 'config.toml: [daemon]: key "log_max_bytes" '
                 'must be a number of bytes or a size like "512KiB" or "10MB" (units B, KB, MB, GB, KiB, MiB, '
                 'GiB), got "10 parsecs"', id="daemon-size"),
    pytest.param("[daemon]\nlog_max_bytes = 0\n", 'config.toml: [daemon]: key "log_max_bytes" must be at '
                 "least 1 byte, got 0", id="daemon-size-zero"),
    pytest.param('[daemon]\nkill_grace = "soon"\n', 'config.toml: [daemon]: key "kill_grace" must be a '
                 'duration like "90s", "30m", "1h30m" or "2d" (a bare number is seconds), got "soon"',
                 id="daemon-duration"),
    pytest.param("[daemon]\nshell = 5\n", 'config.toml: [daemon]: key "shell" must be a string, got 5',
                 id="daemon-shell"),
]


@pytest.mark.parametrize("text, message", EXACT)
def test_rejection_message(text: str, message: str) -> None:
    assert problems_of(text) == [message]


@pytest.mark.parametrize(
    "keys, prefix, mentions",
    [
        pytest.param({"cron": "61 * * * *"}, 'config.toml: job "x": key "cron": ', "61 * * * *", id="bad-cron"),
        pytest.param({"cron": "0 0 30 2 *"}, 'config.toml: job "x": key "cron": ', "0 0 30 2 *",
                     id="never-fires"),
        pytest.param({"cron": 5}, 'config.toml: job "x": key "cron" must be a string', "got 5", id="cron-type"),
        pytest.param({"tz": "Mars/Olympus_Mons"}, 'config.toml: job "x": key "tz": ', "Mars/Olympus_Mons",
                     id="unknown-zone"),
    ],
)
def test_schedule_rejections_name_job_key_and_value(keys: dict, prefix: str, mentions: str) -> None:
    [message] = problems_of(job(**keys))
    assert message.startswith(prefix)
    assert mentions in message


def test_bad_zone_still_reports_bad_cron() -> None:
    found = problems_of(job(tz="Nowhere/Land", cron="* * * 13 *"))
    assert len(found) == 2
    assert found[0].startswith('config.toml: job "x": key "tz": ') and "Nowhere/Land" in found[0]
    assert found[1].startswith('config.toml: job "x": key "cron": ') and "* * * 13 *" in found[1]


def test_every_problem_in_the_file_is_reported_at_once() -> None:
    text = (
        'bogus = 1\n'
        "[daemon]\nhistory = 0\n"
        '[[job]]\nname = "a"\ncron = "* * * * *"\ncommand = "true"\noverlap = "no"\n'
        '[[job]]\ncron = "* * * * *"\ncommand = "true"\n'
        '[[job]]\nname = "c"\ncommand = "true"\ntimeout = "forever"\nfoo = 1\n'
    )
    assert problems_of(text) == [
        'config.toml: unknown top-level key "bogus"',
        'config.toml: [daemon]: key "history" must be at least 1, got 0',
        'config.toml: job "a": key "overlap" must be true or false, got "no"',
        'config.toml: job #2: missing key "name"',
        'config.toml: job "c": key "timeout" must be a duration like "90s", "30m", "1h30m" or "2d" (a bare '
        'number is seconds), got "forever"',
        'config.toml: job "c": unknown key "foo"',
        'config.toml: job "c": missing key "cron"',
    ]


def test_messages_name_the_file_as_given() -> None:
    [message] = problems_of(job(overlap="yes"), "/etc/koku/jobs.toml")
    assert message.startswith('/etc/koku/jobs.toml: job "x": key "overlap"')


def test_a_bad_key_is_not_also_reported_missing() -> None:
    assert problems_of(job(name=3)) == ['config.toml: job #1: key "name" must be a string, got 3']


def test_several_bad_env_variables_each_reported() -> None:
    found = problems_of(job(env={"A": 1, "B": "ok", "C": False}))
    assert found == [
        'config.toml: job "x": key "env.A" must be a string, got 1',
        'config.toml: job "x": key "env.C" must be a string, got false',
    ]


# --- TOML syntax and files ---


def test_syntax_error_gives_line_and_column_once() -> None:
    [message] = problems_of('[[job]]\nname = "x"\ncron = * * * * *\n')
    assert re.fullmatch(r"config\.toml: line 3, column 8: \w.*", message), message
    assert "(at line" not in message


def test_syntax_error_at_end_of_file_still_has_a_position() -> None:
    [message] = problems_of('[[job]]\nname = "x"\ncron = ["a",\n')
    assert re.match(r"config\.toml: line \d+, column \d+: ", message), message
    assert "end of document" not in message


def test_single_job_table_declared_twice_gets_a_hint() -> None:
    [message] = problems_of("[job]\nname = 'a'\n[job]\nname = 'b'\n")
    assert message.startswith("config.toml: line 3, column ")
    assert "write [[job]] for each job" in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "config.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f'config file {path} does not exist (create one with "ku init")'


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"is a directory"):
        load_config(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(JOB)
    path.chmod(0)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value) == f"config file {path} is not readable (permission denied)"


def test_other_read_errors_are_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "config.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"cannot read config file {path}: Not a directory"


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'[[job]]\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: line 2: the file is not valid UTF-8 (TOML must be UTF-8)"


def test_load_config_reads_the_file_and_keeps_its_path(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("\ufeff[[job]]\n" + JOB)  # a BOM from a Windows editor is tolerated
    config = load_config(path)
    assert config.path == path
    assert [j.name for j in config.jobs] == ["x"]


# --- valid configs: values, defaults, merging, warnings ---


def test_job_values_and_defaults() -> None:
    config = parse_config("[[job]]\n" + JOB)
    [j] = config.jobs
    assert (j.name, j.cron, j.command) == ("x", "* * * * *", "true")
    assert (j.dir, j.on_error, j.overlap, j.timeout, dict(j.env), j.tz) == (None, OnError.CONTINUE, False,
                                                                            None, {}, None)
    assert (j.jitter, j.max_failures, j.catch_up, j.description) == (0.0, 3, CatchUp.SKIP, "")
    assert j.schedule is not None
    assert config.daemon == DaemonConfig()
    assert config.daemon.log_max_bytes == 10 * 1024 * 1024
    assert config.warnings == ()


def test_every_job_key_set() -> None:
    text = job(dir="/", on_error="stop", overlap=True, timeout="1h30m", env={"A": "1"}, tz="Asia/Tokyo",
               jitter=90, max_failures=5, catch_up=True, description="d")
    [j] = parse_config(text).jobs
    assert j.on_error is OnError.STOP
    assert (j.dir, j.overlap, j.timeout, dict(j.env), j.tz) == ("/", True, 5400.0, {"A": "1"}, "Asia/Tokyo")
    assert (j.jitter, j.max_failures, j.catch_up, j.description) == (90.0, 5, CatchUp.ONCE, "d")


@pytest.mark.parametrize("written, seconds", [("90s", 90.0), ("30m", 1800.0), ("1h30m", 5400.0), ("2d", 172800.0),
                                              (45, 45.0), ("45", 45.0), (1.5, 1.5)])
def test_durations(written: object, seconds: float) -> None:
    [j] = parse_config(job(timeout=written)).jobs
    assert j.timeout == seconds


@pytest.mark.parametrize("written, size", [(4096, 4096), ("4096", 4096), ("512B", 512), ("10KB", 10_000),
                                           ("10MB", 10_000_000), ("1GB", 10**9), ("512KiB", 524288),
                                           ("10MiB", 10485760), ("2GiB", 2 * 2**30), ("1.5 KiB", 1536),
                                           ("10mib", 10485760)])
def test_sizes(written: object, size: int) -> None:
    assert parse_size(written) == size
    config = parse_config(tomli_w.dumps({"daemon": {"log_max_bytes": written}}))
    assert config.daemon.log_max_bytes == size


def test_daemon_table() -> None:
    text = ('[daemon]\nshell = "/bin/bash"\nhistory = 7\nlog_max_bytes = "1MiB"\nlog_keep = 0\n'
            'kill_grace = "2s"\nshutdown_grace = "1m"\nsocket_group = "wheel"\n')
    assert parse_config(text).daemon == DaemonConfig("/bin/bash", 7, 2**20, 0, 2.0, 60.0, "wheel")


def test_defaults_apply_and_job_wins() -> None:
    text = (
        '[defaults]\ntimeout = "10m"\non_error = "backoff"\ntz = "UTC"\nenv = { A = "da", B = "db" }\n'
        '[[job]]\nname = "a"\ncron = "0 * * * *"\ncommand = "true"\n'
        '[[job]]\nname = "b"\ncron = "0 * * * *"\ncommand = "true"\ntimeout = "5s"\n'
        'env = { B = "jb", C = "jc" }\n'
    )
    a, b = parse_config(text).jobs
    assert (a.timeout, a.on_error, a.tz, dict(a.env)) == (600.0, OnError.BACKOFF, "UTC", {"A": "da", "B": "db"})
    assert (b.timeout, b.on_error, dict(b.env)) == (5.0, OnError.BACKOFF, {"A": "da", "B": "jb", "C": "jc"})


def test_cron_and_command_may_come_from_defaults() -> None:
    text = ('[defaults]\ncron = "*/5 * * * *"\ncommand = "./run.sh"\n'
            '[[job]]\nname = "one"\ndir = "/"\n[[job]]\nname = "two"\ndir = "/tmp"\ncommand = "./other.sh"\n')
    one, two = parse_config(text).jobs
    assert (one.cron, one.command, two.cron, two.command) == ("*/5 * * * *", "./run.sh", "*/5 * * * *",
                                                              "./other.sh")


def test_bad_default_is_reported_once_not_per_job() -> None:
    text = ('[defaults]\ncron = "99 * * * *"\ntimeout = "x"\n'
            '[[job]]\nname = "a"\ncommand = "true"\n[[job]]\nname = "b"\ncommand = "true"\n')
    found = problems_of(text)
    assert len(found) == 2
    assert found[0].startswith('config.toml: [defaults]: key "timeout" must be a duration')
    assert found[1].startswith('config.toml: [defaults]: key "cron": ') and "99 * * * *" in found[1]


def test_empty_config_is_valid_with_a_warning() -> None:
    config = parse_config("")
    assert config.jobs == ()
    assert config.warnings == ("config.toml: no jobs defined (add a [[job]] table)",)


def test_missing_dir_is_a_warning(tmp_path: Path) -> None:
    config = parse_config(job(dir="missing"), tmp_path / "config.toml")
    [j] = config.jobs
    assert j.dir == "missing"  # kept as written
    assert config.job_dir(j) == tmp_path / "missing"
    assert config.warnings == (
        f'{tmp_path / "config.toml"}: job "x": key "dir": directory "missing" ({tmp_path / "missing"}) '
        "does not exist",
    )
    (tmp_path / "missing").mkdir()
    assert parse_config(job(dir="missing"), tmp_path / "config.toml").warnings == ()


def test_dir_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    config = parse_config(job(dir="~"), "/elsewhere/config.toml")
    assert config.job_dir(config.jobs[0]) == tmp_path
    assert config.warnings == ()


def test_config_job_lookup() -> None:
    config = parse_config("[[job]]\n" + JOB + '[[job]]\nname = "y"\ncron = "0 0 * * *"\ncommand = "ls"\n')
    assert config.job("y").command == "ls"
    assert config.job("z") is None


# --- JobConfig equality: the daemon's reload diff ---


def test_same_text_gives_equal_jobs_and_schedule_is_ignored() -> None:
    first = parse_config(job(env={"A": "1"})).jobs[0]
    second = parse_config(job(env={"A": "1"})).jobs[0]
    assert first == second and hash(first) == hash(second)
    assert first.schedule is not second.schedule
    assert JobConfig("x", "* * * * *", "true", env={"A": "1"}) == first
    other_schedule = parse_schedule("0 0 1 1 *", "UTC")
    assert JobConfig("x", "* * * * *", "true", env={"A": "1"}, schedule=other_schedule) == first


@pytest.mark.parametrize("change", [{"cron": "0 * * * *"}, {"command": "false"}, {"env": {"A": "2"}},
                                    {"tz": "UTC"}, {"timeout": "1s"}, {"on_error": "stop"}])
def test_any_changed_key_makes_jobs_unequal(change: dict) -> None:
    before = parse_config(job(env={"A": "1"})).jobs[0]
    after = parse_config(job(**{"env": {"A": "1"}, **change})).jobs[0]
    assert before != after


def test_job_config_is_immutable() -> None:
    j = parse_config(job(env={"A": "1"})).jobs[0]
    with pytest.raises(AttributeError):
        j.command = "rm -rf /"  # type: ignore[misc]
    with pytest.raises(TypeError):
        j.env["A"] = "2"  # type: ignore[index]


def test_hand_built_job_gets_a_schedule() -> None:
    j = JobConfig(name="x", cron="0 3 * * *", command="true", on_error="stop")  # type: ignore[arg-type]
    assert j.schedule is not None and j.on_error is OnError.STOP


# --- the example config and `ku init` ---


def test_example_config_is_valid() -> None:
    config = parse_config(EXAMPLE_CONFIG)
    backup, cleanup = config.jobs
    assert (backup.name, backup.cron) == ("backup", "0 2 * * *") and "tar -czf" in backup.command
    assert (cleanup.name, cleanup.cron) == ("cleanup", "30 3 * * *") and "find ~/backups" in cleanup.command
    assert config.warnings == ()


def test_example_documents_every_key() -> None:
    for key in JOB_KEYS + DAEMON_KEYS:
        assert re.search(rf"^#? {{0,2}}{key} = ", EXAMPLE_CONFIG, re.MULTILINE), key
    assert "[defaults]" in EXAMPLE_CONFIG and "[daemon]" in EXAMPLE_CONFIG


def test_example_stays_valid_with_every_option_uncommented() -> None:
    uncommented = re.sub(r"^# ?(\w+ = )", r"\1", EXAMPLE_CONFIG, flags=re.MULTILINE)
    assert uncommented.count("\n#") < EXAMPLE_CONFIG.count("\n#")
    config = parse_config(uncommented)
    assert config.jobs[0].tz == "Europe/Berlin" and config.daemon.socket_group == "staff"
    assert dict(config.jobs[1].env) == {"PATH": "/usr/local/bin:/usr/bin:/bin"}


def test_write_example_creates_parents_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "config.toml"
    assert write_example(path) == path
    assert path.read_text() == EXAMPLE_CONFIG
    assert [job.name for job in load_config(path).jobs] == [job.name for job in parse_config(EXAMPLE_CONFIG).jobs] != []
    path.write_text("# mine\n")
    with pytest.raises(UsageError) as info:
        write_example(path)
    assert str(info.value) == f"config file {path} already exists; use --force to overwrite"
    assert path.read_text() == "# mine\n"
    write_example(path, force=True)
    assert path.read_text() == EXAMPLE_CONFIG


def test_bad_local_zone_is_reported_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Not/AZone")
    text = "[[job]]\n" + JOB + '[[job]]\nname = "y"\ncron = "0 0 * * *"\ncommand = "ls"\n'
    [message] = problems_of(text)
    assert message.startswith("config.toml: the local time zone is unusable: ") and "Not/AZone" in message
    assert len(parse_config(job(tz="UTC")).jobs) == 1  # a job with its own zone does not need the local one


def test_5000_nested_brackets_are_a_config_error_not_a_recursion_error():
    with pytest.raises(ConfigError) as info:
        parse_config("x = " + "[" * 5000 + "\n", "c.toml")
    assert info.value.problems == ["c.toml: arrays or tables nested too deeply"]
