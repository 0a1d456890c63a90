"""bench/figures.py, the command behind the README's archive and start-up figures, keeps working."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_figures_measure_an_archive_and_start_up(tmp_path):
    pyz = tmp_path / "koku.pyz"
    with zipfile.ZipFile(pyz, "w") as z:
        z.writestr("__main__.py", "import sys; sys.exit(3)\n")
        z.writestr("_native/cpython-399-x86_64-linux-gnu.zip", b"")
        z.writestr("koku/__init__.py", "")
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "figures.py"), "--pyz", str(pyz), "--runs", "4"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.startswith("Measured by `python3 bench/figures.py` on CPython")
    assert "3 archive entries, 1 nested native build" in out
    for label in ("bare `python3 -c pass`", "`ku status` from `koku.pyz`"):
        line = next(line for line in out.splitlines() if label in line)
        assert re.search(r": \d+ ms \(quartiles \d+-\d+\)$", line), line
