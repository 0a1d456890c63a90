"""Draw bench/results.png from the results JSON: start-latency distributions, and RSS and CPU against the
number of jobs. Run by run.py with the koku venv's Python, where matplotlib is installed:
``python chart.py results.json results.png``.
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"koku": "#c0392b", "yacron": "#2471a3", "cron": "#7f8c8d"}
MARKERS = {"koku": "o", "yacron": "^", "cron": "s"}


def cdf(ax, values, label, color, scale=1.0):
    if not values:
        return
    xs = sorted(v * scale for v in values)
    ys = [(i + 1) / len(xs) for i in range(len(xs))]
    ax.step(xs, ys, where="post", label=f"{label} (n={len(xs)})", color=color)


def draw(results: dict, out: str) -> None:
    series = results["series"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    ax = axes[0][0]
    cdf(ax, series.get("per_second_ms"), "koku, one job every second", COLORS["koku"])
    for kind, values in (series.get("minute_single_ms") or {}).items():
        if values:
            ax.scatter(values, [0.5] * len(values), marker="x", s=60, color=COLORS[kind],
                       label=f"{kind}, minute boundary (n={len(values)})", zorder=3)
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("start latency (ms, log scale above 10)")
    ax.set_ylabel("fraction of runs")
    ax.set_title("One job: start latency")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    ax = axes[0][1]
    for kind, values in (series.get("burst_s") or {}).items():
        cdf(ax, values, kind, COLORS[kind], 1000)
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("start latency (ms, log scale above 10)")
    ax.set_ylabel("fraction of jobs started")
    n = next((len(v) for v in (series.get("burst_s") or {}).values() if v), 0)
    ax.set_title(f"{n} jobs due at the same minute boundary")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    scale = series.get("scale") or {}
    for ax, what, label in ((axes[1][0], "rss", "RSS (MB)"), (axes[1][1], "cpu", "CPU (s per minute), idle")):
        for kind, points in (scale.get(what) or {}).items():
            if points:
                xs, ys = zip(*points, strict=True)
                # koku and cron both sit at 0 CPU: different markers keep both visible.
                ax.plot(xs, ys, marker=MARKERS[kind], markersize=9 if kind == "koku" else 5, label=kind,
                        color=COLORS[kind], zorder=3 if kind == "koku" else 2)
        ax.set_xscale("log")
        if what == "cpu":
            ax.set_yscale("symlog", linthresh=0.01)
            ax.set_ylim(bottom=0)
            ax.text(0.02, 0.02, "0 = under one clock tick (0.01 s) in the window", transform=ax.transAxes,
                    fontsize=7, color="#555")
        else:
            ax.set_yscale("log")
        ax.set_xlabel("jobs")
        ax.set_ylabel(label)
        ax.set_title(f"{label} against the number of jobs")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    meta = results.get("meta", {})
    fig.suptitle(f"koku vs yacron vs Debian cron — {meta.get('date', '')}, {meta.get('machine', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        draw(json.load(fh), sys.argv[2])
