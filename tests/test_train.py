"""run_train: TRL SFT / LoRA of the toy student on a tiny run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.config import Recipe, load_recipe
from distill.errors import InputError
from distill.pipeline import recipe_path
from distill.records import RunDir, record_id
from distill.toy.tasks import make_tasks
from distill.train import run_train


def _recipe(**train) -> Recipe:
    return Recipe.model_validate({
        "run": {"name": "test", "seed": 0},
        "prompts": {"sources": [{"name": "toy_arith", "kind": "toy", "family": "arith",
                                 "category": "reasoning"}]},
        "teacher": {"model": "toy:teacher"},
        "train": {"student": "toy:student", "max_length": 256, **train},
        "eval": {"benchmarks": ["toy_arith", "toy_code"]},
    })


def _run_dir(path: Path, n_arith: int, n_code: int) -> Path:
    """A run dir whose dataset stage holds gold traces, standing in for filtered teacher traces."""
    stage = RunDir(path).stage("dataset")
    with stage.writer() as w:
        for t in make_tasks("arith", n_arith, 0) + make_tasks("code", n_code, 0):
            w.write({"id": record_id(t["messages"]), "prompt_id": record_id(t["messages"]),
                     "source": f"toy_{t['family']}", "category": t["category"],
                     "messages": t["messages"] + [{"role": "assistant", "content": t["reference"]}]})
    stage.complete()
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def test_train_writes_model_lineage_and_marker_and_skips_when_done(tmp_path):
    run = _run_dir(tmp_path / "run", 40, 24)
    cfg = _recipe(learning_rate=3e-3, epochs=1, batch_size=16)
    model_dir = run_train(cfg, run)
    assert model_dir == run / "train" / "model" and (model_dir / "model.safetensors").exists()
    lineage = json.loads((run / "train" / "lineage.json").read_text())
    assert lineage["dataset_records"] == 64 and lineage["method"] == "sft"
    assert lineage["student"] == "toy:student" and len(lineage["dataset_hash"]) == 16
    assert "student: toy:student" in (run / "train" / "recipe.yaml").read_text()
    manifest = RunDir(run).stage("train").manifest()
    assert manifest["records"] == 64
    stamp = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert run_train(cfg, run) == model_dir  # same config and data: nothing is retrained
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == stamp
    changed = run_train(_recipe(learning_rate=1e-3, epochs=1, batch_size=16), run)
    assert RunDir(run).stage("train").manifest()["config_hash"] != manifest["config_hash"]
    assert (changed / "model.safetensors").stat().st_mtime_ns != stamp


def test_pad_equal_to_eos_is_refused(tmp_path):
    from distill.toy.models import build_student
    model, tok = build_student()
    tok.pad_token = tok.eos_token
    model.save_pretrained(tmp_path / "bad")
    tok.save_pretrained(tmp_path / "bad")
    run = _run_dir(tmp_path / "run", 4, 4)
    with pytest.raises(InputError, match="pad token"):
        run_train(_recipe(student=str(tmp_path / "bad")), run)
    assert not RunDir(run).stage("train").is_complete()


def test_template_without_generation_markers_is_refused(tmp_path):
    from distill.toy.models import build_student
    model, tok = build_student()
    tok.chat_template = tok.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    model.save_pretrained(tmp_path / "bad")
    tok.save_pretrained(tmp_path / "bad")
    with pytest.raises(InputError, match="generation"):
        run_train(_recipe(student=str(tmp_path / "bad")), _run_dir(tmp_path / "run", 4, 4))


def test_lora_trains_and_merges(tmp_path):
    from distill.toy import resolve_model
    run = _run_dir(tmp_path / "run", 32, 32)
    model_dir = run_train(_recipe(adapter="lora", learning_rate=1e-2, epochs=1, batch_size=16,
                                  lora={"r": 4, "alpha": 8, "dropout": 0.0}), run)
    assert (run / "train" / "adapter" / "adapter_config.json").exists()
    merged, _ = _load(model_dir)
    base, _ = _load(resolve_model("toy:student"))
    assert not any("lora" in k for k in merged.state_dict())  # plain model, servable as is
    changed = [k for k, v in merged.state_dict().items() if not (v == base.state_dict()[k]).all()]
    assert any("q_proj" in k for k in changed)


@pytest.mark.parametrize("mode", ["padding_free", "packing"])
def test_padding_free_batches_give_the_padded_loss(tmp_path, mode):
    """One row of concatenated documents with restarting position ids must give the loss of
    padded rows: the documents in a row do not attend to each other."""
    losses = {}
    for m in ("padded", mode):
        run = _run_dir(tmp_path / m, 24, 8)
        run_train(_recipe(max_steps=1, batch_size=32, learning_rate=1e-9, epochs=1,
                          **({} if m == "padded" else {m: True})), run)
        losses[m] = RunDir(run).stage("train").manifest()["train_loss"]
    assert losses[mode] == pytest.approx(losses["padded"], rel=1e-4), losses


def test_qlora_without_a_gpu_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="qlora.*CUDA GPU"):
        run_train(_recipe(adapter="qlora"), _run_dir(tmp_path / "run", 4, 4))


def test_liger_without_the_package_is_a_clear_error(tmp_path):
    pytest.importorskip("torch")
    try:
        import liger_kernel  # noqa: F401
        pytest.skip("liger-kernel is installed here")
    except ImportError:
        pass
    with pytest.raises(InputError, match="liger-kernel"):
        run_train(_recipe(liger=True), _run_dir(tmp_path / "run", 4, 4))


def test_logit_kd_across_vocabularies_is_refused_or_falls_back_to_sft(tmp_path):
    from distill.toy.models import build_student
    model, tok = build_student()
    tok.add_tokens(["<tool_call>", "</tool_call>"])
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(tmp_path / "other")
    tok.save_pretrained(tmp_path / "other")
    run = _run_dir(tmp_path / "run", 16, 8)
    with pytest.raises(InputError, match=r"103-token vocabulary.*101.*GOLD"):
        run_train(_recipe(method="logit_kd", kd={"teacher_tokenizer": str(tmp_path / "other")}), run)
    run_train(_recipe(method="logit_kd", max_steps=1, epochs=1,
                      kd={"teacher_tokenizer": str(tmp_path / "other"), "on_mismatch": "sft"}), run)
    assert json.loads((run / "train" / "lineage.json").read_text())["method"] == "sft"


def test_logit_kd_without_stored_logprobs_says_how_to_get_them(tmp_path):
    with pytest.raises(InputError, match="generate.top_logprobs"):
        run_train(_recipe(method="logit_kd"), _run_dir(tmp_path / "run", 4, 4))


@pytest.mark.slow
def test_sft_student_beats_base_and_stops(tmp_path):
    from distill.toy import resolve_model
    from distill.toy.teacher import score
    tasks = make_tasks("arith", 80, 3, "eval") + make_tasks("code", 60, 3, "eval")
    base = score(*_load(resolve_model("toy:student")), tasks)
    run = _run_dir(tmp_path / "run", 1200, 900)
    trained = score(*_load(run_train(_recipe(**SMOKE_TRAIN), run)), tasks)
    for family in ("arith", "code"):
        assert trained[family]["accuracy"] > 0.5 > base[family]["accuracy"] + 0.4, (base, trained)
        assert trained[family]["stop_rate"] > 0.9, trained


# The demo recipe's optimiser settings: the student must learn what the demo promises.
SMOKE_TRAIN = load_recipe(recipe_path("smoke")).train.model_dump(
    include={"learning_rate", "epochs", "batch_size", "warmup_ratio", "lr_scheduler"})


def test_kill_mid_training_then_rerun_resumes_from_the_last_complete_checkpoint(tmp_path):
    """SIGKILL while the trainer writes its second checkpoint; the re-run resumes from the last
    complete one (never a half-written one), finishes the planned steps and writes the model."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml
    run = _run_dir(tmp_path / "run", 40, 24)
    recipe = _recipe(learning_rate=3e-3, epochs=5, batch_size=8, save_steps=5).model_dump(exclude_defaults=True)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    cmd = [sys.executable, "-m", "distill.cli", "train", str(tmp_path / "r.yaml"), "--run-dir", str(run)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    deadline = time.time() + 300
    while not list((run / "train" / "checkpoints").glob("*/checkpoint-10")):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode()[-2000:]
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not RunDir(run).stage("train").is_complete()
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    resumed = [ln for ln in again.stdout.splitlines() if ln.startswith("train: resuming from")]
    assert resumed and resumed[0].rsplit("-", 1)[1] in {"5", "10"}, again.stdout[-2000:]
    ckpts = next((run / "train" / "checkpoints").iterdir())
    state = json.loads((ckpts / "checkpoint-40" / "trainer_state.json").read_text())
    assert state["global_step"] == 40 == state["max_steps"]
    assert RunDir(run).stage("train").is_complete() and (run / "train" / "model" / "config.json").exists()


def test_a_half_written_checkpoint_is_never_resumed_from(tmp_path):
    from distill.train.stage import last_complete_checkpoint
    assert last_complete_checkpoint(tmp_path / "none") is None
    for step, state in ((5, '{"global_step": 5}'), (10, None), (15, '{"global_st')):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"x")
        if state is not None:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-5")


def test_same_recipe_and_data_train_the_same_weights(tmp_path):
    """Reproducibility: the seed fixes initialisation of adapters, data order and dropout."""
    import torch
    from safetensors.torch import load_file
    weights = []
    for name in ("a", "b"):
        run = _run_dir(tmp_path / name, 24, 8)
        model_dir = run_train(_recipe(learning_rate=3e-3, max_steps=4, batch_size=8, adapter="lora",
                                      lora={"r": 4, "alpha": 8, "dropout": 0.1}), run)
        weights.append(load_file(model_dir / "model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
