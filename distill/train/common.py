"""What every training method shares: the prepared student (tokenizer, stop tokens, positions,
data), loading it, PEFT, trainer arguments, and the vocabulary check of logit and on-policy
distillation (different vocabularies cannot be compared token for token).

The tokenizer and template checks are in chat.py, the positions in positions.py, the data in
data.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill import logs
from distill.errors import InputError
from distill.models import is_toy

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """The student as train uses it, settled before any weights load."""
    path: str                  # a local directory or Hub id (toy: names resolved)
    tok: Any                   # its tokenizer, with the recipe's template, pad and end-of-turn tokens
    end_of_turn: str           # the token that ends an assistant turn (the tokenizer's EOS now)
    stop_ids: list[int]        # [end-of-turn id, original EOS id]: what the saved model stops on
    positions: dict            # positions.positions(): model, trained, rope_scaling
    data: Any                  # the kept records, a memory-mapped datasets.Dataset
    cache: Path                # train/cache/source-<content>: tokenized examples beside the data


def vocabulary_problem(student_tok, teacher_tok, student: str, teacher: str) -> str | None:
    """None when logits can be distilled token for token, else why not."""
    s, t = student_tok.get_vocab(), teacher_tok.get_vocab()
    if s == t:
        return None
    if len(s) != len(t):
        why = f"{teacher!r} has a {len(t):,}-token vocabulary, {student!r} {len(s):,}"
    else:
        differ = sum(1 for k, v in t.items() if s.get(k) != v)
        why = f"{teacher!r} and {student!r} both have {len(s):,} tokens but {differ:,} map to different ids"
    return (f"{why}: per-token logits cannot be compared across different tokenizers. Use "
            "method: gold (TRL's GOLD trainer: the teacher loaded beside the student, its logits "
            "aligned to the student's tokens by bytes), or method: sft (the traces as text work with "
            "any tokenizer; kd.on_mismatch: sft does it)")


def load_teacher_tokenizer(name: str, key: str):
    from transformers import AutoTokenizer

    if is_toy(name):  # the toy tokenizers are built in code; no need to train a teacher
        if name == "toy:teacher-bpe":
            from distill.toy.bpe import build_bpe_tokenizer
            return build_bpe_tokenizer()
        from distill.toy.tokenizer import build_tokenizer
        return build_tokenizer()
    try:
        return AutoTokenizer.from_pretrained(name)
    except Exception as e:
        raise InputError(f"cannot load the teacher's tokenizer {name!r} to check it against the "
                         f"student's ({type(e).__name__}: {str(e)[:200]}); name a loadable one",
                         key=key) from None


def student_config(t, path: str):
    from transformers import AutoConfig
    return AutoConfig.from_pretrained(path, revision=t.revision)


def apply_tokens(model, prep: Prepared) -> None:
    """The model stops on the end-of-turn token and the original EOS, as Qwen2.5-Instruct ships
    them (config and generation config), and pads with the tokenizer's pad token."""
    stop = prep.stop_ids if len(prep.stop_ids) > 1 else prep.stop_ids[0]
    for cfg in (model.config.get_text_config(), model.generation_config):
        cfg.eos_token_id = stop
        cfg.pad_token_id = prep.tok.pad_token_id


def load_student(t, prep: Prepared):
    """The student model, with the recipe's positions, stop tokens, dtype, attention, and 4-bit
    base for QLoRA. Called after the trainer arguments exist (see the builders)."""
    import torch
    from transformers import AutoModelForCausalLM

    from distill.positions import apply_positions
    config = student_config(t, prep.path)
    apply_positions(config, prep.positions)
    kwargs: dict = dict(revision=t.revision, config=config, dtype=torch.bfloat16 if t.bf16 else torch.float32)
    if t.attn_implementation:
        kwargs["attn_implementation"] = t.attn_implementation
    if t.adapter == "qlora":
        if not torch.cuda.is_available():
            raise InputError("adapter: qlora loads the base in 4 bits with bitsandbytes, which needs a "
                             "CUDA GPU; this machine has none (use adapter: lora)", key="train.adapter")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise InputError("adapter: qlora needs bitsandbytes: pip install -e .[gpu]",
                             key="train.adapter") from None
        from transformers import BitsAndBytesConfig
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
        kwargs["dtype"] = torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(prep.path, **kwargs)
    apply_tokens(model, prep)
    # Training never decodes incrementally; a KV cache would also stop transformers from
    # building the block-diagonal mask that keeps padding-free / packed documents apart.
    model.config.use_cache = False
    if t.adapter == "qlora":
        from peft import prepare_model_for_kbit_training
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=t.gradient_checkpointing)
    return model


def peft_config(t):
    if t.adapter == "none":
        return None
    from peft import LoraConfig
    return LoraConfig(r=t.lora.r, lora_alpha=t.lora.alpha, lora_dropout=t.lora.dropout,
                      target_modules=t.lora.target_modules, task_type="CAUSAL_LM")


def check_liger(t) -> None:
    if not t.liger:
        return
    try:
        import liger_kernel  # noqa: F401
    except ImportError:
        raise InputError("train.liger needs liger-kernel (Triton kernels, GPU): pip install -e .[gpu]",
                         key="train.liger") from None


def log_steps(trainer) -> None:
    """Without a bar (trainer_kwargs' disable_tqdm) the trainer prints a dict every
    logging_steps; those lines go through the log instead: `train: step 50/1200 loss 0.8123
    grad_norm 1.02 learning_rate 0.009 epoch 0.33`."""
    from transformers.trainer_callback import PrinterCallback, TrainerCallback

    class LogSteps(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_local_process_zero and logs:
                stats = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                 for k, v in logs.items() if k != "total_flos")
                log.info("train: step %d/%d %s", state.global_step, state.max_steps, stats)

    if trainer.pop_callback(PrinterCallback) is not None:
        trainer.add_callback(LogSteps())


def trainer_kwargs(t, cfg, output_dir) -> dict:
    """TrainingArguments fields every method sets the same way."""
    import os

    import torch

    from distill.tracking import trainer_settings
    kw = dict(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        # transformers 5 takes the warmup ratio as a float < 1 in warmup_steps
        warmup_steps=min(t.warmup_ratio, 0.999) if t.warmup_ratio else 0,
        weight_decay=t.weight_decay,
        bf16=t.bf16,
        # TRL's configs default gradient checkpointing on; off is faster where memory allows.
        # (transformers 5 name; the old `gradient_checkpointing` is its deprecated alias)
        activation_checkpointing=t.gradient_checkpointing,
        use_liger_kernel=t.liger,
        seed=cfg.run.seed,
        data_seed=cfg.run.seed,
        dataloader_pin_memory=torch.cuda.is_available(),
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=2,
        # report_to, run_name, logging_steps: the recipe's trackers (distill/tracking.py)
        **trainer_settings(cfg),
        # A bar redrawn in place where stderr is a terminal; elsewhere (a log file, a Prefect
        # worker, a launched rank) none, and the logging_steps lines as log lines (log_steps).
        disable_tqdm=not logs.terminal(),
        # Every parameter of a dense student (or a LoRA adapter) is used in each forward pass;
        # DDP's search for unused ones costs a graph traversal per step.
        ddp_find_unused_parameters=False,
    )
    if t.gradient_checkpointing:
        kw["activation_checkpointing_kwargs"] = {"use_reentrant": False}
    if (int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
            and os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true"):
        # A rank that torchrun started on a machine without GPUs (configs/accelerate/cpu-ddp.yaml):
        # use_cpu makes accelerate join the ranks over gloo (its MULTI_CPU state); without it each
        # rank would train alone as a world of one. (DeepSpeed brings its own CPU accelerator and
        # process group; use_cpu would turn its engine off.)
        kw["use_cpu"] = True
    return kw
