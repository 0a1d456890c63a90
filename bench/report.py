"""Results: every figure for koku, yacron and cron side by side, its ratio to yacron and its target.

``Results`` collects figures as the phases measure them; ``text_table`` prints them, ``markdown`` writes
bench/results.md, ``to_json`` keeps them for the chart and the tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

KINDS = ("koku", "yacron", "cron")
Values = dict[str, "float | None"]

DECIMALS = {"s/1,000 runs": 2, "KB": 1, "MB": 1, "s/min": 3, "ms": 1, "s": 2, "req/s": 0, "runs": 0, "fds": 0, "MB growth": 2}


@dataclass
class Figure:
    key: str  # stable id, e.g. "scale.rss.10000"
    section: str
    metric: str
    unit: str
    values: dict[str, float | None]
    why: dict[str, str] = field(default_factory=dict)  # why a value is missing, per daemon
    target: str | None = None
    met: bool | None = None
    check: Callable[[Values], bool | None] | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "section": self.section, "metric": self.metric, "unit": self.unit,
                "values": self.values, "why": self.why, "target": self.target, "met": self.met,
                "ratio": self.ratio}

    @property
    def ratio(self) -> float | None:
        koku, yacron = self.values.get("koku"), self.values.get("yacron")
        if koku is None or yacron is None or yacron == 0:
            return None
        return koku / yacron


def below(limit: float) -> Callable[[Values], bool | None]:
    """Target met when koku's value is under ``limit``."""
    return lambda v: None if v.get("koku") is None else v["koku"] < limit  # type: ignore[operator]


def at_most_ratio(ratio: float) -> Callable[[Values], bool | None]:
    """Target met when koku's value is at most ``ratio`` times yacron's."""
    def check(v: Values) -> bool | None:
        koku, yacron = v.get("koku"), v.get("yacron")
        return None if koku is None or yacron is None else koku <= ratio * yacron
    return check


class Results:
    def __init__(self) -> None:
        self.meta: dict[str, Any] = {}
        self.figures: list[Figure] = []
        self.series: dict[str, Any] = {}
        self.notes: list[str] = []

    def add(self, key: str, section: str, metric: str, unit: str, values: Values,
            why: dict[str, str] | None = None, target: str | None = None,
            check: Callable[[Values], bool | None] | None = None) -> Figure:
        """Add a figure, or merge ``values`` into the one with the same key (each daemon may be measured
        by a different task); the target is checked again on the merged values."""
        new = {k: float(v) for k, v in values.items() if v is not None}
        fig = self.get(key)
        if fig is None:
            fig = Figure(key, section, metric, unit, {k: None for k in KINDS}, {}, target, None, check)
            self.figures.append(fig)
        fig.values.update(new)
        for k, reason in (why or {}).items():
            if fig.values.get(k) is None:
                fig.why[k] = reason
        for k in new:
            fig.why.pop(k, None)
        fig.target = fig.target or target
        fig.check = fig.check or check
        fig.met = fig.check(fig.values) if fig.check else None
        return fig

    def get(self, key: str) -> Figure | None:
        return next((f for f in self.figures if f.key == key), None)

    def to_json(self) -> dict[str, Any]:
        return {"meta": self.meta, "figures": [f.to_json() for f in self.figures],
                "series": self.series, "notes": self.notes}

    def save(self, path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1, default=str) + "\n")

    @classmethod
    def load(cls, path) -> Results:
        """Results as saved (targets keep their verdicts; they are not checked again)."""
        data = json.loads(path.read_text())
        r = cls()
        r.meta, r.series, r.notes = data["meta"], data["series"], data["notes"]
        for f in data["figures"]:
            r.figures.append(Figure(f["key"], f["section"], f["metric"], f["unit"], f["values"], f["why"],
                                    f["target"], f["met"]))
        return r


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    decimals = DECIMALS.get(unit, 2)
    return f"{value:,.{decimals}f}"


def fmt_ratio(fig: Figure) -> str:
    r = fig.ratio
    if r is None:
        return "—"
    if r == 0:
        return "0×"
    return f"{r:.2f}×" if r >= 0.01 else "< 0.01×"


def verdict(fig: Figure) -> str:
    if fig.target is None:
        return ""
    return {True: "met", False: "MISSED", None: "not measured"}[fig.met]


def _rows(figs: list[Figure], kinds: tuple[str, ...]) -> list[list[str]]:
    return [[f"{f.metric} ({f.unit})"] + [fmt(f.values.get(k), f.unit) for k in kinds]
            + [fmt_ratio(f), f.target or "", verdict(f)] for f in figs]


ORDER = ("Idle", "Start latency", "Scale", "Control channel", "Hub", "Stability")


def _sections(results: Results) -> list[str]:
    present = {f.section for f in results.figures}
    return [s for s in ORDER if s in present] + sorted(present - set(ORDER))


SCALE_ORDER = ("rss", "cpu", "check", "status", "json")


def _in_section(results: Results, section: str) -> list[Figure]:
    """A section's figures; scale figures by job count, then memory, CPU, check, status."""
    figs = [f for f in results.figures if f.section == section]

    def key(item: tuple[int, Figure]) -> tuple[int, int, int]:
        i, f = item
        parts = f.key.split(".")
        if parts[0] == "scale" and parts[-1].isdigit() and parts[1] in SCALE_ORDER:
            return int(parts[-1]), SCALE_ORDER.index(parts[1]), i
        return 0, 0, i

    return [f for _, f in sorted(enumerate(figs), key=key)]


def text_table(results: Results) -> str:
    """The figures as aligned plain text, one block per section."""
    header = ["measurement", *KINDS, "koku/yacron", "target", "result"]
    out = []
    for section in _sections(results):
        rows = [header] + _rows(_in_section(results, section), KINDS)
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        out.append(f"== {section}")
        for r in rows:
            cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
            out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def markdown(results: Results, chart: str | None) -> str:
    m = results.meta
    lines = ["# koku benchmark results", "",
             f"Generated by `{m.get('command', 'python3 bench/run.py')}` on {m.get('date', '?')} "
             f"({m.get('mode', '?')} mode, {m.get('duration_s', 0):.0f} s). koku, yacron and Debian's cron "
             "ran on the same machine in the same run with equivalent jobs. Absolute times vary from run "
             "to run on this kind of machine; ratios within one run hold better.", "",
             "## Machine and versions", ""]
    for key, label in (("machine", "Machine"), ("load", "Load average (1/5/15 min)"),
                       ("load_peak", "Highest 1-min load seen during the run (the benchmark's own daemons included)"),
                       ("versions", "Versions")):
        value = m.get(key)
        if value is None:
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        lines.append(f"- {label}: {value}")
    missed = [f for f in results.figures if f.met is False]
    unmeasured = [f for f in results.figures if f.target and f.met is None]
    lines += ["", "## Targets", ""]
    if missed:
        lines.append("**Missed:** " + "; ".join(
            f"{f.section} / {f.metric}: koku {fmt(f.values['koku'], f.unit)} {f.unit}, target {f.target}"
            for f in missed) + ".")
    else:
        lines.append("Every measured target was met.")
    if unmeasured:
        lines.append("")
        lines.append("**Not measured:** " + "; ".join(f"{f.section} / {f.metric}" for f in unmeasured) + ".")
    lines.append("")
    lines.append(_md_row(["target", "koku", "result"]))
    lines.append(_md_row(["---"] * 3))
    for f in (f for section in _sections(results) for f in _in_section(results, section)):
        if f.target:
            lines.append(_md_row([f"{f.section} / {f.metric}: {f.target}",
                                  f"{fmt(f.values['koku'], f.unit)} {f.unit}", verdict(f)]))
    for section in _sections(results):
        figs = _in_section(results, section)
        lines += ["", f"## {section}", "",
                  _md_row(["measurement", *KINDS, "koku / yacron", "target", "result"]),
                  _md_row(["---"] * (len(KINDS) + 4))]
        lines += [_md_row(r) for r in _rows(figs, KINDS)]
        reasons = sorted({(k, why) for f in figs for k, why in f.why.items() if f.values.get(k) is None})
        if reasons:
            lines.append("")
            lines += [f"- {k}: {why}" for k, why in reasons]
    if results.notes:
        lines += ["", "## How it was measured", ""] + [f"- {n}" for n in results.notes]
    if chart:
        lines += ["", "## Chart", "", f"![start latency and scale]({chart})"]
    return "\n".join(lines) + "\n"
