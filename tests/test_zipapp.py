"""koku.pyz: the build, the bootstrap (cache dir, extraction, re-exec) and the file run for real.

The archive is built once per session with ``--current`` from a snapshot of the source tree (other
modules change while tests run) and run by fresh venvs that have none of koku's dependencies. A
second build adds native folders for the other CPythons found on this machine. The full
multi-target build is tested only when its wheels are already in build/wheels (``build_zipapp.py``
once fills it) or when KOKU_TEST_FULL_BUILD=1: it downloads about 70 MB.
"""

from __future__ import annotations

import glob
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator

import pytest

import koku
from koku.zipapp import bootstrap
from koku.zipapp.bootstrap import BootstrapError, Manifest, Native
from conftest import alive, load_build_module, processes_mentioning, wait_for

pytestmark = pytest.mark.slow  # builds koku.pyz (tens of seconds); the fast lane skips this module

REPO = Path(__file__).resolve().parent.parent
WHEELS = REPO / "build" / "wheels"
BUILD_TIMEOUT = 600


build_zipapp = load_build_module()
GEVENT = build_zipapp.NATIVE_PINS["gevent"]


# -- helpers -------------------------------------------------------------------------------------------


def run(cmd: list[str], timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def snapshot_source(dest: Path) -> Path:
    """A copy of what the build reads, so a concurrent edit cannot change the archive under a test."""
    dest.mkdir(parents=True)
    shutil.copy2(REPO / "build_zipapp.py", dest)
    shutil.copy2(REPO / "pyproject.toml", dest)
    for path in (REPO / "koku").rglob("*.py"):
        if "__pycache__" not in path.parts:
            target = dest / path.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return dest


def build(src: Path, output: Path, *args: str) -> Path:
    res = run([sys.executable, str(src / "build_zipapp.py"), "--wheels", str(WHEELS), "--output", str(output),
               *args], timeout=BUILD_TIMEOUT)
    assert res.returncode == 0, res.stderr + res.stdout
    return output


def key_of(python: str) -> str:
    res = run([python, "-c", f"import sys; sys.path.insert(0, {str(REPO)!r}); "
                             "from koku.zipapp.bootstrap import native_key; print(native_key())"])
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def _interpreter_minor(path: str) -> str | None:
    """ "3.12" when ``path`` really runs a CPython 3.10+, else None. A pyenv shim for a version that is not
    selected (or a clean HOME without pyenv's root) exits non-zero: that interpreter is absent, not an error."""
    try:
        res = subprocess.run([path, "-I", "-c", "import sys, platform; "
                              "print(platform.python_implementation(), '%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    impl, _, minor = res.stdout.strip().partition(" ")
    if res.returncode != 0 or impl != "CPython" or not minor.startswith("3.") or int(minor.split(".")[1]) < 10:
        return None
    return minor


def all_interpreters() -> dict[str, str]:
    """minor version ("3.12") -> interpreter, for every CPython 3.10+ found that really runs (this one too)."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3")))
    candidates += [p for minor in range(10, 15) if (p := shutil.which(f"python3.{minor}"))]
    found: dict[str, str] = {"%d.%d" % sys.version_info[:2]: sys.executable}
    for path in candidates:
        minor = _interpreter_minor(path)
        if minor is not None:
            found.setdefault(minor, path)
    return found


def other_interpreters() -> dict[str, str]:
    """minor version ("3.12") -> interpreter, for the CPythons found besides the running one."""
    found = all_interpreters()
    found.pop("%d.%d" % sys.version_info[:2], None)
    return found


def nested(zf: zipfile.ZipFile, member: str) -> zipfile.ZipFile:
    """A nested archive of ``zf`` (``_native/<key>.zip``, ``_lazy/tzdata.zip``), opened in memory."""
    return zipfile.ZipFile(io.BytesIO(zf.read(member)))


def extracted_names(pyz: Path, key: str) -> set[str]:
    """The files an extracted copy for ``key`` must hold: the root, that native build, the lazy packages."""
    with zipfile.ZipFile(pyz) as zf:
        names = {n for n in zf.namelist() if not n.endswith("/") and not n.startswith(("_native/", "_lazy/"))}
        lazy = [n for n in zf.namelist() if n.startswith("_lazy/") and n.endswith(".zip")]
        for member in [f"_native/{key}.zip", *lazy]:
            with nested(zf, member) as inner:
                names |= {n for n in inner.namelist() if not n.endswith("/")}
    return names


# -- session fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def build_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="koku-zipapp-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def src(build_root: Path) -> Path:
    return snapshot_source(build_root / "src")


@pytest.fixture(scope="session")
def pyz(src: Path, build_root: Path) -> Path:
    return build(src, build_root / "out" / "koku.pyz", "--current")


@pytest.fixture(scope="session")
def pyz_multi(src: Path, build_root: Path) -> tuple[Path, dict[str, str]]:
    """A build with native folders for this interpreter and every other CPython found."""
    others = {minor: python for minor, python in other_interpreters().items() if minor in build_zipapp.PYTHONS}
    keys = {minor: key_of(python) for minor, python in others.items()}
    args = ["--current"]
    for key in keys.values():
        args += ["--target", key]
    if not keys:  # no other CPython here (a clean HOME): another arch still makes a different, bigger file
        args += ["--target", bootstrap.native_key().replace("x86_64", "aarch64") if "x86_64" in
                 bootstrap.native_key() else bootstrap.native_key().replace("aarch64", "x86_64")]
    return build(src, build_root / "multi" / "koku.pyz", *args), others


@pytest.fixture(scope="session")
def bare_venvs(build_root: Path) -> Callable[[str], str]:
    """A venv without pip or any package for an interpreter: koku must bring everything itself."""
    made: dict[str, str] = {}

    def make(python: str) -> str:
        if python not in made:
            where = build_root / "venvs" / str(len(made))
            res = run([python, "-m", "venv", "--without-pip", str(where)])
            assert res.returncode == 0, res.stderr
            made[python] = str(where / "bin" / "python3")
        return made[python]

    return make


@pytest.fixture(scope="session")
def bare_python(bare_venvs: Callable[[str], str]) -> str:
    return bare_venvs(getattr(sys, "_base_executable", sys.executable))


class PyzHome:
    """A user on a fresh server: koku.pyz and a ku symlink in bin/, a temp HOME, a bare python3."""

    def __init__(self, root: Path, pyz: Path, python: str):
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir()
        self.pyz = self.bin / "koku.pyz"
        shutil.copy2(pyz, self.pyz)
        (self.bin / "ku").symlink_to("koku.pyz")
        self.home = root / "home"
        self.home.mkdir()
        self.cache = self.home / ".cache"
        self.state = self.home / ".local" / "state" / "koku"
        self.python = python
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("KOKU_", "XDG_", "PYTHON", "VIRTUAL_ENV"))}
        self.env.update(
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.home / ".config"),
            XDG_STATE_HOME=str(self.home / ".local" / "state"),
            XDG_CACHE_HOME=str(self.cache),
            PATH=f"{Path(python).parent}:/usr/bin:/bin",
            PYTHONDONTWRITEBYTECODE="1",
        )
        self.daemon_pids: set[int] = set()

    def ku(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run through the symlink and its shebang, as `./ku ...` would."""
        return run([str(self.bin / "ku"), *args], timeout=timeout, env=self.env, cwd=self.root)

    def koku(self, *args: str, python: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run as `python3 koku.pyz ...`."""
        return run([python or self.python, str(self.pyz), *args], timeout=timeout, env=self.env, cwd=self.root)

    def write_config(self, text: str) -> None:
        path = self.home / ".config" / "koku" / "config.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def daemon_pid(self) -> int | None:
        try:
            pid = int((self.state / "daemon.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        self.daemon_pids.add(pid)
        return pid

    def cache_entries(self) -> list[str]:
        """Everything in the cache but the bytecode cache (koku/pyc): client commands may fill that one,
        never anything else (no native code, no extracted app)."""
        found = []
        for dirpath, dirnames, filenames in os.walk(self.cache):
            if os.path.basename(dirpath) == "koku" and "pyc" in dirnames:
                dirnames.remove("pyc")
                assert all(name.endswith(".pyc") for _, _, names in os.walk(os.path.join(dirpath, "pyc"))
                           for name in names)
            found += [os.path.join(dirpath, n) for n in dirnames + filenames]
        return [f for f in found if f != os.path.join(str(self.cache), "koku")]


@pytest.fixture
def home_factory() -> Iterator[Callable[..., PyzHome]]:
    homes: list[PyzHome] = []

    def make(pyz: Path, python: str) -> PyzHome:
        # Short path: the daemon's Unix socket lives under it (108-byte limit).
        home = PyzHome(Path(tempfile.mkdtemp(prefix="kz-", dir="/tmp")), pyz, python)
        homes.append(home)
        return home

    yield make
    leftovers = []
    for home in homes:
        home.daemon_pid()
        for pid in sorted(home.daemon_pids):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
                leftovers.append(f"daemon {pid}")
        for pid in processes_mentioning(str(home.root)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            leftovers.append(f"process {pid}")
        shutil.rmtree(home.root, ignore_errors=True)
    assert not leftovers, f"processes left behind: {leftovers}"


CONFIG = """\
[[job]]
name = "answer"
cron = "0 0 1 1 *"
command = "echo forty-two; exit 3"
"""


NEW_YORK_CONFIG = """\
[[job]]
name = "ny"
cron = "0 9 * * 1-5"
tz = "America/New_York"
command = "true"
"""


# -- the archive ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_archive_layout(pyz: Path) -> None:
    raw = pyz.read_bytes()
    assert raw.startswith(b"#!/usr/bin/env python3\n")
    assert pyz.stat().st_mode & stat.S_IXUSR
    key = bootstrap.native_key()
    with zipfile.ZipFile(pyz) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        manifest = json.loads(zf.read("_koku_build.json"))
        with nested(zf, f"_native/{key}.zip") as inner:
            native_infos = inner.infolist()
        with nested(zf, "_lazy/tzdata.zip") as inner:
            tzdata_infos = inner.infolist()
    assert names == sorted(names)
    assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in infos)
    for name in names:
        parts = name.rstrip("/").split("/")
        assert "__pycache__" not in parts and not name.endswith((".pyc", ".pyo")), name
        assert not {"tests", "test", "testing"} & set(parts[:-1]), name
        # every parent directory has its own entry: zipimport needs them for the zope namespace
        for i in range(1, len(parts)):
            assert "/".join(parts[:i]) + "/" in names, f"no directory entry above {name}"
    assert {"__main__.py", "koku/__main__.py", "koku/zipapp/bootstrap.py", "zope/", "zope/event/__init__.py",
            "zope/interface/__init__.py", "croniter/__init__.py", "dateutil/__init__.py",
            "_lazy/tzdata.zip"} <= set(names)
    assert set(manifest["natives"]) == {key}
    # Each native build and tzdata are one member: every start pays ~10-20 us per root entry.
    assert [n for n in names if n.startswith("_native/")] == ["_native/", f"_native/{key}.zip"]
    assert [n for n in names if n.startswith("_lazy/")] == ["_lazy/", "_lazy/tzdata.zip"]
    assert not [n for n in names if n.startswith("tzdata/")]
    assert any(n.startswith("tzdata-") and "LICENSE" in n for n in names)  # the licence stays visible
    assert len(names) < 400, f"{len(names)} entries at the root: something big is no longer nested"
    stored = {i.filename: i.compress_type for i in infos if i.filename.endswith(".zip")}
    assert set(stored.values()) == {zipfile.ZIP_STORED}  # deflated inside already
    for inner in (native_infos, tzdata_infos):
        inner_names = [i.filename for i in inner]
        assert inner_names == sorted(inner_names)
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) and i.external_attr == 0o644 << 16 for i in inner)
    native_names = {i.filename for i in native_infos}
    assert "gevent/__init__.py" in native_names
    assert any(n.startswith("greenlet/") and n.endswith(".so") for n in native_names)
    assert "tzdata/zoneinfo/America/New_York" in {i.filename for i in tzdata_infos}
    # outside the native builds nothing is compiled: the pure-mode dists had their speedups stripped
    assert not [n for n in names if n.endswith(".so")]
    assert not [i.filename for i in tzdata_infos if i.filename.endswith(".so")]
    assert manifest["versions"] == build_zipapp.NATIVE_PINS
    assert manifest["koku"] == koku.__version__
    assert manifest["natives"][key]["libc"] in ("glibc", "musl")


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_two_builds_are_byte_identical(pyz: Path, src: Path, build_root: Path) -> None:
    again = build(src, build_root / "again" / "koku.pyz", "--current")
    assert again.read_bytes() == pyz.read_bytes()


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_full_build_has_every_target(src: Path, build_root: Path) -> None:
    groups = [WHEELS / f"native-{t.python}-{t.arch}-{t.libc}" for t in build_zipapp.ALL_TARGETS]
    cached = all(any(g.glob(f"{build_zipapp.norm(n)}-{v}-*.whl")) for g in groups
                 for n, v in build_zipapp.NATIVE_PINS.items())
    if not cached and os.environ.get("KOKU_TEST_FULL_BUILD") != "1":
        pytest.skip("native wheels for every target are not in build/wheels (run build_zipapp.py once, "
                    "or set KOKU_TEST_FULL_BUILD=1 to download them)")
    full = build(src, build_root / "full" / "koku.pyz")
    expected = {t.key for t in build_zipapp.ALL_TARGETS}
    with zipfile.ZipFile(full) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read("_koku_build.json"))
        inside = {}
        for key in sorted(expected):
            with nested(zf, f"_native/{key}.zip") as inner:
                inside[key] = set(inner.namelist())
    assert len(expected) == 20
    assert {n for n in names if n.startswith("_native/")} == {"_native/"} | {f"_native/{k}.zip" for k in expected}
    assert len(names) < 400, f"{len(names)} entries at the root of the full build"
    assert set(manifest["natives"]) == expected
    for key, members in inside.items():
        arch = "aarch64" if "aarch64" in key else "x86_64"
        assert "gevent/__init__.py" in members
        assert "greenlet/__init__.py" in members
        so = [n for n in members if n.endswith(".so")]
        assert any(n.startswith("greenlet/_greenlet") for n in so), key
        assert any(f"-{arch}-" in n for n in so), f"{key}: {so[:3]}"
        # every extension module is built for this target's ABI (or the stable ABI), none for another
        abi = f".cpython-{key.split('-')[1]}-{arch}-linux-"
        assert all(abi in n or ".abi3." in n for n in so), f"{key}: {[n for n in so if abi not in n][:3]}"
        entry = manifest["natives"][key]
        assert entry["libc"] == ("musl" if key.endswith("musl") else "glibc")
        assert all(f"-cp{key.split('-')[1]}-" in w for w in entry["wheels"])


# -- running the file --------------------------------------------------------------------------------------


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_version_through_ku_symlink_names_the_native_build(pyz: Path, bare_python: str,
                                                          home_factory: Callable[..., PyzHome]) -> None:
    home = home_factory(pyz, bare_python)
    res = home.ku("--version")
    assert res.returncode == 0, res.stderr
    line = res.stdout.strip()
    assert line == f"koku {koku.__version__} (native: gevent {GEVENT} for {bootstrap.native_key()}, not extracted yet)"
    same = home.koku("--version")  # `python3 koku.pyz` and `./ku` are one program
    assert same.returncode == 0 and same.stdout.strip() == line


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_client_commands_work_without_dependencies_and_extract_nothing(
        pyz: Path, bare_python: str, home_factory: Callable[..., PyzHome]) -> None:
    home = home_factory(pyz, bare_python)
    explicit = home.root / "koku-cache"
    explicit.mkdir(mode=0o700)
    home.env["KOKU_CACHE_DIR"] = str(explicit)
    # the venv really has nothing: koku's dependencies must come from the archive
    assert run([bare_python, "-c", "import croniter"], env=home.env).returncode != 0
    res = home.ku("init")
    assert res.returncode == 0, res.stderr
    assert (home.home / ".config" / "koku" / "config.toml").is_file()
    res = home.ku("check")
    assert res.returncode == 0, res.stderr + res.stdout
    assert "valid" in res.stdout
    home.write_config(CONFIG)
    res = home.ku("check", "--next=2")
    assert res.returncode == 0 and "answer" in res.stdout, res.stderr + res.stdout
    assert home.ku("status").returncode == 3  # no daemon: a clean "not running", not a crash
    assert home.ku("--version").returncode == 0
    # Only bytecode was cached (in the explicit cache dir); nothing native was extracted anywhere.
    assert os.listdir(explicit) == ["pyc"]
    pyc = [n for _, _, names in os.walk(explicit / "pyc") for n in names]
    assert "koku.client.cli.pyc" in pyc and "prettytable.prettytable.pyc" in pyc
    assert not any(n.endswith(".so") for n in pyc)
    assert home.cache_entries() == []


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_zones_work_without_a_system_tz_database(pyz: Path, bare_python: str,
                                                 home_factory: Callable[..., PyzHome]) -> None:
    """tzdata is not at the archive's root; the first `import tzdata` unpacks it into the cache (data
    and __init__.py files only, never native code). PYTHONTZPATH=<empty dir> stands in for a minimal
    container without /usr/share/zoneinfo."""
    home = home_factory(pyz, bare_python)
    home.write_config(NEW_YORK_CONFIG)
    (home.root / "no-zones").mkdir()
    home.env["PYTHONTZPATH"] = str(home.root / "no-zones")
    # Without koku.pyz's import hook (archive put on sys.path by hand) there is no tzdata: the zone is unknown.
    by_hand = ("import sys\n"
               f"sys.path.insert(0, {str(home.pyz)!r})\n"
               "from koku.client.cli import main\n"
               "sys.exit(main(['check']))\n")
    res = run([bare_python, "-c", by_hand], env=home.env)
    assert res.returncode == 2 and 'unknown time zone "America/New_York"' in res.stderr, res.stderr
    assert home.cache_entries() == []

    res = home.ku("check", "--next=1")
    assert res.returncode == 0, res.stderr + res.stdout
    assert "America/New_York" in res.stdout and "09:00:00 -0" in res.stdout  # -05:00 or -04:00
    manifest = bootstrap.read_manifest(home.pyz)
    unpacked = home.cache / "koku" / bootstrap.lazy_dir_name(manifest, "tzdata")
    assert (unpacked / "tzdata" / "zoneinfo" / "America" / "New_York").is_file()
    assert not [p for p in home.cache.rglob("*.so")]
    assert not [p for p in (home.cache / "koku").iterdir() if p.name.endswith(bootstrap.native_key())]
    assert home.ku("check").returncode == 0  # unpacked once, then reused
    assert [p.name for p in (home.cache / "koku").iterdir() if p.name.endswith("-tzdata")] == [unpacked.name]


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_status_from_the_pyz_pays_for_no_heavy_module(pyz: Path, bare_python: str,
                                                      home_factory: Callable[..., PyzHome]) -> None:
    """What `ku status` imports from the archive, warm: no hashlib (OpenSSL, ~5 ms), zipfile, tzdata,
    gevent, or the bootstrap's extraction code."""
    home = home_factory(pyz, bare_python)
    assert home.ku("status").returncode == 3  # warms the bytecode cache
    res = run([bare_python, "-X", "importtime", str(home.pyz), "status"], env=home.env, cwd=home.root)
    assert res.returncode == 3, res.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert {"koku.client.cli", "koku.client.client", "koku.zipapp.zipcache"} <= imported  # the parse works
    assert not imported & {"hashlib", "_hashlib", "zipfile", "tzdata", "gevent", "greenlet", "koku.zipapp.bootstrap"}


def test_lazy_package_finder(pyz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from koku.zipapp import zipcache

    monkeypatch.setattr(sys, "path_importer_cache", dict(sys.path_importer_cache))
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    finder = zipcache._Finder(str(pyz), None, str(cache))
    spec = finder.find_spec("tzdata")
    assert spec is not None and spec.submodule_search_locations
    where = cache / bootstrap.lazy_dir_name(bootstrap.read_manifest(pyz), "tzdata")
    assert spec.origin == str(where / "tzdata" / "__init__.py")
    assert os.listdir(cache) == [where.name]  # no temp dir left behind
    assert finder.find_spec("tzdata").origin == spec.origin
    assert finder.find_spec("json") is None  # not lazy: the ordinary search decides
    assert finder.find_spec("tzdata.zoneinfo", [str(where / "tzdata")]) is None  # submodules: PathFinder
    # No usable cache dir: not found; an unusable one: an ImportError naming why, which zoneinfo reports
    # as an unknown zone.
    assert zipcache._Finder(str(pyz), None, None).find_spec("tzdata") is None
    with pytest.raises(ImportError, match="cannot unpack tzdata from .*: cannot use cache dir"):
        zipcache._Finder(str(pyz), None, str(tmp_path / "missing")).find_spec("tzdata")


def fake_pyz(path: Path, members: dict[str, bytes]) -> Path:
    key = bootstrap.native_key()
    manifest = {"build_id": "cd" * 32, "koku": "0", "versions": {"gevent": GEVENT},
                "natives": {key: {"libc": "glibc", "min_libc": "2.17", "wheels": []}}}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("_koku_build.json", json.dumps(manifest))
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("nested_member", ["_lazy/tzdata.zip", "_native/{key}.zip"])
def test_unsafe_names_in_a_nested_archive_are_refused(tmp_path: Path, nested_member: str) -> None:
    key = bootstrap.native_key()
    evil = build_zipapp.nested_zip({"tzdata/__init__.py": b"", "../escaped": b"x"})
    pyz = fake_pyz(tmp_path / "evil.pyz", {"__main__.py": b"", nested_member.format(key=key): evil})
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    with pytest.raises(BootstrapError, match=r"unsafe member name '\.\./escaped'"):
        if nested_member.startswith("_lazy/"):
            bootstrap.extract_lazy(pyz, cache, "tzdata")
        else:
            bootstrap.extract_app(pyz, cache, key)
    assert not (tmp_path / "escaped").exists()
    assert os.listdir(cache) == []  # the temp dir went too


def test_archive_without_its_listed_native_build_is_damaged(tmp_path: Path) -> None:
    pyz = fake_pyz(tmp_path / "damaged.pyz", {"__main__.py": b""})
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    with pytest.raises(BootstrapError, match=r"damaged: its manifest lists .*\.zip is missing; rebuild"):
        bootstrap.extract_app(pyz, cache)
    assert os.listdir(cache) == []


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_daemon_from_pyz_survives_the_file_being_replaced(
        pyz: Path, pyz_multi: tuple[Path, dict[str, str]], bare_python: str,
        home_factory: Callable[..., PyzHome]) -> None:
    home = home_factory(pyz, bare_python)
    home.write_config(CONFIG)
    res = home.ku("daemon", "start", timeout=60)
    assert res.returncode == 0, res.stderr + res.stdout
    pid = wait_for(home.daemon_pid, 15, what="daemon.pid")
    assert alive(pid)
    # it runs from the extracted copy; the .pyz is neither its program nor open nor mapped
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        cmdline = fh.read().split(b"\0")
    assert cmdline[1] == b"-I"  # isolated: never the caller's cwd or $PYTHONPATH on sys.path
    app = Path(cmdline[2].decode())
    assert app.parent == home.cache / "koku" and app.name.endswith(bootstrap.native_key())
    assert (app / "gevent" / "__init__.py").is_file()
    fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    assert not [f for f in fds if "koku.pyz" in f]
    assert "koku.pyz" not in Path(f"/proc/{pid}/maps").read_text()
    res = home.ku("status")
    assert res.returncode == 0 and "answer" in res.stdout, res.stderr + res.stdout
    res = home.ku("run", "answer", "--wait", timeout=60)
    assert res.returncode == 3, res.stderr + res.stdout
    assert "forty-two" in res.stdout
    version = home.ku("--version").stdout
    assert f"extracted in {app}" in version

    # upgrade: a different build copied over the file in place while the daemon runs
    new_pyz, _ = pyz_multi
    assert new_pyz.read_bytes() != pyz.read_bytes()
    shutil.copyfile(new_pyz, home.pyz)
    res = home.ku("status")
    assert res.returncode == 0 and "answer" in res.stdout, res.stderr + res.stdout
    res = home.ku("run", "answer", "--wait", timeout=60)
    assert res.returncode == 3, res.stderr + res.stdout
    assert home.daemon_pid() == pid and alive(pid)
    assert "not extracted yet" in home.ku("--version").stdout  # the new build is a new cache key

    res = home.ku("daemon", "stop", timeout=60)
    assert res.returncode == 0, res.stderr + res.stdout
    wait_for(lambda: not alive(pid), 15, what=f"daemon {pid} to exit")


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_webhook_and_metrics_from_the_pyz(pyz: Path, bare_python: str, home_factory: Callable[..., PyzHome]) -> None:
    """Alerts and metrics need nothing outside the archive: urllib for the webhook, and the bundled
    prometheus_client, loaded only when asked for."""
    from alerthelp import Hook, alert_config

    hook = Hook()
    try:
        home = home_factory(pyz, bare_python)
        home.write_config(alert_config({"name": "answer", "cron": "0 0 0 1 1 *", "command": "echo no; exit 3",
                                        "notify": ["ops"]}, notify={"ops": {"webhook": hook.url()}}))
        res = home.ku("daemon", "start", timeout=60)
        assert res.returncode == 0, res.stderr + res.stdout
        wait_for(home.daemon_pid, 15, what="daemon.pid")
        assert home.ku("run", "answer", "--wait", timeout=60).returncode == 3
        wait_for(lambda: hook.events(), 15, what="the webhook from the pyz daemon")
        event = hook.events()[0]
        assert event["event"] == "failure" and event["job"] == "answer" and event["run"]["tail"] == ["no"]
        assert event["koku_version"] == koku.__version__
        status = json.loads(home.ku("daemon", "status", "--json").stdout)
        assert status["metrics"]["prometheus_client_loaded"] is False
        res = home.ku("metrics")
        assert res.returncode == 0, res.stderr
        assert 'koku_job_runs_total{job="answer",outcome="failure"} 1.0' in res.stdout
        assert 'koku_notifications_total{notifier="ops",outcome="delivered"} 1.0' in res.stdout
        res = home.ku("daemon", "stop", timeout=60)
        assert res.returncode == 0, res.stderr + res.stdout
    finally:
        hook.close()


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_daemon_without_usable_cache_dir_fails_clearly_while_clients_work(
        pyz: Path, bare_python: str, home_factory: Callable[..., PyzHome]) -> None:
    home = home_factory(pyz, bare_python)
    home.write_config(CONFIG)
    # Every mount claims noexec, so every candidate (also /tmp, /var/tmp) is skipped untouched.
    script = (
        "import os, sys, types\n"
        f"sys.path.insert(0, {str(home.pyz)!r})\n"
        "real = os.statvfs\n"
        "os.statvfs = lambda p: types.SimpleNamespace(f_flag=real(p).f_flag | os.ST_NOEXEC)\n"
        "from koku.client.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    check = run([bare_python, "-c", script, "check"], env=home.env)
    assert check.returncode == 0, check.stderr
    daemon = run([bare_python, "-c", script, "daemon", "run"], env=home.env, timeout=60)
    assert daemon.returncode == 1, daemon.stderr + daemon.stdout
    assert "koku: error: no usable directory to extract gevent's native code into" in daemon.stderr
    assert "noexec" in daemon.stderr and "KOKU_CACHE_DIR" in daemon.stderr
    assert "Traceback" not in daemon.stderr
    assert home.cache_entries() == []


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_prepare_daemon_reexecs_on_the_extracted_copy(pyz: Path, bare_python: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    script = (
        "import json, os, sys\n"
        f"sys.path.insert(0, {str(pyz)!r})\n"
        "from koku.zipapp import bootstrap\n"
        "calls = []\n"
        "bootstrap.prepare_daemon(execv=lambda exe, argv, env: calls.append([exe, argv, env[bootstrap.ENV_EXTRACTED]]))\n"
        "print(json.dumps({'calls': calls, 'argv': bootstrap.program_argv(), 'exe': sys.executable}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOKU_", "PYTHON"))}
    env["KOKU_CACHE_DIR"] = str(cache)
    res = run([bare_python, "-c", script, "daemon", "run"], env=env)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    [[exe, argv, marker]] = out["calls"]
    app = cache / next(iter(os.listdir(cache)))
    assert exe == out["exe"]
    assert argv == [exe, "-I", str(app), "daemon", "run"]
    assert marker == str(app)
    assert out["argv"] == [out["exe"], "-I", str(pyz)]
    # the copy runs by itself: `python <dir>` with nothing from the archive
    res = run([bare_python, str(app), "--version"], env=env)
    assert res.returncode == 0, res.stderr
    assert f"extracted in {app}" in res.stdout
    # ... also where the system has no tz database: the copy has tzdata unpacked at its root
    config = tmp_path / "ny.toml"
    config.write_text(NEW_YORK_CONFIG)
    (tmp_path / "no-zones").mkdir()
    res = run([bare_python, str(app), "check", "--config", str(config)],
              env={**env, "PYTHONTZPATH": str(tmp_path / "no-zones")})
    assert res.returncode == 0 and "America/New_York" in res.stdout, res.stderr + res.stdout
    assert (app / "tzdata" / "zoneinfo" / "America" / "New_York").is_file()


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_ensure_native_makes_gevent_importable_from_the_archive(pyz: Path, bare_python: str,
                                                                tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(pyz)!r})\n"
        "from koku.zipapp import bootstrap\n"
        "assert 'gevent' not in sys.modules\n"
        "app = bootstrap.ensure_native()\n"
        "import gevent, koku, zope.interface\n"
        "gevent.sleep(0)\n"
        "print(app, gevent.__file__, koku.__file__, zope.interface.__file__, sep='\\n')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOKU_", "PYTHON"))}
    env["KOKU_CACHE_DIR"] = str(cache)
    res = run([bare_python, "-c", script], env=env)
    assert res.returncode == 0, res.stderr
    app, gevent_file, koku_file, zope_file = res.stdout.split()
    assert Path(app).parent == cache
    assert gevent_file.startswith(app + "/")
    # the process keeps its pure code from the archive; only the native part comes from the cache
    assert koku_file.startswith(str(pyz) + "/") and zope_file.startswith(str(pyz) + "/")


@pytest.mark.timeout(BUILD_TIMEOUT)
@pytest.mark.parametrize("locking", ["flock", "no-flock"])
def test_a_dozen_concurrent_first_extractions(pyz: Path, bare_python: str, tmp_path: Path, locking: str) -> None:
    """With the lock one process extracts while the others wait; without it (a filesystem where flock
    fails) all twelve extract and race to rename: both must end with one complete copy."""
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    go = tmp_path / "go"
    script = (
        "import fcntl, os, sys, time\n"
        f"sys.path.insert(0, {str(pyz)!r})\n"
        "from koku.zipapp import bootstrap\n"
        + ("def flock(fd, op): raise OSError(37, 'No locks available')\nfcntl.flock = flock\n"
           if locking == "no-flock" else "") +
        f"while not os.path.exists({str(go)!r}): time.sleep(0.001)\n"
        f"print(bootstrap.extract_app({str(pyz)!r}, {str(cache)!r}))\n"
    )
    procs = [subprocess.Popen([bare_python, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(12)]
    try:
        time.sleep(0.3)  # let them all import and wait at the line
        go.touch()
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0] * 12, [err for _, err in results]
    paths = {out.strip() for out, _ in results}
    assert len(paths) == 1
    assert os.listdir(cache) == [Path(paths.pop()).name]  # one final dir, no .tmp-* leftovers
    app = cache / os.listdir(cache)[0]
    extracted = {str(p.relative_to(app)) for p in app.rglob("*") if p.is_file()}
    expected = extracted_names(pyz, bootstrap.native_key())
    assert "gevent/__init__.py" in expected and "tzdata/zoneinfo/America/New_York" in expected
    assert extracted == expected


# -- other interpreters ----------------------------------------------------------------------------------


@pytest.mark.timeout(BUILD_TIMEOUT)
@pytest.mark.parametrize("minor", ["3.10", "3.12", "3.13", "3.14"])
def test_other_cpythons_run_version_and_check(minor: str, pyz_multi: tuple[Path, dict[str, str]],
                                              bare_venvs: Callable[[str], str],
                                              home_factory: Callable[..., PyzHome]) -> None:
    multi, others = pyz_multi
    if minor not in others:
        pytest.skip(f"no CPython {minor} on this machine")
    python = bare_venvs(others[minor])
    home = home_factory(multi, python)
    home.write_config(CONFIG)
    res = home.koku("--version")
    assert res.returncode == 0, res.stderr
    key = key_of(others[minor])
    assert res.stdout.strip() == f"koku {koku.__version__} (native: gevent {GEVENT} for {key}, not extracted yet)"
    res = home.koku("check")
    assert res.returncode == 0 and "answer" in res.stdout, res.stderr + res.stdout
    assert home.cache_entries() == []


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_daemon_smoke_with_another_cpython(pyz_multi: tuple[Path, dict[str, str]],
                                           bare_venvs: Callable[[str], str],
                                           home_factory: Callable[..., PyzHome]) -> None:
    multi, others = pyz_multi
    if not others:
        pytest.skip("no other CPython on this machine")
    minor = max(others)
    python = bare_venvs(others[minor])
    home = home_factory(multi, python)
    home.write_config(CONFIG)
    res = home.koku("daemon", "start", timeout=60)
    assert res.returncode == 0, res.stderr + res.stdout
    pid = wait_for(home.daemon_pid, 15, what="daemon.pid")
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        cmdline = fh.read().split(b"\0")
    assert cmdline[0].decode() == python
    assert cmdline[1] == b"-I" and cmdline[2].decode().endswith(key_of(others[minor]))
    res = home.koku("run", "answer", "--wait", timeout=60)
    assert res.returncode == 3 and "forty-two" in res.stdout, res.stderr + res.stdout
    res = home.koku("daemon", "stop", timeout=60)
    assert res.returncode == 0, res.stderr + res.stdout
    wait_for(lambda: not alive(pid), 15, what=f"daemon {pid} to exit")


# -- cache dir selection (in process) -----------------------------------------------------------------------


def env_for(tmp: Path, **extra: str) -> dict[str, str]:
    env = {"HOME": str(tmp / "home"), "XDG_RUNTIME_DIR": str(tmp / "run")}
    env.update(extra)
    return env


@pytest.fixture
def no_shared_tmp(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep selection away from the real /var/tmp and /tmp: only tmp_path candidates may be chosen."""
    real = os.statvfs

    def statvfs(path: str) -> Any:
        result = real(path)
        if str(path).startswith(("/var/tmp", "/tmp")) and "pytest-" not in str(path):
            return SimpleNamespace(f_flag=result.f_flag | bootstrap._ST_NOEXEC)
        return result

    monkeypatch.setattr(os, "statvfs", statvfs)


def test_candidates_in_documented_order(tmp_path: Path) -> None:
    env = env_for(tmp_path, KOKU_CACHE_DIR=str(tmp_path / "k"), CACHE_DIRECTORY=f"{tmp_path}/sd:/other",
                  XDG_CACHE_HOME=str(tmp_path / "xdg"))
    paths = [c.path for c in bootstrap.cache_candidates(env, uid=1234)]
    assert paths == [tmp_path / "k", tmp_path / "sd", tmp_path / "xdg" / "koku",
                     tmp_path / "home" / ".cache" / "koku", tmp_path / "run" / "koku-1234",
                     Path("/var/tmp/koku-1234"), Path("/tmp/koku-1234")]
    # relative XDG values are ignored, as the spec says
    paths = [c.path for c in bootstrap.cache_candidates({"XDG_CACHE_HOME": "rel", "HOME": "/h"}, uid=7)]
    assert paths[0] == Path("/h/.cache/koku")


@pytest.mark.parametrize("unset, chosen", [
    ((), "k"),
    (("KOKU_CACHE_DIR",), "sd"),
    (("KOKU_CACHE_DIR", "CACHE_DIRECTORY"), "xdg/koku"),
    (("KOKU_CACHE_DIR", "CACHE_DIRECTORY", "XDG_CACHE_HOME"), "home/.cache/koku"),
])
def test_first_usable_candidate_wins_and_is_created_0700(tmp_path: Path, unset: tuple[str, ...],
                                                          chosen: str, no_shared_tmp: None) -> None:
    env = env_for(tmp_path, KOKU_CACHE_DIR=str(tmp_path / "k"), CACHE_DIRECTORY=str(tmp_path / "sd"),
                  XDG_CACHE_HOME=str(tmp_path / "xdg"))
    for name in unset:
        del env[name]
    got = bootstrap.select_cache_dir(env, uid=os.getuid())
    assert got == tmp_path / chosen
    assert stat.S_IMODE(got.stat().st_mode) == 0o700


def test_symlink_is_refused(tmp_path: Path, no_shared_tmp: None) -> None:
    real = tmp_path / "elsewhere"
    real.mkdir(mode=0o700)
    (tmp_path / "k").symlink_to(real)
    env = env_for(tmp_path, KOKU_CACHE_DIR=str(tmp_path / "k"))
    assert bootstrap.check_cache_dir(tmp_path / "k", os.getuid(), create=True) == "it is a symlink"
    assert bootstrap.select_cache_dir(env) == tmp_path / "home" / ".cache" / "koku"


def test_directory_of_another_user_is_refused(tmp_path: Path, no_shared_tmp: None) -> None:
    mine = tmp_path / "k"
    mine.mkdir(mode=0o700)
    other_uid = os.getuid() + 4242
    reason = bootstrap.check_cache_dir(mine, other_uid, create=True)
    assert reason == f"it is owned by uid {os.getuid()}, not {other_uid}"
    with pytest.raises(BootstrapError) as err:
        bootstrap.select_cache_dir(env_for(tmp_path, KOKU_CACHE_DIR=str(mine)), uid=other_uid)
    assert f"{mine} ($KOKU_CACHE_DIR): it is owned by uid" in str(err.value)


def test_directory_writable_by_others_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "k"
    shared.mkdir()
    shared.chmod(0o777)
    assert "writable by other users (mode 0777)" in bootstrap.check_cache_dir(shared, os.getuid(), create=True)


def test_noexec_mount_is_skipped_without_creating_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           no_shared_tmp: None) -> None:
    noexec_root = tmp_path / "noexec"
    noexec_root.mkdir()
    real = os.statvfs  # already the no_shared_tmp wrapper

    def statvfs(path: str) -> Any:
        result = real(path)
        if str(path).startswith(str(noexec_root)):
            return SimpleNamespace(f_flag=result.f_flag | bootstrap._ST_NOEXEC)
        return result

    monkeypatch.setattr(os, "statvfs", statvfs)
    env = env_for(tmp_path, KOKU_CACHE_DIR=str(noexec_root / "cache"))
    assert bootstrap.check_cache_dir(noexec_root / "cache", os.getuid(), True) == f"{noexec_root} is on a noexec mount"
    assert bootstrap.select_cache_dir(env) == tmp_path / "home" / ".cache" / "koku"
    assert not (noexec_root / "cache").exists()


def test_no_usable_directory_lists_every_refusal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.statvfs
    monkeypatch.setattr(os, "statvfs",
                        lambda p: SimpleNamespace(f_flag=real(p).f_flag | bootstrap._ST_NOEXEC))
    env = env_for(tmp_path, KOKU_CACHE_DIR=str(tmp_path / "k"))
    with pytest.raises(BootstrapError) as err:
        bootstrap.select_cache_dir(env, uid=os.getuid())
    message = str(err.value)
    assert message.startswith("no usable directory to extract gevent's native code into; tried:")
    for path in (tmp_path / "k", tmp_path / "home" / ".cache" / "koku", Path(f"/tmp/koku-{os.getuid()}")):
        assert str(path) in message
    assert "set KOKU_CACHE_DIR" in message
    assert isinstance(err.value, koku.errors.KokuError)
    assert not (tmp_path / "k").exists()


def _other_uid() -> int:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory to another user")
    return 65534


def test_parent_owned_by_another_user_is_refused_and_the_refusal_said(
        tmp_path: Path, no_shared_tmp: None, capsys: pytest.CaptureFixture[str]) -> None:
    # Its owner could swap koku/ for a symlink to their own code between the check and the daemon
    # loading native code from it (issue 10: 3 of 15 tries ran code as root).
    other = _other_uid()
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, other, other)
    wanted = theirs / "koku"
    reason = bootstrap.check_cache_dir(wanted, os.getuid(), create=True)
    assert reason is not None and f"{theirs} is owned by uid {other}" in reason and "fix: chown root" in reason
    assert not wanted.exists()
    env = env_for(tmp_path, KOKU_CACHE_DIR=str(wanted))
    chosen = bootstrap.select_cache_dir(env, uid=os.getuid())
    assert chosen == tmp_path / "home" / ".cache" / "koku"
    err = capsys.readouterr().err
    assert f"koku: warning: KOKU_CACHE_DIR={wanted} refused: {theirs} is owned by uid {other}" in err
    assert f"using {chosen}" in err


def test_parent_writable_by_others_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # not sticky: anyone may rename koku/ away and put a symlink there
    reason = bootstrap.check_cache_dir(shared / "koku", os.getuid(), create=True)
    assert reason is not None and f"{shared} is writable by group and others (mode 0777)" in reason
    assert not (shared / "koku").exists()


def test_symlinked_parent_is_followed_only_when_root_or_we_own_the_link(tmp_path: Path, no_shared_tmp: None) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o755)
    link = tmp_path / "link"
    link.symlink_to(real)
    assert bootstrap.check_cache_dir(link / "koku", os.getuid(), create=True) is None  # our own link
    assert (real / "koku").is_dir()
    other = _other_uid()
    os.lchown(link, other, other)
    reason = bootstrap.check_cache_dir(link / "koku", os.getuid(), create=True)
    assert reason is not None and f"{link} is a symlink owned by uid {other}" in reason
    reason = bootstrap.check_cache_dir(link / "koku", os.getuid(), create=False)
    assert reason is not None and "symlink owned by uid" in reason


def test_check_without_create_makes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    assert bootstrap.check_cache_dir(target, os.getuid(), create=False) is None
    assert not (tmp_path / "a").exists()


# -- native key, manifest, libc ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffixes, libc, key", [
    ([".cpython-311-x86_64-linux-gnu.so", ".abi3.so", ".so"], "glibc", "cpython-311-x86_64-linux-gnu"),
    # CPython < 3.13 on Alpine reports linux-gnu; the libc check corrects it
    ([".cpython-311-x86_64-linux-gnu.so", ".abi3.so", ".so"], "musl", "cpython-311-x86_64-linux-musl"),
    ([".cpython-313-aarch64-linux-musl.so", ".abi3.so", ".so"], "musl", "cpython-313-aarch64-linux-musl"),
    ([".cpython-313t-x86_64-linux-gnu.so", ".abi3.so", ".so"], "glibc", "cpython-313t-x86_64-linux-gnu"),
    ([".pypy310-pp73-x86_64-linux-gnu.so", ".abi3.so", ".so"], "glibc", "pypy310-pp73-x86_64-linux-gnu"),
    ([".cpython-312-darwin.so", ".abi3.so", ".so"], "unknown", "cpython-312-darwin"),
])
def test_native_key(suffixes: list[str], libc: str, key: str) -> None:
    assert bootstrap.native_key(suffixes, libc) == key


def test_build_and_bootstrap_agree_on_folder_names() -> None:
    for target in build_zipapp.ALL_TARGETS:
        suffix = f".cpython-{target.python.replace('.', '')}-{target.arch}-linux-gnu.so"
        assert bootstrap.native_key([suffix, ".abi3.so", ".so"], target.libc) == target.key
        assert build_zipapp.Target.from_key(target.key) == target
    assert build_zipapp.current_target().key == bootstrap.native_key()


def test_unsupported_interpreter_gets_one_clear_line() -> None:
    manifest = Manifest("ab" * 32, "0.1.0", {"gevent": GEVENT},
                        {"cpython-311-x86_64-linux-gnu": Native("cpython-311-x86_64-linux-gnu", "glibc", "2.28"),
                         "cpython-312-x86_64-linux-gnu": Native("cpython-312-x86_64-linux-gnu", "glibc", "2.28")})
    with pytest.raises(BootstrapError) as err:
        manifest.native_for("cpython-39-x86_64-linux-gnu")
    message = str(err.value)
    assert "\n" not in message
    assert "(cpython-39-x86_64-linux-gnu)" in message
    assert "it has: cpython-311-x86_64-linux-gnu, cpython-312-x86_64-linux-gnu" in message


def test_old_glibc_is_refused_before_loading_anything() -> None:
    native = Native("cpython-311-x86_64-linux-gnu", "glibc", "2.28")
    with pytest.raises(BootstrapError, match=r"needs glibc 2.28 or newer; this system has glibc 2.17"):
        bootstrap.check_libc(native, ("glibc", "2.17"))
    bootstrap.check_libc(native, ("glibc", "2.28"))
    bootstrap.check_libc(native, ("glibc", "2.39"))


def test_installed_koku_needs_no_bootstrap() -> None:
    assert not bootstrap.running_from_zip()
    argv = bootstrap.program_argv()
    assert argv[:3] == [sys.executable, "-I", "-c"] and "from koku.__main__ import main" in argv[3]
    bootstrap.prepare_daemon(execv=lambda *a: pytest.fail("a normal install must not re-exec"))
    assert bootstrap.describe_native().startswith("native: gevent ")


# -- build helpers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, python, ok", [
    (">=3.11", "3.10", False),
    (">=3.11", "3.11", True),
    (">=3.9", "3.14", True),
    ("!=3.0.*,!=3.1.*,!=3.2.*,>=2.7", "3.10", True),
    ("<3.11", "3.10", True),
    ("<3.11", "3.11", False),
    ("~=3.10", "3.13", True),
    ("", "3.10", True),
])
def test_requires_python(spec: str, python: str, ok: bool) -> None:
    assert build_zipapp.python_satisfies(spec, python) is ok


@pytest.mark.parametrize("names, libc, need", [
    (["gevent-25.9.1-cp311-cp311-manylinux_2_28_x86_64.whl",
      "greenlet-3.5.6-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl"], "glibc", "2.28"),
    (["x-1-cp311-cp311-manylinux1_x86_64.manylinux2014_x86_64.whl"], "glibc", "2.5"),
    (["x-1-cp311-cp311-manylinux2014_aarch64.whl"], "glibc", "2.17"),
    (["x-1-cp311-cp311-musllinux_1_2_x86_64.whl"], "musl", "1.2"),
])
def test_min_libc_from_wheel_tags(names: list[str], libc: str, need: str) -> None:
    wheels = [build_zipapp.Wheel(Path(n), n.split("-")[0], "1") for n in names]
    assert build_zipapp.min_libc(wheels, libc) == need


@pytest.mark.parametrize("path, strip, skipped", [
    ("gevent/tests/test_x.py", False, True),
    ("gevent/testing/util.py", False, True),
    ("greenlet/__pycache__/x.cpython-311.pyc", False, True),
    ("greenlet/greenlet.cpp", False, True),
    ("gevent/_gevent_c_hub.cpython-311-x86_64-linux-gnu.so", False, False),
    ("zope/interface/_zope_interface_coptimizations.cpython-312-x86_64-linux-gnu.so", True, True),
    ("gevent-25.9.1.dist-info/RECORD", False, True),
    ("gevent-25.9.1.dist-info/licenses/LICENSE", False, False),
    ("tzdata/zoneinfo/Europe/Paris", False, False),
])
def test_member_filter(path: str, strip: bool, skipped: bool) -> None:
    assert build_zipapp._skip(path, strip) is skipped


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_bytecode_cache_follows_the_file_and_prunes_the_old_one(
        pyz: Path, pyz_multi: tuple[Path, dict[str, str]], bare_python: str,
        home_factory: Callable[..., PyzHome]) -> None:
    home = home_factory(pyz, bare_python)
    pyc_root = home.cache / "koku" / "pyc"
    assert home.ku("--version").returncode == 0
    (first,) = os.listdir(pyc_root)
    cached = pyc_root / first / "koku.client.cli.pyc"
    before = cached.stat().st_mtime_ns
    assert home.ku("--version").returncode == 0
    assert cached.stat().st_mtime_ns == before  # read, not rewritten
    # A planted or stale entry for the same key is only used if it carries our header.
    cached.write_bytes(b"garbage")
    res = home.ku("--version")
    assert res.returncode == 0 and res.stdout.startswith("koku ")
    shutil.copy2(pyz_multi[0], home.pyz)  # an upgrade: a different file at the same path
    assert home.ku("--version").returncode == 0
    (second,) = os.listdir(pyc_root)
    assert second != first and second.split("-")[0] == first.split("-")[0]
    # Without a usable cache dir, commands still work (compiled from source).
    home.env["KOKU_NO_PYC_CACHE"] = "1"
    assert home.ku("status").returncode == 3


@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT)
def test_builds_by_the_oldest_and_newest_cpython_are_identical_and_run_on_each_other(src: Path, build_root: Path,
                                                                                      tmp_path: Path) -> None:
    """A fresh clone builds with any bare interpreter: the pins are build_zipapp.py's, never what the
    interpreter has installed (a 3.10 venv's build once lacked six on 3.12). Both builds carry the same two
    native builds; each runs on the other interpreter with -S, so no site-packages can fill a gap."""
    found = {m: p for m, p in all_interpreters().items() if m in build_zipapp.PYTHONS}
    if len(found) < 2:
        pytest.skip(f"needs two CPythons 3.10+; found {sorted(found) or 'none'}")
    oldest, newest = min(found, key=lambda m: int(m.split(".")[1])), max(found, key=lambda m: int(m.split(".")[1]))
    keys = [key_of(found[oldest]), key_of(found[newest])]
    outputs = {}
    for minor in (oldest, newest):
        out = build_root / f"by-{minor}" / "koku.pyz"
        # The interpreter's own pip fetches into the shared wheel cache; no venv, no PYTHONPATH.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        res = run([found[minor], str(src / "build_zipapp.py"), "--wheels", str(WHEELS), "--output", str(out),
                   "--target", keys[0], "--target", keys[1]], timeout=BUILD_TIMEOUT, env=env)
        assert res.returncode == 0, res.stderr + res.stdout
        outputs[minor] = out
    assert outputs[oldest].read_bytes() == outputs[newest].read_bytes()
    (tmp_path / "home").mkdir()
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    env = {"HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    for built_by, runner in ((oldest, newest), (newest, oldest)):
        version = run([found[runner], "-S", str(outputs[built_by]), "--version"], env=env)
        assert version.returncode == 0, version.stderr
        assert f"for {key_of(found[runner])}" in version.stdout
        check = run([found[runner], "-S", str(outputs[built_by]), "--config", str(config), "check"], env=env)
        assert check.returncode == 0 and "answer" in check.stdout, check.stderr + check.stdout


def test_an_interpreter_that_does_not_run_is_absent_not_an_error(tmp_path: Path) -> None:
    """In a clean HOME a pyenv shim answers "pyenv: python3.10: command not found" (exit 127): the tests
    that look for other CPythons must skip that version, not error."""
    shim = tmp_path / "python3.10"
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.10: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    assert _interpreter_minor(str(shim)) is None
    assert _interpreter_minor(str(tmp_path / "missing")) is None
    assert _interpreter_minor(sys.executable) == "%d.%d" % sys.version_info[:2]
