"""Drop-in job files: [daemon] include = [globs]; errors name the file; reload sees added/changed/removed files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import wait_for
from koku.core.config import load_config
from koku.errors import ConfigError

MAIN = '[daemon]\ninclude = ["jobs.d/*.toml"]\n\n[[job]]\nname = "main"\ncron = "@daily"\ncommand = "true"\n'


def job(name: str, extra: str = "", cron: str = "@daily", command: str = "true") -> str:
    return f'[[job]]\nname = "{name}"\ncron = "{cron}"\ncommand = "{command}"\n{extra}\n'


def tree(tmp_path: Path, main: str = MAIN, **dropins: str) -> Path:
    config = tmp_path / "etc" / "config.toml"
    (config.parent / "jobs.d").mkdir(parents=True)
    config.write_text(main)
    for name, text in dropins.items():
        (config.parent / "jobs.d" / f"{name}.toml").write_text(text)
    return config


def problems(config: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(config)
    return info.value.problems


def test_jobs_come_from_every_matched_file_in_order_and_know_their_file(tmp_path, monkeypatch):
    config = tree(tmp_path, b=job("b1") + job("b2"), a=job("a1"))
    monkeypatch.chdir("/")  # relative patterns are relative to the config, not to the cwd
    cfg = load_config(config)
    assert [j.name for j in cfg.jobs] == ["main", "a1", "b1", "b2"]
    d = config.parent / "jobs.d"
    assert [j.source for j in cfg.jobs] == ["", str(d / "a.toml"), str(d / "b.toml"), str(d / "b.toml")]
    assert cfg.dropins == (str(d / "a.toml"), str(d / "b.toml"))


def test_absolute_and_several_patterns_a_file_matched_twice_is_read_once(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.toml").write_text(job("x"))
    main = f'[daemon]\ninclude = ["jobs.d/*.toml", "{other}/*.toml", "jobs.d/a.toml"]\n'
    cfg = load_config(tree(tmp_path, main, a=job("a")))
    assert [j.name for j in cfg.jobs] == ["a", "x"]


def test_a_glob_matching_nothing_is_fine_a_missing_plain_path_is_an_error(tmp_path):
    cfg = load_config(tree(tmp_path))
    assert [j.name for j in cfg.jobs] == ["main"]
    config = tmp_path / "etc" / "config.toml"
    config.write_text(MAIN.replace('"jobs.d/*.toml"', '"jobs.d/*.toml", "jobs.d/typo.toml"'))
    assert problems(config) == [f"{config}: [daemon] key \"include\": 'jobs.d/typo.toml': "
                                f"{config.parent / 'jobs.d/typo.toml'} does not exist"]


def test_errors_in_a_drop_in_name_that_file(tmp_path):
    config = tree(tmp_path, good=job("g"), bad=job("b", 'comand = "x"') + job("c", 'timeout = "soon"'),
                  syntax='[[job]]\nname = "s"\ncron = \n')
    d = config.parent / "jobs.d"
    found = problems(config)
    assert f'{d / "bad.toml"}: job "b": unknown key "comand" (did you mean "command"?)' in found
    assert any(p.startswith(f'{d / "bad.toml"}: job "c": key "timeout"') for p in found)
    assert any(p.startswith(f"{d / 'syntax.toml'}: line 3, column") for p in found)
    assert len(found) == 3


def test_a_duplicate_name_across_files_names_both_files(tmp_path):
    config = tree(tmp_path, a=job("main"))
    assert problems(config) == [f'{config.parent / "jobs.d/a.toml"}: job "main": key "name": "main" is already '
                                f"used by job #1 in {config} (names must be unique across the config and its "
                                "drop-ins)"]


def test_daemon_and_defaults_tables_belong_in_the_main_config(tmp_path):
    config = tree(tmp_path, a='[daemon]\nshell = "/bin/bash"\n[defaults]\ntimeout = "1m"\n' + job("a"))
    label = config.parent / "jobs.d/a.toml"
    assert problems(config) == [
        f'{label}: "daemon" is not allowed in a drop-in file (only [[job]] and [notify.NAME] tables; [daemon] '
        f"belongs in the main config {config})",
        f'{label}: "defaults" is not allowed in a drop-in file (only [[job]] and [notify.NAME] tables; '
        f"[defaults] belongs in the main config {config})"]


def test_defaults_apply_to_drop_in_jobs_and_their_relative_dir_is_their_files(tmp_path):
    main = MAIN + '\n[defaults]\ntimeout = "5m"\n'
    config = tree(tmp_path, main, a=job("a", 'dir = "sub"'))
    (config.parent / "jobs.d" / "sub").mkdir()
    cfg = load_config(config)
    a = cfg.job("a")
    assert a.timeout == 300
    assert cfg.job_dir(a) == config.parent / "jobs.d" / "sub"
    assert not cfg.warnings


def test_unreadable_drop_ins_are_errors_naming_the_file(tmp_path):
    config = tree(tmp_path)
    d = config.parent / "jobs.d"
    (d / "dangling.toml").symlink_to(tmp_path / "gone")
    (d / "dir.toml").mkdir()
    (d / "latin1.toml").write_bytes(b'# caf\xe9\n')
    assert problems(config) == [
        f"{d / 'dangling.toml'}: cannot read this drop-in file: No such file or directory",
        f"{d / 'dir.toml'}: is a directory, not a drop-in file (included by [daemon] include)",
        f"{d / 'latin1.toml'}: line 1: the file is not valid UTF-8 (TOML must be UTF-8)"]


@pytest.mark.parametrize("value, tail", [
    ('"jobs.d/*.toml"', 'must be an array of file patterns like ["jobs.d/*.toml"], got "jobs.d/*.toml"'),
    ('[""]', 'each entry must be a non-empty file pattern, got ""'),
    ("[3]", "each entry must be a non-empty file pattern, got 3"),
])
def test_bad_include_values(tmp_path, value, tail):
    config = tree(tmp_path, f"[daemon]\ninclude = {value}\n")
    assert problems(config) == [f'{config}: [daemon]: key "include" {tail}'.replace('"include" each', '"include": each')]


def test_notifiers_may_live_in_drop_ins_but_not_twice(tmp_path):
    config = tree(tmp_path, MAIN + '\n[notify.ops]\ncommand = "true"\n',
                  a='[notify.team]\ncommand = "true"\n' + job("a", 'notify = ["team", "ops"]'))
    cfg = load_config(config)
    assert set(cfg.alerting.notifiers) == {"ops", "team"}
    (config.parent / "jobs.d/b.toml").write_text('[notify.ops]\ncommand = "false"\n')
    assert problems(config) == [f"{config.parent / 'jobs.d/b.toml'}: [notify.ops]: already defined in {config} "
                                "(notifier names must be unique across the config and its drop-ins)"]


# ----- the real daemon and the real ku ----------------------------------------------------------------
@pytest.mark.e2e
def test_check_status_and_reload_with_drop_ins(kenv):
    out = kenv.work
    config = kenv.write_config(MAIN)
    d = config.parent / "jobs.d"
    d.mkdir()
    (d / "a.toml").write_text(job("a", cron="* * * * * *", command=f"echo a >> {out}/a"))
    check = kenv.ku("check")
    assert check.returncode == 0, check.stderr
    assert "2 jobs, valid (with 1 drop-in file)" in check.stdout and "FILE" in check.stdout
    assert str(d / "a.toml") in check.stdout
    by_name = {j["name"]: j["file"] for j in json.loads(kenv.ku("check", "--json").stdout)}
    assert by_name == {"main": str(config), "a": str(d / "a.toml")}

    kenv.start()
    assert kenv.status("a")["file"] == str(d / "a.toml")
    assert kenv.status("main")["file"] == str(config)
    detail = kenv.ku("status", "a")
    assert f"file:" in detail.stdout and str(d / "a.toml") in detail.stdout
    wait_for(lambda: (out / "a").exists(), timeout=15, what="drop-in job a ran")

    # Added, changed and removed files, in one reload.
    (d / "b.toml").write_text(job("b", cron="* * * * * *", command=f"echo b >> {out}/b"))
    (d / "a.toml").write_text(job("a", cron="* * * * * *", command=f"echo A >> {out}/a"))
    res = kenv.ku("reload")
    assert res.returncode == 0, res.stderr
    assert "added b" in res.stdout and "changed a" in res.stdout
    wait_for(lambda: (out / "b").exists() and "A" in (out / "a").read_text(), timeout=15, what="b ran, a changed")
    (d / "b.toml").unlink()
    res = kenv.ku("reload")
    assert "removed b" in res.stdout, res.stdout + res.stderr
    assert [j["name"] for j in kenv.request("Status")["Status"]] == ["main", "a"]

    # A broken drop-in: exit 2 naming the file, and the old config keeps running.
    (d / "c.toml").write_text('[[job]]\nname = "c"\ncron = "* * * * * *"\ncomand = "x"\n')
    res = kenv.ku("reload")
    assert res.returncode == 2
    assert f'{d / "c.toml"}: job "c": unknown key "comand"' in res.stderr
    assert [j["name"] for j in kenv.request("Status")["Status"]] == ["main", "a"]
    lines = len((out / "a").read_text().splitlines())
    wait_for(lambda: len((out / "a").read_text().splitlines()) > lines + 1, timeout=15, what="a still running")
    # An unreadable one too (a dangling symlink), then fixed: the reload goes through.
    (d / "c.toml").unlink()
    (d / "d.toml").symlink_to(kenv.root / "nowhere")
    res = kenv.ku("reload")
    assert res.returncode == 2 and f"{d / 'd.toml'}: cannot read this drop-in file" in res.stderr
    (d / "d.toml").unlink()
    assert kenv.ku("reload").returncode == 0


@pytest.mark.e2e
def test_import_into_a_new_drop_in_validates_it_with_the_whole_config(kenv):
    config = kenv.write_config(MAIN)
    d = config.parent / "jobs.d"
    d.mkdir()
    (d / "a.toml").write_text(job("backup"))
    res = kenv.ku("import", "--no-system", "--into", str(d / "crontab.toml"), input="0 3 * * * /bin/backup\n")
    assert res.returncode == 0, res.stderr
    assert "backup-2" in (d / "crontab.toml").read_text()  # unique across the drop-ins too
    assert config.read_text() == MAIN
    assert kenv.ku("check").returncode == 0
    again = kenv.ku("import", "--no-system", "--into", str(d / "crontab.toml"), input="0 3 * * * /bin/x\n")
    assert again.returncode == 2 and "already exists" in again.stderr
    outside = kenv.ku("import", "--no-system", "--into", str(kenv.root / "x.toml"), input="0 3 * * * /bin/x\n")
    assert outside.returncode == 2 and "is not matched by [daemon] include" in outside.stderr
    assert not (kenv.root / "x.toml").exists()
