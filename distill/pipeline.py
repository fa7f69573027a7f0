"""The pipeline in one place: the stages in order, each a plain `run_<stage>(cfg, run_dir)`.

The CLI and the Prefect flow both walk this list; neither holds logic of its own. `run_stage`
runs a stage as the one writer of its folders: it holds the stage's lock (distill/locks.py)
from before anything is written to the end, so a second run of the same stage on the same run
directory is refused, or waits, instead of asking the teacher for the same samples again.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

from distill.config import Recipe
from distill.eval import run_evaluate
from distill.filters import run_filter
from distill.generate import run_generate
from distill.locks import stage_lock
from distill.prompts import run_prompts
from distill.quantize import run_quantize
from distill.publish import run_publish
from distill.records import STAGE_FOLDERS, RunDir
from distill.train import run_train
from distill.train.launch import under_launcher

# stage name -> its function, in pipeline order; the folders each one writes are
# distill.records.STAGE_FOLDERS. The CLI imports this module inside its commands, so
# `distill --help` imports no stage.
STAGES: dict[str, Callable[[Recipe, Path], object]] = {
    "prompts": run_prompts,
    "generate": run_generate,
    "filter": run_filter,
    "train": run_train,
    "quantize": run_quantize,
    "evaluate": run_evaluate,
    "publish": run_publish,
}


def stage_function(name: str) -> Callable[[Recipe, Path], object]:
    return STAGES[name]


def lock_root(run_dir: Path, name: str) -> Path:
    """The run directory whose lock guards stage `name`: `run_dir`, or, when the stage's folder
    is a link into another run directory (the variants of a sweep share the stages their values
    leave equal, distill/sweep/), that one: one writer for the folder, whoever runs it."""
    folder = Path(run_dir) / STAGE_FOLDERS[name][0]
    return folder.resolve().parent if folder.is_symlink() else Path(run_dir)


def run_stage(name: str, cfg: Recipe, run_dir: Path, *, wait: bool = False) -> object:
    """Runs stage `name` on `run_dir` holding its lock (`<run_dir>/.locks/<name>.lock`); saves
    the recipe into the run directory first. Another run of the stage holding it: bad input
    (exit 2) naming the holder, or with `wait`, a wait until it ends, then a resume from the
    records it wrote. Different stages do not exclude each other."""
    run = stage_function(name)
    run_dir = Path(run_dir)
    # A rank of `accelerate launch` takes no lock: with train.launch, run_train launches
    # `distill train` again under accelerate while it holds this lock itself, and waits for the
    # ranks. (A launch typed by hand is not guarded either: were its ranks to take the lock,
    # they would refuse each other.)
    rank = name == "train" and under_launcher()
    with contextlib.nullcontext() if rank else stage_lock(lock_root(run_dir, name), name, wait=wait):
        RunDir(run_dir).save_recipe(cfg)
        return run(cfg, run_dir)


def run_all(cfg: Recipe, run_dir: Path, stages: list[str] | None = None, *,
            wait: bool = False) -> None:
    """The stages named (default all) in pipeline order, each holding its own lock while it
    runs (see `run_stage`)."""
    for name in stages or list(STAGES):
        run_stage(name, cfg, run_dir, wait=wait)
