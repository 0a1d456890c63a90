"""The figures the README quotes about koku.pyz and start-up, measured here and printed as Markdown.

    python3 bench/figures.py [--pyz dist/koku.pyz] [--runs 20] [--suite]

- the archive: size, entries (what zipimport reads on every start), nested native builds;
- start-up: median and spread of `ku status` from the pyz (no daemon: it exits 3 after its imports and
  one connect), of `ku status` from this venv, and of a bare `python3 -c pass`, each after one warm-up;
- with --suite, the whole test suite's wall time (`python -m pytest -q`, minutes on 2 cores).

Nothing here is typed into the README by hand: it prints the lines to paste, and the command that made them.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _timed(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    subprocess.run(argv, env=env, capture_output=True)  # warm-up: caches, bytecode, page cache
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def _ms(times: list[float]) -> str:
    qs = statistics.quantiles(times, n=4) if len(times) >= 4 else [min(times), 0, max(times)]
    return f"{statistics.median(times):.0f} ms (quartiles {qs[0]:.0f}-{qs[2]:.0f})"


def archive(pyz: Path) -> list[str]:
    with zipfile.ZipFile(pyz) as z:
        names = z.namelist()
    natives = [n for n in names if n.endswith(".zip") and "native" in n]
    return [f"- `{pyz.name}`: {pyz.stat().st_size / 1e6:.1f} MB, {len(names)} archive entries, "
            f"{len(natives)} nested native build{'s' if len(natives) != 1 else ''}"]


def startup(pyz: Path | None, runs: int) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="ku-fig-") as tmp:
        # An empty state dir: no daemon answers, so `ku status` is start-up, imports and one connect.
        env = {**os.environ, "KOKU_STATE_DIR": tmp, "XDG_CACHE_HOME": os.path.join(tmp, "cache")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        lines = [f"- bare `python3 -c pass`: {_ms(_timed([sys.executable, '-c', 'pass'], env, runs))}"]
        if pyz is not None:
            lines.append(f"- `ku status` from `{pyz.name}` (warm cache): "
                         f"{_ms(_timed([sys.executable, str(pyz), 'status'], env, runs))}")
        ku = Path(sys.executable).parent / "ku"
        if ku.exists():
            lines.append(f"- `ku status` installed in a venv: {_ms(_timed([str(ku), 'status'], env, runs))}")
    return lines


def suite() -> list[str]:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "pytest", "-q"], cwd=ROOT, capture_output=True, text=True)
    minutes = (time.perf_counter() - t0) / 60
    last = (res.stdout.strip().splitlines() or ["(no output)"])[-1].strip("= ")
    return [f"- the whole suite (`python -m pytest -q`): {minutes:.1f} min wall ({last})"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyz", type=Path, default=ROOT / "dist" / "koku.pyz")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--suite", action="store_true", help="also time the whole test suite")
    args = parser.parse_args(argv)
    pyz = args.pyz if args.pyz.exists() else None
    print(f"Measured by `python3 bench/figures.py{' --suite' if args.suite else ''}` on CPython "
          f"{platform.python_version()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"median of {args.runs} runs:")
    if pyz is None:
        print(f"- (no {args.pyz}: build it with `python3 build_zipapp.py` for the archive figures)")
    else:
        print("\n".join(archive(pyz)))
    print("\n".join(startup(pyz, args.runs)))
    if args.suite:
        print("\n".join(suite()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
