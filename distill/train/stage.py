"""The train stage: reads stage `dataset`, writes `train/model` (+ `train/adapter`).

`run_train(cfg, run_dir)` trains `cfg.train.student` by `train.method`:

- `sft`: TRL SFTTrainer on the assistant tokens of the kept traces (sft.py);
- `logit_kd`: CE plus forward KL to the teacher's stored top-k logprobs (kd.py);
- `on_policy`: TRL DistillationTrainer, the teacher scoring the student's own samples (onpolicy.py);
- `gold`: TRL GOLDTrainer, the teacher's logits on the kept traces across tokenizers (gold.py);

with full weights or a LoRA / QLoRA adapter (`train.adapter`; the adapter is kept in
`train/adapter` and merged into the base for serving). Model and tokenizer go to `train/model`
with the resolved `recipe.yaml` and `lineage.json` beside them. The `_SUCCESS` marker comes
last and carries a hash of the train config, the seed and the data: a re-run with the same hash
returns at once; checkpoints live under `train/checkpoints/<hash>/`, so a killed run resumes
from its last checkpoint.

Before any weights load: the data is read into Arrow (data.py), the student's tokenizer, template
and stop tokens are set and checked (chat.py), its positions against train.max_length
(positions.py). With `train.launch.accelerate_config` the training itself runs under
`accelerate launch` (launch.py); each method builds its trainer arguments before the model
(sft.py, kd.py, onpolicy.py), so DeepSpeed ZeRO-3 builds the model sharded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from pathlib import Path

from distill.config import Recipe, dump_recipe
from distill.errors import InputError
from distill.records import RunDir, write_json, write_text

log = logging.getLogger(__name__)


def records_hash(records: list[dict]) -> str:
    """The data's hash over a list of records (refresh.py compares it with the trained one);
    data.dataset_hash streams the same value from the Arrow copy."""
    h = hashlib.sha256()
    for rec in sorted(records, key=lambda r: r["id"]):
        h.update(json.dumps([rec["id"], rec["messages"]], sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()[:16]


# Train fields added after runs were made: in the hash only when set, so a finished run of a
# recipe that leaves them at their defaults keeps its hash and is not trained again.
ADDED_FIELDS = ("end_of_turn_token", "pad_token", "chat_template", "max_position_embeddings",
                "rope_scaling", "launch", "gold", "data_fraction", "max_examples")


# Where training is tracked, not what it trains: a change never retrains.
UNHASHED_FIELDS = ("report_to", "logging_steps")


def train_hash(cfg: Recipe) -> str:
    """cfg.section_hash("train") without the added fields that hold their defaults; a chat
    template file counts by its text, not its name."""
    from distill.config import TrainConfig
    from distill.chat import read_template
    t = cfg.train
    data = t.model_dump(mode="json")
    for name in UNHASHED_FIELDS:
        del data[name]
    for name in ADDED_FIELDS:
        if getattr(t, name) == TrainConfig.model_fields[name].get_default(call_default_factory=True):
            del data[name]
    if t.chat_template:
        data["chat_template"] = hashlib.sha256(read_template(t.chat_template).encode()).hexdigest()
    return hashlib.sha256(json.dumps({"train": data}, sort_keys=True).encode()).hexdigest()[:12]


def _method(cfg: Recipe, tok) -> str:
    """The method to run. Logit and on-policy distillation compare logits token for token: the
    teacher's vocabulary must be the student's; if not, the recipe says what to do instead
    (`kd.on_mismatch`: stop with the reason naming `method: gold` and SFT, or train SFT).
    `gold` itself compares logits across tokenizers and never comes here."""
    from distill.train.common import load_teacher_tokenizer, vocabulary_problem
    t = cfg.train
    if t.method == "logit_kd":
        teacher, key = t.kd.teacher_tokenizer or cfg.teacher.model, "train.kd.teacher_tokenizer"
    else:
        teacher, key = t.on_policy.teacher_model or cfg.teacher.model, "train.on_policy.teacher_model"
    problem = vocabulary_problem(tok, load_teacher_tokenizer(teacher, key), t.student, teacher)
    if problem is None:
        return t.method
    if t.method == "logit_kd" and t.kd.on_mismatch == "sft":
        log.warning("train: %s; training SFT instead (train.kd.on_mismatch: sft)", problem)
        return "sft"
    raise InputError(problem, key="train.method")


def last_complete_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest checkpoint whose trainer_state.json (written last by the Trainer) parses. A
    process killed while saving leaves a checkpoint directory without it, which
    `get_last_checkpoint` would pick and fail to resume from."""
    if not ckpt_dir.is_dir():
        return None
    found = [(int(p.name.split("-")[1]), p) for p in ckpt_dir.glob("checkpoint-*")
             if p.is_dir() and p.name.split("-")[1].isdigit()]
    for _, path in sorted(found, reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text())
            return str(path)
        except (OSError, ValueError):
            continue
    return None


def _check_gpu_memory(t, student: str) -> None:
    """On a GPU, refuse a configuration whose estimated memory exceeds the device before the
    model is even loaded (an out-of-memory error hours into a run, at the first long batch, is
    what users of SFT scripts meet instead)."""
    import os

    import torch
    if not torch.cuda.is_available():
        return
    from transformers import AutoConfig

    from distill.train.memory import preflight
    gpus = int(os.environ.get("WORLD_SIZE", "1"))
    sharded = "true" in (os.environ.get("ACCELERATE_USE_DEEPSPEED", ""), os.environ.get("ACCELERATE_USE_FSDP", ""))
    capacity = torch.cuda.get_device_properties(0).total_memory / 2**30
    est, problem = preflight(t, AutoConfig.from_pretrained(student, revision=t.revision), capacity, gpus, sharded)
    log.info("train: estimated %s GiB per GPU of %.0f GiB (%s)", est["total"], capacity, est)
    if problem:
        raise InputError(problem, key="train")


def _merge_adapter(t, prep, adapter_dir: Path, model_dir: Path) -> None:
    """The adapter merged into a fresh full-precision copy of the base (never into a 4-bit or
    sharded one), with the trained positions and stop tokens, so `train/model` serves like any
    model."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from distill.train.common import apply_tokens, student_config
    from distill.positions import apply_positions
    config = student_config(t, prep.path)
    apply_positions(config, prep.positions)
    base = AutoModelForCausalLM.from_pretrained(
        prep.path, revision=t.revision, config=config,
        dtype=torch.bfloat16 if t.bf16 or t.adapter == "qlora" else torch.float32)
    apply_tokens(base, prep)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.config.use_cache = True
    merged.save_pretrained(model_dir)


@contextlib.contextmanager
def _trainer(cfg: Recipe, method: str, prep, ckpt_dir, extra: dict):
    if method == "sft":
        from distill.train.sft import build_sft
        trainer, counts = build_sft(cfg, prep, ckpt_dir)
        extra["sft"] = counts
        yield trainer
    elif method == "logit_kd":
        from distill.train.kd import build_kd
        trainer, counts = build_kd(cfg, prep, ckpt_dir)
        extra["kd"] = counts
        yield trainer
    elif method == "gold":
        from distill.train.gold import build_gold
        trainer, counts = build_gold(cfg, prep, ckpt_dir)
        extra["gold"] = counts
        yield trainer
    else:
        from distill.train.onpolicy import build_on_policy
        with build_on_policy(cfg, prep, ckpt_dir) as trainer:
            yield trainer


def _ranks(trainer) -> list[dict]:
    """Every rank's optimizer steps, gathered (all ranks take part: proof they trained together)."""
    from accelerate.utils import gather_object
    state = trainer.state
    return gather_object([{"rank": trainer.args.process_index, "steps": state.global_step}])


def run_train(cfg: Recipe, run_dir: Path) -> Path:
    rd = RunDir(run_dir)
    source = rd.require("dataset", complete=True)
    from distill.models import resolve_model
    from distill.train.common import Prepared, check_liger, log_steps, student_config
    from distill.chat import prepare_tokenizer
    from distill.train.data import dataset_hash, source_dataset, subset
    from distill.train.launch import launch_command, run_launched, under_launcher
    from distill.positions import positions
    from distill import tracking

    stage = rd.train
    out = stage.path
    model_dir = out / "model"
    data, cache = source_dataset(source, out / "cache")
    if len(data) == 0:
        raise InputError("the dataset stage holds no training records", file=str(source.path))
    t = cfg.train
    data_hash = dataset_hash(data, cache)
    data = subset(data, t.data_fraction, t.max_examples, cfg.run.seed, data_hash)
    config_hash = hashlib.sha256(json.dumps([train_hash(cfg), cfg.run.seed, data_hash]).encode()).hexdigest()[:12]
    done = stage.manifest()
    if done and done.get("config_hash") == config_hash and (model_dir / "config.json").exists():
        log.info("train: complete for config %s, nothing to do (%s)", config_hash, model_dir)
        return model_dir

    # Everything a recipe can get wrong is checked here, before a launch or any weights.
    student = resolve_model(t.student, key="train.student")
    tok, stop_ids = prepare_tokenizer(t, student)
    config = student_config(t, student)
    pos = positions(t, getattr(config.get_text_config(), "max_position_embeddings", None), t.student)
    check_liger(t)
    tracking.check_trackers(cfg)
    # gold compares logits across tokenizers; which loss it runs is settled in gold.py
    method = t.method if t.method in ("sft", "gold") else _method(cfg, tok)
    if t.launch.accelerate_config and not under_launcher():
        stage.start()
        # The ranks read the resolved recipe (what pipeline.run_stage saves) and find this
        # data, hash and cache again.
        cmd = launch_command(t.launch, rd.save_recipe(cfg), Path(run_dir))
        run_launched(cmd, out / "logs" / "launch.log")
        if not stage.is_complete():
            raise RuntimeError(f"the training launch exited cleanly but left no {stage.path}/_SUCCESS; "
                               f"see {out / 'logs' / 'launch.log'}")
        return model_dir
    stage.start()
    _check_gpu_memory(t, student)
    prep = Prepared(path=student, tok=tok, end_of_turn=tok.eos_token, stop_ids=stop_ids, positions=pos,
                    data=data, cache=cache)

    ckpt_dir = out / "checkpoints" / config_hash
    weights_dir = out / "adapter" if t.adapter != "none" else model_dir
    extra: dict = {}
    with _trainer(cfg, method, prep, ckpt_dir, extra) as trainer:
        log_steps(trainer)
        tracking.attach(trainer, cfg, Path(run_dir))
        last = last_complete_checkpoint(ckpt_dir)
        if last:
            log.info("train: resuming from %s", last)
        result = trainer.train(resume_from_checkpoint=last)
        if trainer.is_world_process_zero():
            tracking.save_log_history(trainer.state.log_history, Path(run_dir))
        ranks = _ranks(trainer)
        trainer.accelerator.unwrap_model(trainer.model).config.use_cache = True  # serving decodes
        # save_model gathers ZeRO-3 / FSDP shards; with several processes only rank 0 writes.
        trainer.save_model(str(weights_dir))
        if not trainer.is_world_process_zero():
            _leave_process_group()
            return model_dir
    # The tokenizer as trained: its template, the end-of-turn token as EOS, the pad token.
    tok.save_pretrained(weights_dir)
    if t.adapter != "none":
        _merge_adapter(t, prep, weights_dir, model_dir)
        tok.save_pretrained(model_dir)
    log.info("train: model saved to %s", model_dir)
    write_text(out / "recipe.yaml", dump_recipe(cfg))
    trained = {"positions": pos, "end_of_turn_token": tok.eos_token, "stop_token_ids": stop_ids,
               "world_size": len(ranks), "ranks": ranks}
    lineage = {"student": t.student, "student_path": student, "method": method,
               "adapter": t.adapter, "teacher": cfg.teacher.model, "dataset_records": len(data),
               "data_fraction": t.data_fraction, "max_examples": t.max_examples,
               "dataset_hash": data_hash, "config_hash": config_hash, "seed": cfg.run.seed,
               **trained, **extra}
    write_json(out / "lineage.json", lineage)
    stage.complete(records=len(data), config_hash=config_hash, model=str(model_dir),
                   method=method, adapter=t.adapter, train_loss=result.training_loss,
                   train_seconds=result.metrics.get("train_runtime"),
                   train_tokens_per_s=result.metrics.get("train_tokens_per_second"), **trained, **extra)
    _leave_process_group()
    return model_dir


def _leave_process_group() -> None:
    """A launched rank ends its process group before it exits, as accelerate's end_training and
    torch's documentation ask. A rank that exits with it alive can die of SIGABRT as the
    interpreter tears down: gloo's worker threads still hold work with tensors whose release
    takes the GIL of a finalizing interpreter (pytorch/pytorch#179291): "terminate called
    without an active exception". Two gloo ranks that gather an object and exit aborted in 11 of
    65 launches without this, 0 of 40 with it; a rehearsal failed in CI that way. Each rank
    leaves when its part is done, with no barrier: rank 0 may still be merging an adapter."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        dist.destroy_process_group()
        log.info("train: rank %d left its process group", rank)
