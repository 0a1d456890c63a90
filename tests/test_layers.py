"""The layout's import rules, checked on the source (AST) and on what really gets imported.

koku/ has four sides (README, "Development"):
    core/     pure: the standard library, croniter (and tomli on 3.10), koku.errors, other core modules
    daemon/   the only importers of gevent; core, errors, other daemon modules; never client/
    client/   core, errors, zipapp (the bootstrap that starts a daemon from koku.pyz); never gevent; reaches
              the daemon side through exactly one lazy import inside ``ku daemon``
    zipapp/   koku.errors and the other zipapp modules only (it runs before anything else is importable)

Both checks are shown to fail on a deliberately broken copy of the tree: ``import gevent`` added to
``koku/core/clock.py`` (see test_the_checks_fail_when_a_core_module_imports_gevent).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parent.parent
STDLIB = set(sys.stdlib_module_names) | {"__future__"}

# side -> (koku sides it may import, third-party top-level packages it may import)
RULES: dict[str, tuple[set[str], set[str]]] = {
    "core": ({"core", "errors"}, {"croniter", "tomli"}),
    "daemon": ({"core", "errors", "daemon", "version"}, {"gevent", "greenlet", "prometheus_client"}),
    "client": ({"core", "errors", "client", "zipapp", "version"}, {"docopt", "prettytable", "tomli_w"}),
    # greenlet: the bootstrap only probes that the native build loads before it starts a daemon.
    "zipapp": ({"errors", "zipapp"}, {"greenlet"}),
    "top": ({"client", "errors", "version"}, set()),
}
# The one edge that runs the other way on purpose: `ku daemon run` imports the daemon lazily, inside
# the function, so every other client command stays free of gevent.
# And the cache dir check walks directories with core.safefs (stdlib only), the walk the state dir gets.
ALLOWED_LAZY = {("koku.client.daemonctl", "koku.daemon.lifecycle"), ("koku.zipapp.cachedir", "koku.core.safefs")}


def side_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("__main__",):
        return "top"
    if parts[1] == "errors":
        return "errors"
    return parts[1]


def module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[str, bool, int]]:
    """(imported module, imported inside a function, line) for each import statement."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, bool, int]] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, lazy, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    raise AssertionError(f"{path}:{child.lineno}: relative import; koku uses absolute ones")
                assert child.module is not None
                if child.module == "koku":  # from koku import __version__ / errors
                    found.extend((f"koku.{a.name}" if a.name != "__version__" else "koku.version", lazy,
                                  child.lineno) for a in child.names)
                else:
                    found.extend(
                        (f"{child.module}.{a.name}" if child.module.startswith("koku.") else child.module,
                         lazy, child.lineno) for a in child.names)
            visit(child, inner)

    visit(tree, False)
    return found


def wrong_edges(root: Path) -> list[str]:
    """Every import in root/koku that breaks RULES, as 'file:line: a imports b'."""
    problems = []
    for path in sorted((root / "koku").rglob("*.py")):
        mod = module_name(root, path)
        side = side_of(mod)
        if side == "errors":
            allowed_sides, allowed_third = set(), set()
        else:
            allowed_sides, allowed_third = RULES[side]
        for target, lazy, line in imports_of(path):
            top = target.split(".")[0]
            where = f"{path.relative_to(root)}:{line}: {mod} imports {target}"
            if top == "koku":
                tside = side_of(target)
                if tside in allowed_sides:
                    continue
                if lazy and any(mod == a and target.startswith(b) for a, b in ALLOWED_LAZY):
                    continue
                problems.append(where)
            elif top in STDLIB:
                continue
            elif top not in allowed_third:
                problems.append(where)
    return problems


def test_imports_run_the_right_way() -> None:
    assert wrong_edges(ROOT) == []


def test_every_module_lives_in_a_side() -> None:
    flat = sorted(p.name for p in (ROOT / "koku").glob("*.py"))
    assert flat == ["__init__.py", "__main__.py", "errors.py"]
    assert sorted(p.name for p in (ROOT / "koku").iterdir() if p.is_dir() and p.name != "__pycache__") == [
        "client", "core", "daemon", "zipapp"]


def _gevent_loaded(root: Path) -> bool:
    """Import every core and client module from root in a fresh interpreter; is gevent then loaded?"""
    mods = [module_name(root, p) for side in ("core", "client") for p in sorted((root / "koku" / side).glob("*.py"))]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in mods)
            + "print('gevent' in sys.modules or 'greenlet' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    return out.stdout.strip() == "True"


def test_core_and_client_modules_do_not_load_gevent() -> None:
    assert not _gevent_loaded(ROOT)


def test_the_checks_fail_when_a_core_module_imports_gevent(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(ROOT / "koku", broken / "koku", ignore=shutil.ignore_patterns("__pycache__"))
    clock = broken / "koku" / "core" / "clock.py"
    clock.write_text(clock.read_text().replace("import time\n", "import time\nimport gevent\n", 1))
    assert any("koku.core.clock imports gevent" in p for p in wrong_edges(broken))
    assert _gevent_loaded(broken)


def test_the_checks_fail_when_a_core_module_imports_the_daemon(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(ROOT / "koku", broken / "koku", ignore=shutil.ignore_patterns("__pycache__"))
    model = broken / "koku" / "core" / "model.py"
    model.write_text(model.read_text() + "\nfrom koku.daemon.process import ProcessRun  # noqa\n")
    assert any("koku.core.model imports koku.daemon.process.ProcessRun" in p for p in wrong_edges(broken))


def test_every_exception_lives_in_errors_py() -> None:
    """One exception family: a class deriving from an exception anywhere else is a layering fault."""
    import builtins

    exception_names = {n for n in dir(builtins) if isinstance(getattr(builtins, n), type)
                       and issubclass(getattr(builtins, n), BaseException)}
    tree = ast.parse((ROOT / "koku" / "errors.py").read_text())
    exception_names |= {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    found = []
    for path in sorted((ROOT / "koku").rglob("*.py")):
        if path.name == "errors.py" and path.parent.name == "koku":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                if bases & exception_names:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: class {node.name}")
    assert found == []

def test_docstrings_name_methods_that_exist() -> None:
    """model.py's docstring once named a method that did not exist; each ``koku.x.Class.method`` written
    in double backquotes in a docstring of the package must resolve."""
    import importlib
    import re

    missing = []
    for path in sorted((ROOT / "koku").rglob("*.py")):
        for ref in re.findall(r"``(koku(?:\.\w+)+)``", path.read_text()):
            if ref == "koku.pyz":  # the file, not a module
                continue
            parts = ref.split(".")
            for cut in range(len(parts), 0, -1):
                try:
                    obj: object = importlib.import_module(".".join(parts[:cut]))
                except ImportError:
                    continue
                try:
                    for attr in parts[cut:]:
                        obj = getattr(obj, attr)
                except AttributeError:
                    missing.append(f"{path.relative_to(ROOT)}: {ref}")
                break
            else:
                missing.append(f"{path.relative_to(ROOT)}: {ref}")
    assert missing == []


def _module_level_graph(root: Path) -> dict[str, set[str]]:
    modules = {module_name(root, p): p for p in (root / "koku").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in modules.items():
        edges = set()
        for target, lazy, _ in imports_of(path):
            if lazy or not target.startswith("koku."):
                continue
            # "koku.core.model.Outcome" -> the longest prefix that is a module
            parts = target.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts and ".".join(parts) != mod:
                edges.add(".".join(parts))
        graph[mod] = edges
    return graph


def test_no_module_imports_one_that_imports_it_back() -> None:
    """daemon.py and control.py used to import each other; module-level cycles (TYPE_CHECKING ones too)
    hide who depends on whom. Package __init__ re-exports are not cycles."""
    graph = _module_level_graph(ROOT)
    cycles = []
    for mod, edges in graph.items():
        for other in edges:
            if mod in graph.get(other, ()) and not (mod.startswith(other + ".") or other.startswith(mod + ".")):
                cycles.append(tuple(sorted((mod, other))))
    assert sorted(set(cycles)) == []
