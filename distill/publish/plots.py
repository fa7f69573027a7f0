"""Plots: reads leaderboard rows and retention intervals, writes PNGs (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

from distill.eval.metrics import Estimate


def plot_retention(rows: list[dict], intervals: dict[tuple[str, str, str], Estimate],
                   path: Path, title: str) -> Path:
    """Retention of pass@1 per benchmark and category, base next to distilled student, with
    95% paired-bootstrap error bars where per-question scores were available."""
    import matplotlib
    matplotlib.use("Agg")  # no display on servers and workers
    import matplotlib.pyplot as plt

    cats = []
    for r in rows:
        key = (r["benchmark"], r["category"])
        if r["metric"] == "pass@1" and r["role"] != "teacher" and r["retention"] is not None \
                and key not in cats:
            cats.append(key)
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(cats) + 2), 4.2))
    for i, (role, color) in enumerate((("base", "#9aa5b1"), ("student", "#2b6cb0"))):
        xs, ys, lo, hi = [], [], [], []
        for x, (bench, cat) in enumerate(cats):
            row = next((r for r in rows if r["role"] == role and r["metric"] == "pass@1"
                        and r["benchmark"] == bench and r["category"] == cat), None)
            if row is None or row["retention"] is None:
                continue
            est = intervals.get((role, bench, cat))
            xs.append(x + (i - 0.5) * width)
            ys.append(row["retention"])
            lo.append(row["retention"] - est.ci_low if est else 0.0)
            hi.append(est.ci_high - row["retention"] if est else 0.0)
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, color=color, label=role)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--", label="teacher")
    ax.set_xticks(range(len(cats)))
    ax.set_xticklabels([f"{b}\n{c}" for b, c in cats], fontsize=8)
    ax.set_ylabel("retention (score / teacher score)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
