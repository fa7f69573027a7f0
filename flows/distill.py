"""Prefect flow `distill`: the pipeline's stages as tasks, nothing more.

Each task calls the same `run_<stage>(cfg, run_dir)` as the CLI. Stages skip finished records
on their own, so a retried task or a re-run flow resumes instead of starting over; Prefect's
result cache is off because caching follows the records' keys, not pickled results.
"""

from __future__ import annotations

import re
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from distill.config import load_recipe
from distill.pipeline import STAGES, default_run_dir, recipe_path, run_stage


@task(retries=1, retry_delay_seconds=10, cache_policy=NO_CACHE)
def stage(name: str, recipe: str, overrides: list[str], run_dir: str) -> None:
    cfg = load_recipe(recipe_path(recipe), overrides)
    run_stage(name, cfg, Path(run_dir))


@flow(name="distill", log_prints=True)
def distill_flow(recipe: str = "smoke", run_dir: str | None = None,
                 overrides: list[str] | None = None) -> str:
    overrides = overrides or []
    cfg = load_recipe(recipe_path(recipe), overrides)
    run_dir = str(Path(run_dir or default_run_dir(cfg)).resolve())
    for name in STAGES:
        stage.with_options(name=name)(name, recipe, overrides, run_dir)
    report = Path(run_dir) / "report"
    for name, key in [("filter/report.md", "filter-report"), ("report/leaderboard.md", "leaderboard")]:
        path = Path(run_dir) / name
        if path.exists():
            slug = re.sub(r"[^a-z0-9-]+", "-", cfg.run.name.lower())
            create_markdown_artifact(path.read_text(), key=f"{slug}-{key}",
                                     description=f"{cfg.run.name}: {name}")
    print(f"report: {report}")
    return run_dir


if __name__ == "__main__":
    distill_flow()
