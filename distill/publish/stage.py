"""The publish stage: reads eval/scores.json, eval/questions.json and filter/counts.json, writes
report/ (leaderboard.csv/.md/.html, retention.png, README.md model card, the economics section)
and the publish marker.
"""

from __future__ import annotations

import logging
from pathlib import Path

from distill.config import Recipe
from distill.errors import InputError
from distill.publish import card, economics, leaderboard, plots
from distill.records import RunDir, Stage, write_text

log = logging.getLogger(__name__)


def _push(cfg: Recipe, run_dir: Path, readme: Path) -> None:
    """Uploads the distilled model with its card; only when the recipe asks for it."""
    from huggingface_hub import HfApi

    if not cfg.publish.hub_repo:
        raise InputError("publish.push needs publish.hub_repo", key="publish.hub_repo")
    api = HfApi()
    api.create_repo(cfg.publish.hub_repo, exist_ok=True)
    api.upload_folder(repo_id=cfg.publish.hub_repo, folder_path=str(run_dir / "train" / "model"))
    api.upload_file(repo_id=cfg.publish.hub_repo, path_or_fileobj=str(readme),
                    path_in_repo="README.md")


def run_publish(cfg: Recipe, run_dir: Path) -> Path:
    run = RunDir(run_dir)
    evaluated = Stage(run.path, "eval")
    if not evaluated.is_complete():
        raise InputError("the eval stage is not complete (run `distill evaluate` first)",
                         file=str(evaluated.path))
    stage = Stage(run.path, "publish")
    stage.start()
    scores = evaluated.read_json("scores.json")
    # Per-question scores give retention and differences their intervals; without them the
    # tables still carry point estimates.
    has_questions = (evaluated.path / "questions.json").exists()
    questions = evaluated.read_json("questions.json") if has_questions else []
    counts_path = run.path / "filter" / "counts.json"
    filter_counts = Stage(run.path, "filter").read_json("counts.json") \
        if counts_path.exists() else None

    rows = leaderboard.leaderboard_rows(scores)
    retention = leaderboard.retention_intervals(questions)
    title = f"{cfg.run.name}: {cfg.teacher.model} -> {cfg.train.student}"
    report = run.report
    write_text(report / "leaderboard.csv", leaderboard.to_csv(rows))
    write_text(report / "leaderboard.md", leaderboard.to_markdown(rows, title))
    write_text(report / "leaderboard.html", leaderboard.to_html(rows, title))
    plots.plot_retention(rows, retention, report / "retention.png", f"Retention: {cfg.run.name}")
    economics.write_economics(cfg, run.path, rows, report)  # economics.md/.json, quality_vs_cost.png
    model_card = card.build_card(cfg, rows, retention, leaderboard.differences(questions),
                                 filter_counts)
    readme = card.write_card(model_card, report / "README.md")
    if cfg.publish.push:
        _push(cfg, run.path, readme)
    stage.complete(report=str(report), rows=len(rows), pushed=bool(cfg.publish.push))
    log.info("report written to %s", report)
    return report
