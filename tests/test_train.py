"""run_train: TRL SFT / LoRA of the toy student on a tiny run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.config import Recipe, load_recipe
from distill.errors import InputError
from distill.config import recipe_path
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


def _toy_with(tmp_path, name, change):
    """The toy student saved with its tokenizer changed by `change(tok)`."""
    from distill.toy.arch import build_student
    model, tok = build_student()
    change(tok)
    model.save_pretrained(tmp_path / name)
    tok.save_pretrained(tmp_path / name)
    return str(tmp_path / name)


def test_pad_equal_to_eos_trains_and_the_saved_student_stops(tmp_path):
    """R1-Distill-Qwen ships pad == eos; no collator here reads labels from pad ids, so it is
    allowed (the next test checks the EOS label survives padding)."""
    student = _toy_with(tmp_path, "padeos", lambda tok: setattr(tok, "pad_token", tok.eos_token))
    run = _run_dir(tmp_path / "run", 4, 4)
    model_dir = run_train(_recipe(student=student, max_steps=1), run)
    _, tok = _load(model_dir)
    assert tok.pad_token == tok.eos_token == "<|im_end|>"
    assert RunDir(run).stage("train").is_complete()


def test_when_pad_equals_eos_the_eos_position_keeps_its_label(tmp_path):
    """The SFT batches TRL builds (labels from the assistant mask, padded with -100) and the KD
    collator's: the end of each row is EOS and trained, the padding after it (the same id) is
    not."""
    from distill.records import RunDir as _RunDir
    from distill.toy import resolve_model
    from distill.chat import prepare_tokenizer
    from distill.train.common import Prepared
    from distill.train.data import source_dataset
    from distill.train.kd import KDCollator
    from distill.train.kd_data import kd_examples
    from distill.positions import positions
    from distill.train.sft import build_sft

    cfg = _recipe(pad_token="<|im_end|>", batch_size=8)
    student = resolve_model("toy:student")
    tok, stop_ids = prepare_tokenizer(cfg.train, student)
    eos = tok.eos_token_id
    assert tok.pad_token_id == eos
    run = _run_dir(tmp_path / "run", 5, 3)
    data, cache = source_dataset(_RunDir(run).stage("dataset"), tmp_path / "cache")
    prep = Prepared(path=student, tok=tok, end_of_turn=tok.eos_token, stop_ids=stop_ids,
                    positions=positions(cfg.train, 512, "toy"), data=data, cache=cache)
    trainer, _ = build_sft(cfg, prep, tmp_path / "ckpt")
    sft = next(iter(trainer.get_train_dataloader()))
    kd = KDCollator(tok.pad_token_id)(kd_examples(list(_RunDir(run).stage("dataset").read()), tok, 512)[0])
    for batch in (sft, kd):
        lengths = batch["attention_mask"].sum(1)
        assert lengths.min() < batch["input_ids"].shape[1]  # some rows are padded
        for ids, labels, n in zip(batch["input_ids"], batch["labels"], lengths):
            assert ids[n - 1] == eos and labels[n - 1] == eos
            assert (ids[n:] == eos).all() and (labels[n:] == -100).all()


def test_template_without_generation_markers_trains_on_the_assistant_tokens(tmp_path):
    """The mask comes from the template's own rendering (prompt vs whole conversation), not from
    {% generation %} markers, which no base student's template has."""
    def strip(tok):
        tok.chat_template = tok.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    student = _toy_with(tmp_path, "plain", strip)
    model_dir = run_train(_recipe(student=student, max_steps=1), _run_dir(tmp_path / "run", 4, 4))
    from distill.chat import PROBE, tokenize_chat
    _, tok = _load(model_dir)
    assert "{% generation %}" not in tok.chat_template  # saved with the template it was trained with
    ids, mask = tokenize_chat(PROBE, tok, "<|im_end|>", "probe")
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == PROBE[1]["content"] + "<|im_end|>"
    assert tok.decode([i for i, m in zip(ids, mask) if not m]).endswith("<|im_start|>assistant\n")


def test_config_hash_of_runs_made_before_the_new_train_fields_is_kept(tmp_path):
    """A run trained before train.end_of_turn_token, pad_token, chat_template, positions and
    launch existed recorded 574902b108ff for this recipe and data (computed with that code):
    with those fields at their defaults the hash is the same, so it is not trained again."""
    cfg = _recipe()
    run = _run_dir(tmp_path / "run", 4, 4)
    run_train(_recipe(max_steps=1), run)       # then marked as the older code marked _recipe()'s run
    stage = RunDir(run).stage("train")
    stage.complete(**{**stage.manifest(), "config_hash": "574902b108ff"})
    stamp = (run / "train" / "model" / "model.safetensors").stat().st_mtime_ns
    assert run_train(cfg, run) == run / "train" / "model"
    assert stage.manifest()["config_hash"] == "574902b108ff"
    assert (run / "train" / "model" / "model.safetensors").stat().st_mtime_ns == stamp
    from distill.train.stage import train_hash
    assert train_hash(cfg) == "59fc018ecaea"   # section_hash("train") of the old TrainConfig
    assert train_hash(_recipe(end_of_turn_token="<|im_end|>")) != train_hash(cfg)
    assert train_hash(_recipe(launch={"accelerate_config": "configs/accelerate/cpu-ddp.yaml"})) != train_hash(cfg)


def test_streamed_dataset_hash_is_the_hash_of_the_records(tmp_path):
    from distill.train.data import dataset_hash, source_dataset
    from distill.train.stage import records_hash
    run = _run_dir(tmp_path / "run", 6, 5)
    stage = RunDir(run).stage("dataset")
    data, cache = source_dataset(stage, tmp_path / "cache")
    assert len(data) == 11
    assert dataset_hash(data, cache) == records_hash(list(stage.read()))
    assert (cache / "data_hash.json").exists()  # computed once per content


def test_tokenization_is_cached_and_reused_by_a_rerun(tmp_path, monkeypatch):
    """Records rendered through the chat template: once for a data set and tokenizer, not on
    every run (the checks' probe conversation is rendered every time, and not counted)."""
    from transformers import PreTrainedTokenizerBase
    rendered = []
    real = PreTrainedTokenizerBase.apply_chat_template

    def count(self, conversation, *a, **k):
        if "17+25" not in str(conversation):  # the probe: "What is 17+25?"
            rendered.append(1)
        return real(self, conversation, *a, **k)
    monkeypatch.setattr(PreTrainedTokenizerBase, "apply_chat_template", count)
    run = _run_dir(tmp_path / "run", 6, 4)
    run_train(_recipe(max_steps=1), run)
    first = len(rendered)
    assert first >= 10
    run_train(_recipe(max_steps=1, learning_rate=1e-4), run)  # retrained, same data and tokenizer
    assert len(rendered) == first
    cache = next((run / "train" / "cache").glob("source-*"))
    assert list(cache.glob("tokens-sft-*.arrow"))
    run_train(_recipe(max_steps=1, max_length=200), run)      # another max_length: tokenized again
    assert len(rendered) == 2 * first


@pytest.mark.parametrize("method", ["sft", "logit_kd", "on_policy", "gold"])
def test_each_method_loads_the_student_after_its_trainer_arguments(tmp_path, monkeypatch, method):
    """DeepSpeed ZeRO-3 builds the model sharded only when TrainingArguments exist before it
    loads (they create the HfDeepSpeedConfig transformers checks); test_train_launch.py checks
    the sharding itself where deepspeed is installed."""
    from transformers import TrainingArguments

    import distill.train.common as common
    order = []
    post_init = TrainingArguments.__post_init__

    def args_made(self, *a, **k):
        order.append("arguments")
        return post_init(self, *a, **k)

    class Loaded(Exception):
        pass

    def load(*a, **k):
        order.append("model")
        raise Loaded

    monkeypatch.setattr(TrainingArguments, "__post_init__", args_made)
    monkeypatch.setattr(common, "load_student", load)
    run = _run_dir(tmp_path / "run", 4, 4)
    if method == "logit_kd":  # stored teacher logprobs: the traces' own tokens
        _add_logprobs(run)
    from distill.toy import resolve_model
    cfg = _recipe(method=method, kd={"teacher_tokenizer": resolve_model("toy:student")},
                  on_policy={"teacher_model": resolve_model("toy:student")},
                  gold={"teacher_model": resolve_model("toy:student")})
    with pytest.raises(Loaded):
        run_train(cfg, run)
    assert order[:2] == ["arguments", "model"], order


def _add_logprobs(run: Path) -> None:
    """Rewrites the dataset stage with each trace's own tokens as top-1 teacher logprobs."""
    from distill.toy.tokenizer import build_tokenizer
    tok = build_tokenizer()
    stage = RunDir(run).stage("dataset")
    records = list(stage.read())
    for shard in stage.shards():
        shard.unlink()
    with stage.writer() as w:
        for rec in records:
            ids = tok(rec["messages"][-1]["content"], add_special_tokens=False).input_ids + [tok.eos_token_id]
            w.write({**rec, "teacher_logprobs": {"tokens": ids, "top_ids": [[i] for i in ids],
                                                 "top_logprobs": [[-0.1] for _ in ids]}})
    stage.complete()


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
    from distill.toy.arch import build_student
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
    resumed = [ln for ln in again.stderr.splitlines() if " train: resuming from " in ln]
    assert resumed and resumed[0].rsplit("-", 1)[1] in {"5", "10"}, again.stderr[-2000:]
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
