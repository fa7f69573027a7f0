"""The pipeline in one place: the stages in order, each a plain `run_<stage>(cfg, run_dir)`.

The CLI and the Prefect flow both walk this list; neither holds logic of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from distill.config import Recipe
from distill.eval import run_evaluate
from distill.filters import run_filter
from distill.generate import run_generate
from distill.prompts import run_prompts
from distill.publish import run_publish
from distill.records import RunDir
from distill.train import run_train

# stage name -> its function, in pipeline order; the folders each one writes are
# distill.records.STAGE_FOLDERS. The CLI imports this module inside its commands, so
# `distill --help` imports no stage.
STAGES: dict[str, Callable[[Recipe, Path], object]] = {
    "prompts": run_prompts,
    "generate": run_generate,
    "filter": run_filter,
    "train": run_train,
    "evaluate": run_evaluate,
    "publish": run_publish,
}


def stage_function(name: str) -> Callable[[Recipe, Path], object]:
    return STAGES[name]


def run_stage(name: str, cfg: Recipe, run_dir: Path) -> object:
    RunDir(run_dir).save_recipe(cfg)
    return stage_function(name)(cfg, Path(run_dir))


def run_all(cfg: Recipe, run_dir: Path, stages: list[str] | None = None) -> None:
    for name in stages or list(STAGES):
        run_stage(name, cfg, run_dir)
