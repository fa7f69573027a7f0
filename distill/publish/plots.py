"""Plots: reads leaderboard rows and retention intervals, writes PNGs (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

from distill.eval.metrics import Estimate


def plot_retention(rows: list[dict], intervals: dict[tuple[str, str, str], Estimate],
                   path: Path, title: str) -> Path:
    """Retention of pass@1 per benchmark and category, base next to distilled student, with
    95% paired-bootstrap error bars where per-question scores were available."""
    plt = pyplot()
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
    return save_figure(fig, path)


def pyplot():
    import matplotlib
    matplotlib.use("Agg")  # no display on servers and workers
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path


# ------------------------------------------------------------------ across runs (board.py)

def _label(r: dict) -> str:
    return f"{r['run']}: {r['model']}" if r["role"] == "student" else f"{r['model']} ({r['role']})"


def plot_category_retention(rows: list[dict], path: Path) -> Path:
    """Retention of pass@1 per benchmark and category, one bar per student (and base), with
    the paired-bootstrap intervals."""
    plt = pyplot()
    picked = [r for r in rows if r["metric"] == "pass@1" and r["role"] != "teacher"
              and r["retention"] is not None]
    cats = list(dict.fromkeys((r["benchmark"], r["category"]) for r in picked))
    models = list(dict.fromkeys(_label(r) for r in picked))
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(cats) * max(1, len(models)) + 2), 4.5))
    colors = plt.get_cmap("tab10")
    for i, model in enumerate(models):
        xs, ys, lo, hi = [], [], [], []
        for x, (bench, cat) in enumerate(cats):
            r = next((r for r in picked if _label(r) == model and r["benchmark"] == bench
                      and r["category"] == cat), None)
            if r is None:
                continue
            xs.append(x + (i - (len(models) - 1) / 2) * width)
            ys.append(r["retention"])
            lo.append(max(0.0, r["retention"] - r["retention_low"]) if r["retention_low"] is not None else 0.0)
            hi.append(max(0.0, r["retention_high"] - r["retention"]) if r["retention_high"] is not None else 0.0)
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=model, color=colors(i % 10))
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--", label="teacher")
    ax.set_xticks(range(len(cats)))
    ax.set_xticklabels([f"{b}\n{c}" for b, c in cats], fontsize=7)
    ax.set_ylabel("retention (score / teacher score)")
    ax.set_title("Retention of the teacher's pass@1, per category")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


METHOD_MARKERS = {"sft": "o", "logit_kd": "s", "on_policy": "^"}


def plot_score_vs_size(rows: list[dict], path: Path) -> Path:
    """pass@1 against parameters, one panel per benchmark: students marked by method, base
    models hollow, each teacher a dashed line (its size is often unknown or far off the
    axis)."""
    plt = pyplot()
    picked = [r for r in rows if r["metric"] == "pass@1" and "/" not in r["category"]]
    benches = sorted({r["benchmark"] for r in picked})
    fig, axes = plt.subplots(1, max(1, len(benches)), figsize=(4.2 * max(1, len(benches)), 4.0),
                             squeeze=False)
    from matplotlib.ticker import FuncFormatter, NullFormatter

    def size(x, _=None):
        for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
            if x >= div:
                return f"{x / div:g}{unit}"
        return f"{x:g}"

    for ax, bench in zip(axes[0], benches):
        placed = 0
        for r in (r for r in picked if r["benchmark"] == bench):
            err = ([[r["score"] - r["ci_low"]], [r["ci_high"] - r["score"]]]
                   if r["ci_low"] is not None else None)
            if r["role"] == "teacher":
                ax.axhline(r["score"], linestyle="--", linewidth=0.9, color="#555",
                           label=f"teacher {r['model']}")
            elif r["params"]:
                hollow = r["role"] == "base"
                # Models of one size side by side, not on top of each other.
                x = r["params"] * 1.06 ** placed
                placed += 1
                ax.errorbar([x], [r["score"]], yerr=err, capsize=3,
                            marker=METHOD_MARKERS.get(r["method"], "o"), linestyle="none",
                            markerfacecolor="none" if hollow else None,
                            label=_label(r) + (f" [{r['method']}]" if r["method"] else ""))
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(size))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("parameters")
        ax.set_ylabel("pass@1")
        ax.set_ylim(0, 1.05)
        ax.set_title(bench)
        ax.legend(fontsize=6)
    return save_figure(fig, path)


def plot_quality_vs_cost(models: list[dict], path: Path) -> Path:
    """Mean retention of each student against what it cost: the teacher's bill (dollars at
    the recipe's prices, or completion tokens when no run priced its teacher) and the training
    time."""
    plt = pyplot()
    students = [m for m in models if m["role"] == "student" and m["mean_retention"] is not None]
    priced = any((m["gen_cost"] or 0) > 0 for m in students)
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 4.0))
    panels = [("gen_cost" if priced else "gen_tokens",
               "teacher cost ($)" if priced else "teacher completion tokens"),
              ("train_seconds", "training time (min)")]
    for ax, (key, label) in zip(axes, panels):
        for m in students:
            x = m.get(key)
            if x is None:
                continue
            x = x / 60 if key == "train_seconds" else x
            ax.scatter([x], [m["mean_retention"]], marker=METHOD_MARKERS.get(m["method"], "o"))
            ax.annotate(m["run"], (x, m["mean_retention"]), fontsize=7,
                        textcoords="offset points", xytext=(4, 4))
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_xlabel(label)
        ax.set_ylabel("mean retention")
        ax.set_ylim(0, max([1.1] + [m["mean_retention"] * 1.1 for m in students]))
    fig.suptitle("Quality against cost")
    return save_figure(fig, path)
