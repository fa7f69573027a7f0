"""Prefect flow `refresh`: keeps a run current on a schedule (prefect.yaml: refresh/<recipe>).

The decisions (which stages run, whether the kept set grew enough to retrain) live in
`distill.refresh.run_refresh`; this flow only hands it a function that runs each stage as a
Prefect task, and publishes the refresh report, the filter report and the leaderboard as
artifacts.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from distill.refresh import run_refresh
from flows.distill_flow import publish_artifacts, resolve_run, run_stage_task


@flow(name="refresh", log_prints=True)
def refresh_flow(recipe: str = "smoke", run_dir: str | None = None,
                 overrides: list[str] | None = None) -> dict:
    overrides = overrides or []
    cfg, run_dir = resolve_run(recipe, run_dir, overrides)
    summary = run_refresh(cfg, Path(run_dir),
                          run=lambda name: run_stage_task(name, recipe, overrides, run_dir))
    publish_artifacts(cfg.run.name, run_dir, [("refresh/report.md", "refresh")])
    print(f"refresh: {summary['new_prompts']} new prompts, kept {summary['kept_before']} -> "
          f"{summary['kept_after']}, retrained: {summary['retrained']} ({summary['reason']})")
    return summary


if __name__ == "__main__":
    refresh_flow()
