"""The publish stage: reads eval/scores.json, eval/questions.json and the run's lineage
(publish/lineage.py), writes report/ (leaderboard.csv/.md/.html, retention.png, README.md model
card, dataset_card.md, the economics section) and, with publish.push or publish.dry_run, the
Hub folders of publish/hub.py (pushed with publish.push), then the publish marker.
"""

from __future__ import annotations

import logging
from pathlib import Path

from distill.config import Recipe
from distill.errors import InputError
from distill.publish import (card, datacard, economics, edge, hub, leaderboard, lineage, plots,
                             train_plots)
from distill.tracking import read_log_history
from distill.links import leaderboard_section
from distill.records import RunDir, write_text

log = logging.getLogger(__name__)


def run_publish(cfg: Recipe, run_dir: Path) -> Path:
    run = RunDir(run_dir)
    evaluated = run.require("eval", complete=True)
    stage = run.publish
    stage.start()
    scores = evaluated.read_json("scores.json")
    # Per-question scores give retention and differences their intervals; without them the
    # tables still carry point estimates.
    has_questions = (evaluated.path / "questions.json").exists()
    questions = evaluated.read_json("questions.json") if has_questions else []
    history = lineage.run_lineage(run.path)
    p = cfg.publish
    if cfg.run.rehearsal and p.push and not p.dry_run:
        raise InputError("a rehearsal is never pushed: its student is a tiny random-init stand-in "
                         "(publish.dry_run stages the folders a real run would push)",
                         key="publish.push")
    token = hub.hub_token(cfg) if p.push and not p.dry_run else None
    model_license = p.license or lineage.model_license(cfg.train.student, cfg.train.revision)
    data_license = p.dataset_license or lineage.model_license(cfg.teacher.model,
                                                              cfg.teacher.revision)

    rows = leaderboard.leaderboard_rows(scores)
    retention = leaderboard.retention_intervals(questions)
    title = card.report_title(cfg)
    report = run.report
    report.mkdir(parents=True, exist_ok=True)
    write_text(report / "leaderboard.csv", leaderboard.to_csv(rows))
    write_text(report / "leaderboard.md", leaderboard.to_markdown(rows, title) + leaderboard_section(rows))
    write_text(report / "leaderboard.html", leaderboard.to_html(rows, title))
    plots.plot_retention(rows, retention, report / "retention.png",
                         ("REHEARSAL - " if cfg.run.rehearsal else "") + f"Retention: {cfg.run.name}")
    economics.write_economics(cfg, run.path, rows, report)  # economics.md/.json, quality_vs_cost.png
    comparisons = evaluated.read_json("comparisons.json") \
        if (evaluated.path / "comparisons.json").exists() else []
    edge_rows = edge.write_edge(run.path, scores, comparisons, report, title)  # report/edge.md
    train_plots.plot_training({cfg.train.student: read_log_history(run.path)}, report / "training.png",
                              f"Training: {cfg.run.name}")
    model_card = card.build_card(cfg, rows, retention, leaderboard.differences(questions),
                                 history, model_license, edge_rows)
    cards = {"model": card.write_card(model_card, report / "README.md")}
    if edge_rows and cfg.quantize.gguf_repo == "separate":
        cards["gguf"] = card.write_card(card.build_gguf_card(cfg, edge_rows, model_license),
                                        report / "gguf_card.md")
    if run.dataset.is_complete():
        cards["dataset"] = card.write_card(
            datacard.build_dataset_card(cfg, history, data_license, card.dataset_repo(cfg)),
            report / "dataset_card.md")
    if p.adapter_repo:
        cards["adapter"] = card.write_card(
            card.build_adapter_card(cfg, model_license, p.hub_repo), report / "adapter_card.md")

    staged, pushed = {}, {}
    if p.push or p.dry_run:
        repos = hub.stage_folders(cfg, run.path, cards)
        staged = {kind: r["folder"] for kind, r in repos.items()}
        if token:
            pushed = hub.push_folders(cfg, repos, token)
            log.info("pushed: %s", pushed)
        else:
            log.info("dry run: the folders a push would upload are in %s",
                     run.publish.path / "hub")
    stage.complete(report=str(report), rows=len(rows), license=model_license,
                   staged=staged, pushed=pushed)
    log.info("report written to %s", report)
    return report
