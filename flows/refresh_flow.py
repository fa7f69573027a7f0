"""Prefect flow `refresh`: keeps a run current on a schedule (prefect.yaml: refresh/<recipe>);
reads a recipe and its run directory, writes the run directory and Prefect artifacts.

The decisions (which stages run, whether the kept set grew enough to retrain) live in
`distill.refresh.run_refresh`; this flow only hands it a function that runs each stage as a
Prefect task (the `gpu_stages` on `gpu_deployment`, as in the `distill` flow), and publishes the
refresh report, the filter report and the leaderboard as artifacts.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from distill.refresh import run_refresh
from flows.distill_flow import (check_stage_deployment, distill_logs, placement, publish_artifacts,
                                resolve_run, run_stage_task)


@flow(name="refresh", log_prints=True)
@distill_logs()
def refresh_flow(recipe: str = "smoke", run_dir: str | None = None,
                 overrides: list[str] | None = None, gpu_deployment: str | None = None,
                 gpu_stages: list[str] | None = None) -> dict:
    """New prompts only, re-filter, and retrain past the recipe's `refresh` thresholds.

    Args:
        recipe: a recipe in configs/ (smoke, r1-to-7b, ...) or a recipe file
        run_dir: the run directory to keep current (default runs/<recipe name>)
        overrides: dotted overrides, as `distill -o`
        gpu_deployment: a deployment of the distill-stage flow (distill-stage/gpu) that runs
            the gpu_stages on its own work pool; unset, every stage runs in this flow run
        gpu_stages: the stages sent to gpu_deployment (default ["train", "evaluate"])
    """
    overrides = overrides or []
    where = placement(None, gpu_deployment, gpu_stages)
    cfg, run_dir = resolve_run(recipe, run_dir, overrides)
    if any(where.values()):
        check_stage_deployment(gpu_deployment)
    summary = run_refresh(cfg, Path(run_dir), run=lambda name: run_stage_task(
        name, recipe, overrides, run_dir, where[name]))
    publish_artifacts(cfg.run.name, run_dir, [("refresh/report.md", "refresh")])
    print(f"refresh: {summary['new_prompts']} new prompts, kept {summary['kept_before']} -> "
          f"{summary['kept_after']}, retrained: {summary['retrained']} ({summary['reason']})")
    return summary


if __name__ == "__main__":
    refresh_flow()
