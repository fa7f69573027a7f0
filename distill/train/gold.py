"""Cross-tokenizer logit distillation (`train.method: gold`) with TRL's GOLDTrainer.

The teacher (`train.gold.teacher_model`, default `teacher.model`) is loaded beside the student
and runs a forward pass on every batch of kept traces: its per-token distribution is the target.
When its vocabulary differs from the student's (DeepSeek-R1 teaching a Qwen student), GOLD's
Universal Logit Distillation (ULD) aligns the two tokenizations by the bytes each token spans,
merges the probabilities of tokens one side splits, and compares the sorted distributions (an
optimal-transport bound that needs no shared vocabulary); `uld_hybrid` compares tokens both
vocabularies spell alike directly. When the vocabularies are equal, GOLD's generalised JSD over
the full vocabulary runs instead (plain logit distillation, as on_policy's local teacher).

`lmbda` is the share of batches on which the student samples its own completion of the prompt
first (on-policy); 0, the default, trains on the kept traces only, so the run compares with SFT
on the same traces. The teacher reads the prompt as the student's chat template renders it.

The data are the kept records' messages, those longer than train.max_length (student tokens)
dropped as in SFT; GOLD tokenizes them itself, keeping the text for the teacher.
"""

from __future__ import annotations

import json

from distill.errors import InputError


def _messages(batch: dict, tok, max_length: int) -> dict:
    out: dict[str, list] = {"messages": []}
    for m in batch["messages"]:
        messages = json.loads(m)
        if len(tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]) <= max_length:
            out["messages"].append(messages)
    return out


def _dataset(prep, max_length: int):
    from distill.train.data import num_proc
    data = prep.data.map(_messages, batched=True, batch_size=64, remove_columns=prep.data.column_names,
                         fn_kwargs={"tok": prep.tok, "max_length": max_length},
                         num_proc=num_proc(len(prep.data)), desc="train: reading traces")
    if len(data) == 0:
        raise InputError(f"all {len(prep.data)} training records are longer than train.max_length "
                         f"({max_length} tokens); raise it", key="train.max_length")
    return data, len(prep.data) - len(data)


def build_gold(cfg, prep, output_dir):
    """The trainer and what the manifest keeps of it (the teacher, the loss, dropped records)."""
    from transformers import AutoModelForCausalLM
    from trl.experimental.gold import GOLDConfig, GOLDTrainer

    from distill.models import resolve_model
    from distill.train.common import (load_student, load_teacher_tokenizer, peft_config, trainer_kwargs,
                                      vocabulary_problem)

    t, g = cfg.train, cfg.train.gold
    # packing, padding_free and max_completion_length are checked with the recipe (config.py)
    name = g.teacher_model or cfg.teacher.model
    key = "train.gold.teacher_model" if g.teacher_model else "teacher.model"
    teacher_path = resolve_model(name, key=key)
    cross = vocabulary_problem(prep.tok, load_teacher_tokenizer(name, key), t.student, name) is not None
    data, dropped = _dataset(prep, t.max_length)
    kw = trainer_kwargs(t, cfg, output_dir)
    kw.update(
        max_length=t.max_length,
        lmbda=g.lmbda, beta=g.beta, temperature=g.temperature, top_p=1.0, top_k=0,
        # below max_length, as GOLDConfig requires (only samples, lmbda > 0, use it)
        max_completion_length=min(g.max_completion_length or cfg.generate.max_tokens, t.max_length - 1),
        teacher_tokenizer_name_or_path=teacher_path,
        use_uld_loss=cross,
        use_extended_uld=g.extended_uld,
        uld_token_merge_strategy=g.uld_token_merge_strategy,
        uld_use_hybrid_loss=g.uld_hybrid,
        uld_crossentropy_weight=g.crossentropy_weight,
        uld_distillation_weight=g.distillation_weight,
        uld_student_temperature=g.student_temperature,
        uld_teacher_temperature=g.teacher_temperature,
        logging_steps=10,
    )
    args = GOLDConfig(**kw)
    model = load_student(t, prep)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_path, revision=g.teacher_revision, dtype=model.dtype)
    if hasattr(teacher.config, "output_router_logits"):  # MoE: the router loss is not ours
        teacher.config.output_router_logits = False
    trainer = GOLDTrainer(model=model, teacher_model=teacher, args=args, train_dataset=data,
                          processing_class=prep.tok, peft_config=peft_config(t))
    return trainer, {"teacher": name, "loss": "uld" if cross else "jsd", "dropped_too_long": dropped}
