"""Prefect flow `distill`: the pipeline's stages as tasks, nothing more.

Each task calls the same `run_<stage>(cfg, run_dir)` as the CLI. Stages skip finished records
on their own, so a retried task or a re-run flow resumes instead of starting over; Prefect's
result cache is off because caching follows the records' keys, not pickled results.

The file is not called distill.py: Prefect loads an entrypoint as a module named after its
file, and a module named `distill` would stand in for the package, so `import distill.config`
would fail (or, with an editable install elsewhere, silently import another checkout).
"""

from __future__ import annotations

import re
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from distill.config import load_recipe
from distill.pipeline import STAGES, default_run_dir, recipe_path, run_stage

# Stages that talk to servers retry more: a retry resumes from the records already written.
RETRIES = {"generate": 3, "evaluate": 2, "publish": 2}


@task(retries=1, retry_delay_seconds=10, cache_policy=NO_CACHE)
def stage(name: str, recipe: str, overrides: list[str], run_dir: str) -> None:
    cfg = load_recipe(recipe_path(recipe), overrides)
    run_stage(name, cfg, Path(run_dir))


def run_stage_task(name: str, recipe: str, overrides: list[str], run_dir: str) -> None:
    stage.with_options(name=name, retries=RETRIES.get(name, 1))(name, recipe, overrides, run_dir)


def publish_artifacts(run_name: str, run_dir: str, extra: list[tuple[str, str]] = ()) -> None:
    """The filter report, the leaderboard (as Markdown and as a table) and `extra` (file, key)
    pairs, as Prefect artifacts keyed by the run's name: the latest run of a recipe shows up
    under the same key, earlier ones stay in its history."""
    slug = re.sub(r"[^a-z0-9-]+", "-", run_name.lower())
    files = [("filter/report.md", "filter-report"), ("report/leaderboard.md", "leaderboard"),
             *extra]
    for name, key in files:
        path = Path(run_dir) / name
        if path.exists():
            create_markdown_artifact(path.read_text(), key=f"{slug}-{key}",
                                     description=f"{run_name}: {name}")
    table = Path(run_dir) / "report" / "leaderboard.csv"
    if table.exists():
        import csv
        with open(table, newline="") as f:
            create_table_artifact(list(csv.DictReader(f)), key=f"{slug}-leaderboard-table",
                                  description=f"{run_name}: report/leaderboard.csv")


def resolve_run(recipe: str, run_dir: str | None, overrides: list[str]):
    """The recipe with its overrides, and the absolute run directory (default runs/<name>)."""
    cfg = load_recipe(recipe_path(recipe), overrides)
    return cfg, str(Path(run_dir or default_run_dir(cfg)).resolve())


@flow(name="distill", log_prints=True)
def distill_flow(recipe: str = "smoke", run_dir: str | None = None,
                 overrides: list[str] | None = None) -> str:
    overrides = overrides or []
    cfg, run_dir = resolve_run(recipe, run_dir, overrides)
    for name in STAGES:
        run_stage_task(name, recipe, overrides, run_dir)
    publish_artifacts(cfg.run.name, run_dir)
    print(f"report: {Path(run_dir) / 'report'}")
    return run_dir


if __name__ == "__main__":
    distill_flow()
