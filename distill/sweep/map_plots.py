"""Plots of a sweep's map: reads the rows of `distill.sweep.report.map_rows`, writes PNGs.

One figure per swept key: retention per category against the key, a row of panels per
benchmark and a panel per combination of the other keys' values (a grid sweep: a panel per
student, say). A numeric key (a data size) is a line per category on a log axis; any other key
(a student, a filter switch, a method) grouped bars, a group per category and a bar per value.
And one figure of each benchmark's overall retention against what the student cost, so that
"the same retention for a third of the data" can be read off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.publish.plots import pyplot, save_figure


def numeric(values: list[Any]) -> bool:
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                for v in values)


def _errors(rows: list[dict]) -> list[list[float]]:
    """Error bar lengths below and above each retention (0 where there is no interval)."""
    lo = [max(0.0, r["retention"] - r["retention_ci_low"]) if r["retention_ci_low"] is not None
          else 0.0 for r in rows]
    hi = [max(0.0, r["retention_ci_high"] - r["retention"]) if r["retention_ci_high"] is not None
          else 0.0 for r in rows]
    return [lo, hi]


def plot_key(rows: list[dict], keys: list[str], key: str, path: Path) -> Path:
    """Retention per category against `key`: a row of panels per benchmark, a panel per
    combination of the other swept keys' values."""
    plt = pyplot()
    rated = [r for r in rows if r["retention"] is not None]
    others = [k for k in keys if k != key]
    panels = list(dict.fromkeys(tuple(r[k] for k in others) for r in rated)) or [()]
    benches = list(dict.fromkeys(r["benchmark"] for r in rated)) or [""]
    values = list(dict.fromkeys(r[key] for r in rated))
    is_numeric = numeric(values)
    most = max([1] + [len({r["category"] for r in rated if r["benchmark"] == b}) for b in benches])
    width = min(9.0, 3.2 + (0.6 if is_numeric else 0.25 * len(values)) * max(3, most))
    fig, axes = plt.subplots(len(benches), len(panels), squeeze=False, sharey=True,
                             figsize=(width * len(panels), 3.8 * len(benches)))
    colors = plt.get_cmap("tab10")
    for row_axes, bench in zip(axes, benches):
        cats = list(dict.fromkeys(r["category"] for r in rated if r["benchmark"] == bench))
        for ax, panel in zip(row_axes, panels):
            mine = [r for r in rated if r["benchmark"] == bench
                    and tuple(r[k] for k in others) == panel]
            if is_numeric:
                _lines(ax, mine, cats, key, values, colors)
            else:
                _bars(ax, mine, cats, key, values, colors)
            ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
            ax.set_ylabel("retention (score / teacher score)", fontsize=8)
            title = ", ".join([bench] + [f"{k}={v}" for k, v in zip(others, panel)])
            ax.set_title(title, fontsize=9)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6)
    fig.suptitle(f"Retention of the teacher's pass@1 against {key}")
    return save_figure(fig, path)


def _lines(ax, rows: list[dict], cats: list[str], key: str, values: list, colors) -> None:
    """A line per category against a numeric key, on a log axis when every value is positive."""
    for i, cat in enumerate(cats):
        line = sorted((r for r in rows if r["category"] == cat), key=lambda r: r[key])
        if line:
            # categories side by side (at most 7% apart), not on top of each other
            shift = 1.15 ** ((i - (len(cats) - 1) / 2) / max(1, len(cats) - 1))
            ax.errorbar([r[key] * shift for r in line], [r["retention"] for r in line],
                        yerr=_errors(line), marker="o", capsize=3, color=colors(i % 10),
                        linestyle="-" if "/" not in cat else ":", label=cat)
    if all(v > 0 for v in values):
        ax.set_xscale("log")
    ax.set_xticks(sorted(values))
    ax.set_xticklabels([f"{v:g}" for v in sorted(values)])
    ax.minorticks_off()
    ax.set_xlabel(key)


def _bars(ax, rows: list[dict], cats: list[str], key: str, values: list, colors) -> None:
    """Grouped bars: a group per category, a bar per value of the key."""
    bar = 0.8 / max(1, len(values))
    for j, value in enumerate(values):
        placed = [(x, r) for x, c in enumerate(cats) for r in rows
                  if r["category"] == c and r[key] == value]
        if placed:
            ax.bar([x + (j - (len(values) - 1) / 2) * bar for x, _ in placed],
                   [r["retention"] for _, r in placed], bar,
                   yerr=_errors([r for _, r in placed]), capsize=2, color=colors(j % 10),
                   label=f"{key}={value}")
    ax.set_xticks(range(len(cats)))
    ax.set_xticklabels([c.replace("/", "\n") for c in cats], fontsize=7)


def plot_cost(rows: list[dict], path: Path) -> Path:
    """Each benchmark's overall retention against the teacher's bill for the training data (or
    the training examples, when no teacher was priced) and against the training time."""
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter, NullFormatter
    overall = [r for r in rows if "/" not in r["category"] and r["retention"] is not None]
    priced = any((r["data_usd"] or 0) > 0 for r in overall)
    panels = [("data_usd", "teacher $ of the training data") if priced else
              ("train_examples", "training examples"), ("train_seconds", "training time (s)")]
    benches = list(dict.fromkeys(r["benchmark"] for r in overall))
    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.2), sharey=True)
    for ax, (field, label) in zip(axes, panels):
        for i, bench in enumerate(benches):
            pts = sorted((r for r in overall if r["benchmark"] == bench and r[field] is not None),
                         key=lambda r: r[field])
            if not pts:
                continue
            ax.errorbar([r[field] for r in pts], [r["retention"] for r in pts], yerr=_errors(pts),
                        marker="o", linestyle="none", capsize=3, color=colors(i % 10), label=bench)
            for r in pts:
                ax.annotate(r["variant"], (r[field], r["retention"]), fontsize=6,
                            textcoords="offset points", xytext=(4, 4))
        xs = [r[field] for r in overall if r[field] is not None]
        if xs and all(x > 0 for x in xs):
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_xlabel(label)
        ax.set_ylabel("retention (score / teacher score)")
        if benches:
            ax.legend(fontsize=7)
    fig.suptitle("Retention against cost")
    return save_figure(fig, path)
