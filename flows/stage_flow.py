"""Prefect flow `distill-stage`: one stage of one recipe; reads and writes the run directory that
the calling `distill` or `refresh` flow run names.

Its deployment sits on another work pool (prefect.yaml: `distill-stage/gpu`, the stages that
need GPUs), and the `distill` and `refresh` flows start it with `run_deployment` (their
`gpu_deployment` parameter). Both pools' workers read and write the same run directory, so it
must be on storage they share: a directory this worker does not see is refused here rather than
started empty.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from distill.errors import InputError
from distill.pipeline import run_stage
from distill.recipes import read_recipe
from flows.distill_flow import check_stages, distill_logs


@flow(name="distill-stage", log_prints=True)
@distill_logs()
def stage_flow(stage: str, recipe: str, run_dir: str, overrides: list[str] | None = None) -> str:
    """One stage of a recipe in an existing run directory.

    Args:
        stage: prompts, generate, filter, train, evaluate or publish
        recipe: a recipe in configs/ or a recipe file, as the calling flow run has it
        run_dir: the calling flow run's run directory: an absolute path on shared storage
        overrides: the calling flow run's dotted overrides
    """
    check_stages([stage], "stage")
    cfg = read_recipe(recipe, overrides or [])
    path = Path(run_dir)
    if not path.is_absolute() or not path.is_dir():
        raise InputError(f"{run_dir} is not a directory on this worker's machine: the run "
                         "directory must be on storage shared by the work pools' workers",
                         key="run_dir")
    # Waits for a run of the stage that still holds the run directory (the lost run a retry
    # replaces), logging who holds it, then resumes from its records.
    run_stage(stage, cfg, path, wait=True)
    print(f"{stage}: done in {path}")
    return run_dir


if __name__ == "__main__":
    stage_flow()
