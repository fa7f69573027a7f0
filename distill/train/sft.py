"""SFT of the student on the kept traces: reads stage `dataset`, writes `train/model` (+ `train/adapter`).

`run_train(cfg, run_dir)` reads the chat records of the dataset stage (user prompt, assistant
"<think>R</think>A"), trains `cfg.train.student` with TRL's SFTTrainer on the assistant tokens
only, full fine-tuning (`method: sft`) or LoRA (`method: lora`, the adapter is kept in
`train/adapter` and merged into the base for serving), and saves model + tokenizer to
`train/model` with the resolved `recipe.yaml` and `lineage.json` beside it. The `_SUCCESS`
marker comes last and carries a hash of the train config, the seed and the data: a re-run with
the same hash returns at once; trainer checkpoints live under `train/checkpoints/<hash>/`, so an
interrupted run resumes from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from distill.config import Recipe, dump_recipe
from distill.errors import InputError
from distill.records import RunDir, write_json, write_text


def _dataset_hash(records: list[dict]) -> str:
    h = hashlib.sha256()
    for rec in sorted(records, key=lambda r: r["id"]):
        h.update(json.dumps([rec["id"], rec["messages"]], sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def _check_tokenizer(tok, student: str) -> None:
    """Two silent failures caught early: a pad token equal to EOS is masked out of the loss
    (the student never learns to stop), and a chat template without `{% generation %}` gives
    TRL no assistant mask (it trains on nothing, or on the prompt)."""
    if tok.pad_token_id is None or tok.pad_token_id == tok.eos_token_id:
        raise InputError(
            f"the tokenizer of {student!r} has pad token {tok.pad_token!r} equal to its EOS token "
            f"{tok.eos_token!r} (or none): padding would be masked together with EOS and the student "
            "would never learn to stop; give it a distinct pad token", key="train.student")
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers
    if not tok.chat_template:
        raise InputError(f"the tokenizer of {student!r} has no chat template", key="train.student")
    if not has_generation_markers(tok.chat_template):
        try:  # TRL knows training templates for common families (Qwen, Llama, ...)
            get_training_chat_template(tok)
        except Exception:
            raise InputError(
                f"the chat template of {student!r} has no {{% generation %}} markers, which assistant-only "
                "loss needs to find the assistant tokens; add them around the assistant turn",
                key="train.student") from None


def run_train(cfg: Recipe, run_dir: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.toy import resolve_model

    rd = RunDir(run_dir)
    stage, out = rd.stage("train"), rd.stage("train").path
    model_dir = out / "model"
    source = rd.stage("dataset")
    if not source.is_complete():
        raise InputError("the dataset stage is not complete; run the filter stage first",
                         file=str(source.path))
    records = list(source.read())
    if not records:
        raise InputError("the dataset stage holds no training records", file=str(source.path))
    t = cfg.train
    data_hash = _dataset_hash(records)
    config_hash = hashlib.sha256(json.dumps(
        [cfg.section_hash("train"), cfg.run.seed, data_hash]).encode()).hexdigest()[:12]
    done = stage.manifest()
    if done and done.get("config_hash") == config_hash and (model_dir / "config.json").exists():
        print(f"train: complete for config {config_hash}, nothing to do ({model_dir})")
        return model_dir
    stage.start()

    student = resolve_model(t.student)
    tok = AutoTokenizer.from_pretrained(student, revision=t.revision)
    _check_tokenizer(tok, t.student)
    dtype = torch.bfloat16 if t.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(student, revision=t.revision, dtype=dtype)

    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    dataset = Dataset.from_list([{"messages": r["messages"]} for r in records])
    ckpt_dir = out / "checkpoints" / config_hash
    args = SFTConfig(
        output_dir=str(ckpt_dir),
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        # transformers 5 takes the warmup ratio as a float < 1 in warmup_steps
        warmup_steps=min(t.warmup_ratio, 0.999) if t.warmup_ratio else 0,
        weight_decay=t.weight_decay,
        bf16=t.bf16,
        activation_checkpointing=t.gradient_checkpointing,  # TRL defaults it on; off is faster for small models
        packing=t.packing,
        max_length=t.max_length,
        assistant_only_loss=True,
        seed=cfg.run.seed,
        data_seed=cfg.run.seed,
        logging_steps=50,
        dataloader_pin_memory=torch.cuda.is_available(),
        save_strategy="steps",
        save_steps=500,
        save_total_limit=2,
        report_to="none",
        dataset_num_proc=None,
    )
    peft_config = None
    if t.method == "lora":
        from peft import LoraConfig
        peft_config = LoraConfig(r=t.lora.r, lora_alpha=t.lora.alpha, lora_dropout=t.lora.dropout,
                                 target_modules=t.lora.target_modules, task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                         peft_config=peft_config)
    from transformers.trainer_utils import get_last_checkpoint
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    result = trainer.train(resume_from_checkpoint=last)

    trained = trainer.model
    if t.method == "lora":
        trained.save_pretrained(out / "adapter")
        tok.save_pretrained(out / "adapter")
        trained = trained.merge_and_unload()
    trained.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    write_text(out / "recipe.yaml", dump_recipe(cfg))
    lineage = {"student": t.student, "student_path": student, "method": t.method,
               "dataset_records": len(records), "dataset_hash": data_hash,
               "config_hash": config_hash, "seed": cfg.run.seed}
    write_json(out / "lineage.json", lineage)
    stage.complete(records=len(records), config_hash=config_hash, model=str(model_dir),
                   method=t.method, train_loss=result.training_loss,
                   train_seconds=result.metrics.get("train_runtime"))
    return model_dir
