"""The plots people expect at the end of training: loss, learning rate and tokens/s per step,
one line per student (one for a run's report/training.png, every variant overlaid for a
sweep's report/map_training.png). Reads what training saved, train/log_history.jsonl
(distill/tracking.py); writes a PNG (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.publish.plots import pyplot, save_figure


def series(history: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) per logged step: loss, learning_rate and tokens_per_s. tokens/s is the
    rate between two logged steps (tokens seen and the trainer's clock, both cumulative), so a
    slow stretch shows where it happened rather than in a running average."""
    out: dict[str, list[tuple[int, float]]] = {"loss": [], "learning_rate": [], "tokens_per_s": []}
    prev: tuple[float, float] | None = None
    for row in history:
        if "loss" not in row or "step" not in row:
            continue                    # the totals row at the end, an eval row
        step = int(row["step"])
        out["loss"].append((step, float(row["loss"])))
        if "learning_rate" in row:
            out["learning_rate"].append((step, float(row["learning_rate"])))
        seen, clock = row.get("num_input_tokens_seen"), row.get("train_runtime")
        if seen is not None and clock is not None:
            if prev is not None and clock > prev[1]:
                out["tokens_per_s"].append((step, (seen - prev[0]) / (clock - prev[1])))
            elif prev is None and clock > 0:
                out["tokens_per_s"].append((step, seen / clock))
            prev = (float(seen), float(clock))
    return out


def plot_training(histories: dict[str, list[dict[str, Any]]], path: Path, title: str) -> Path | None:
    """Three panels over the optimizer step; `histories` maps a student's label to its log
    history. None (nothing written) when no history has a logged step."""
    curves = {label: series(h) for label, h in histories.items()}
    curves = {label: c for label, c in curves.items() if c["loss"]}
    if not curves:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = (("loss", "training loss"), ("learning_rate", "learning rate"),
              ("tokens_per_s", "tokens/s (input tokens, no padding)"))
    for ax, (key, label) in zip(axes, panels):
        for name, c in curves.items():
            if c[key]:
                steps, values = zip(*c[key])
                ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=name)
        ax.set_xlabel("step")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)
