"""train.report_to: TensorBoard event files of a real toy training run, read back with
TensorBoard's own reader; filter counts and eval scores in the same folder; the recipe check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distill.config import Recipe
from distill.records import Stage
from distill.tracking import read_log_history, tb_dir
from distill.train.stage import train_hash

from test_evaluate import World, recipe as eval_recipe  # noqa: E402
from test_train import _recipe, _run_dir  # noqa: E402


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _scalars(folder: Path) -> tuple[dict[str, list], list[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    return {t: acc.Scalars(t) for t in tags["scalars"]}, tags["tensors"]


def test_training_writes_loss_and_learning_rate_per_logged_step(tmp_path):
    from distill.train import run_train
    run = _run_dir(tmp_path / "run", 40, 24)
    # 64 records, batches of 16, one epoch: 4 optimizer steps, a log line at each
    run_train(_recipe(learning_rate=3e-3, epochs=1, batch_size=16, logging_steps=1), run)
    scalars, tensors = _scalars(tb_dir(run))
    assert [e.step for e in scalars["train/loss"]] == [1, 2, 3, 4]
    assert [e.step for e in scalars["train/learning_rate"]] == [1, 2, 3, 4]
    assert all(e.value > 0 for e in scalars["train/loss"])
    assert "run/text_summary" in tensors          # the run's name and recipe hash
    history = read_log_history(run)
    assert [r["step"] for r in history if "loss" in r] == [1, 2, 3, 4]
    assert history[-1]["train_runtime"] > 0       # the totals row
    # the report's plot reads the same history: a point per step in each panel
    from distill.publish.train_plots import plot_training, series
    curves = series(history)
    assert [s for s, _ in curves["loss"]] == [1, 2, 3, 4]
    assert [s for s, _ in curves["tokens_per_s"]] == [1, 2, 3, 4]
    assert all(v > 0 for _, v in curves["tokens_per_s"])
    png = plot_training({"a": history, "b": history}, tmp_path / "training.png", "t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tokens_per_s_is_the_rate_between_logged_steps():
    from distill.publish.train_plots import plot_training, series
    history = [{"step": 10, "loss": 2.0, "learning_rate": 1e-3, "num_input_tokens_seen": 1000, "train_runtime": 2.0},
               {"step": 20, "loss": 1.5, "learning_rate": 5e-4, "num_input_tokens_seen": 3000, "train_runtime": 6.0},
               {"step": 20, "train_runtime": 6.5, "train_loss": 1.7}]
    curves = series(history)
    assert curves["tokens_per_s"] == [(10, 500.0), (20, 500.0)]
    assert curves["learning_rate"] == [(10, 1e-3), (20, 5e-4)]
    assert plot_training({"no steps logged": [history[-1]]}, Path("unused.png"), "t") is None


def test_filter_counts_and_eval_scores_go_to_the_same_folder(tmp_path, monkeypatch):
    from distill.eval import run_evaluate
    from distill.filters import run_filter
    from test_filters import GENERATIONS, _recipe as filter_recipe
    with Stage(tmp_path, "generate").writer() as w:
        for g in GENERATIONS:
            w.write(g)
    counts = run_filter(filter_recipe(verify=False), tmp_path)
    Stage(tmp_path, "train").complete(model="train/model")
    World().install(monkeypatch)
    run_evaluate(eval_recipe(), tmp_path)
    scalars, _ = _scalars(tb_dir(tmp_path))
    assert scalars["filter/total"][0].value == 11
    assert scalars["filter/kept"][0].value == counts["kept"]
    assert scalars["filter/rejected/truncated"][0].value == 1
    scores = {(r["role"], r["category"], r["metric"]): r["score"]
              for r in Stage(tmp_path, "eval").read_json("scores.json")}
    got = scalars["eval/teacher/toy_arith/reasoning/pass@1"][0].value
    assert got == pytest.approx(scores[("teacher", "reasoning", "pass@1")])
    assert "eval/student/toy_arith/reasoning/pass@1" in scalars


def test_report_to_none_writes_no_event_files(tmp_path):
    from distill.tracking import log_scalars
    cfg = _recipe(report_to="none")
    assert cfg.train.report_to == ["none"]
    log_scalars(cfg, tmp_path, {"filter/kept": 1})
    assert not tb_dir(tmp_path).exists()


def test_a_bogus_tracker_is_a_recipe_error_naming_the_key(tmp_path):
    doc = yaml.safe_load(Path("configs/smoke.yaml").read_text())
    doc["train"]["report_to"] = ["bogus"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    r = subprocess.run([sys.executable, "-m", "distill.cli", "validate", str(path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "train.report_to" in r.stderr and "'bogus'" in r.stderr and "tensorboard" in r.stderr


def test_none_with_a_tracker_is_refused():
    with pytest.raises(Exception, match="none means no tracker"):
        _recipe(report_to=["none", "tensorboard"])


def test_trackers_and_logging_steps_never_retrain():
    assert train_hash(_recipe()) == train_hash(_recipe(report_to=["wandb"], logging_steps=5))
    assert isinstance(_recipe(), Recipe) and _recipe().train.report_to == ["tensorboard"]


def test_the_flow_publishes_where_training_is_tracked(tmp_path, monkeypatch):
    import flows.distill_flow as door
    from distill.tracking import log_scalars
    made = {}
    monkeypatch.setattr(door, "create_markdown_artifact",
                        lambda text, key, description: made.__setitem__(key, text))
    door.publish_artifacts("Smoke run", str(tmp_path))
    assert made == {}                               # nothing tracked yet: no artifact
    log_scalars(_recipe(), tmp_path, {"filter/kept": 3})
    door.publish_artifacts("Smoke run", str(tmp_path))
    assert f"tensorboard --logdir {tb_dir(tmp_path).resolve()}" in made["smoke-run-tracking"]


def test_other_trackers_get_the_run_name_and_recipe_hash_as_tags(monkeypatch):
    from distill.tracking import recipe_tags, trainer_settings
    for var in ("WANDB_TAGS", "MLFLOW_TAGS"):    # set, then unset: restored after the test
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    cfg = _recipe(report_to=["wandb", "mlflow", "trackio"])
    kw = trainer_settings(cfg)
    name, digest = recipe_tags(cfg)
    assert kw["report_to"] == ["wandb", "mlflow", "trackio"] and kw["run_name"] == f"test-{digest}"
    assert kw["project"] == "test" and name == "test"
    import os
    assert os.environ["WANDB_TAGS"] == f"test,{digest}"
    assert json.loads(os.environ["MLFLOW_TAGS"]) == {"run": "test", "recipe_hash": digest}
    assert trainer_settings(_recipe(report_to="none"))["report_to"] == "none"


def test_a_tracker_that_is_not_installed_is_named_before_training(monkeypatch):
    import importlib.util
    from distill.errors import InputError
    from distill.tracking import check_trackers
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    check_trackers(_recipe())                   # tensorboard is a dependency
    with pytest.raises(InputError, match="wandb is not installed") as e:
        check_trackers(_recipe(report_to=["tensorboard", "wandb"]))
    assert e.value.key == "train.report_to"
