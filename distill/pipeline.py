"""The pipeline in one place: the stages in order, each a plain `run_<stage>(cfg, run_dir)`.

The CLI and the Prefect flow both walk this list; neither holds logic of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from distill.config import CONFIG_DIR, Recipe, load_recipe
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


def recipe_path(name_or_path: str) -> Path:
    """A recipe file, or the name of one in configs/ (`smoke`, `r1-to-7b`)."""
    path = Path(name_or_path)
    if not path.exists() and (CONFIG_DIR / f"{name_or_path}.yaml").exists():
        return CONFIG_DIR / f"{name_or_path}.yaml"
    return path


def read_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe:
    """The recipe with its overrides, checked, as every door reads it (the CLI, the Prefect
    flows, rehearse): distill.config rejects the names it can list (benchmarks, filters, toy
    tasks, schedulers, ...); a benchmark's loader options need the benchmark, checked here."""
    from distill.errors import InputError
    from distill.grading.benchmarks import check_recipe_options

    path = recipe_path(name_or_path)
    cfg = load_recipe(path, overrides or [])
    try:
        check_recipe_options(cfg)
    except InputError as e:
        e.file = e.file or str(path)
        raise
    return cfg


def default_run_dir(cfg: Recipe) -> Path:
    return Path("runs") / cfg.run.name


def run_stage(name: str, cfg: Recipe, run_dir: Path) -> object:
    RunDir(run_dir).save_recipe(cfg)
    return stage_function(name)(cfg, Path(run_dir))


def run_all(cfg: Recipe, run_dir: Path, stages: list[str] | None = None) -> None:
    for name in stages or list(STAGES):
        run_stage(name, cfg, run_dir)
