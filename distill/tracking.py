"""Training tracked where ML engineers look: the recipe's `train.report_to` trackers.

Reads the recipe; writes TensorBoard event files under run_dir/train/tb/ (the default tracker,
local and embedded: `tensorboard --logdir run_dir/train/tb`) and the trainer's per-step log
history as run_dir/train/log_history.jsonl (what the report's training plots read).

- Training: `trainer_settings` goes into TrainingArguments (report_to, run_name, logging_dir's
  stand-in), and `attach` points transformers' own TensorBoard callback at train/tb/ and names
  the run there (a text summary with the run's name and recipe hash). wandb, mlflow and trackio
  are transformers' integrations too: they get run_name and the name and hash as tags
  (WANDB_TAGS, MLFLOW_TAGS), and need their package and login.
- Filter counts and eval scores: `log_scalars`, at the end of those stages, into the same
  TensorBoard folder; for another tracker, through its Python API when it is installed and a
  run of it is active, else skipped with a log line (a finished training run is not reopened).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

from distill.config import Recipe
from distill.errors import InputError
from distill.records import write_text

log = logging.getLogger("distill.tracking")

TRACKERS = ("tensorboard", "wandb", "mlflow", "trackio", "none")


def trackers(cfg: Recipe) -> list[str]:
    return [r for r in cfg.train.report_to if r != "none"]


def tb_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "train" / "tb"


def recipe_tags(cfg: Recipe) -> list[str]:
    """The run's name and the recipe's hash: how a tracker's run is found from a run dir."""
    return [cfg.run.name, f"recipe-{cfg.section_hash(*type(cfg).model_fields)}"]


def check_trackers(cfg: Recipe) -> None:
    """Bad input (exit 2) before any weights load: a tracker whose package is not installed."""
    import importlib.util
    for name in trackers(cfg):
        if importlib.util.find_spec(name) is None:
            raise InputError(f"{name} is not installed: pip install {name} (or leave it out of "
                             f"train.report_to; none turns tracking off)", key="train.report_to")


def trainer_settings(cfg: Recipe) -> dict[str, Any]:
    """TrainingArguments fields; sets the tag variables of the trackers that read them."""
    names = trackers(cfg)
    tags = recipe_tags(cfg)
    if "wandb" in names:
        os.environ.setdefault("WANDB_TAGS", ",".join(tags))
    if "mlflow" in names:
        os.environ.setdefault("MLFLOW_TAGS", json.dumps({"run": tags[0], "recipe_hash": tags[1]}))
    # Tokens seen go into every log line (with the trainer's clock): the report's tokens/s plot.
    kw: dict[str, Any] = {"report_to": names or "none", "run_name": f"{tags[0]}-{tags[1]}",
                          "logging_steps": cfg.train.logging_steps,
                          "include_num_input_tokens_seen": "non_padding"}
    if "trackio" in names:
        kw["project"] = cfg.run.name        # trackio's project (default "huggingface")
    return kw


def attach(trainer: Any, cfg: Recipe, run_dir: Path) -> None:
    """Points the trainer's TensorBoard callback at train/tb/ (transformers' default is a
    folder under the checkpoints, named by the time: not findable from the run)."""
    from transformers.integrations import TensorBoardCallback
    if not trainer.is_world_process_zero():
        return                          # one writer: the callback itself logs on rank 0 only
    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, TensorBoardCallback):
            cb.logging_dir = str(tb_dir(run_dir))
            _write_text(cfg, run_dir)


def log_history_path(run_dir: Path) -> Path:
    return Path(run_dir) / "train" / "log_history.jsonl"


def save_log_history(history: list[dict[str, Any]], run_dir: Path) -> Path:
    """trainer.state.log_history, one JSON object a line (step, loss, learning_rate, ...;
    the last line holds the run's totals: train_runtime, train_tokens_per_second, ...)."""
    path = log_history_path(run_dir)
    write_text(path, "".join(json.dumps(row) + "\n" for row in history))
    return path


def read_log_history(run_dir: Path) -> list[dict[str, Any]]:
    path = log_history_path(run_dir)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_text(cfg: Recipe, run_dir: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter
    with SummaryWriter(str(tb_dir(run_dir))) as w:
        name, digest = recipe_tags(cfg)
        w.add_text("run", f"{name} ({digest}); run dir {Path(run_dir).resolve()}")


def log_scalars(cfg: Recipe, run_dir: Path, values: Mapping[str, float], step: int = 0) -> None:
    """Scalars (tag -> value) into every tracker of the recipe that can take them now."""
    names = trackers(cfg)
    if "tensorboard" in names:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:             # the stage's outputs are written: never fail it here
            log.warning("tracking: tensorboard is not installed; %d values not logged", len(values))
            names.remove("tensorboard")
        else:
            with SummaryWriter(str(tb_dir(run_dir))) as w:
                for tag, value in values.items():
                    w.add_scalar(tag, value, step)
    for name in names:
        if name != "tensorboard" and not _log_elsewhere(name, values, step):
            log.info("tracking: %d values not sent to %s (no active run of it in this process)",
                     len(values), name)


def _log_elsewhere(name: str, values: Mapping[str, float], step: int) -> bool:
    try:
        if name == "wandb":
            import wandb
            if wandb.run is None:
                return False
            wandb.log(dict(values), step=step)
            return True
        if name == "mlflow":
            import mlflow
            if mlflow.active_run() is None:
                return False
            mlflow.log_metrics({k.replace("/", ".").replace("=", "-"): v for k, v in values.items()}, step=step)
            return True
        if name == "trackio":
            import trackio
            trackio.log(dict(values), step=step)
            return True
    except Exception as e:      # a tracker is a side channel: it never fails a stage
        log.info("tracking: %s: %s", name, e)
    return False


def tracking_markdown(run_dir: Path) -> str | None:
    """Where a run's training is tracked, as Markdown (the Prefect flow's artifact): the
    TensorBoard folder and the command that opens it; None when nothing was tracked."""
    folder = tb_dir(run_dir).resolve()
    if not folder.is_dir():
        return None
    return (f"# Training tracked\n\nTensorBoard event files: `{folder}`\n\n"
            f"```\ntensorboard --logdir {folder}\n```\n\nLoss and learning rate per step "
            f"(train/), filter counts (filter/) and eval scores (eval/) are there; the per-step "
            f"log is also in `{log_history_path(run_dir).resolve()}`.\n")
