"""What every training method shares: the student and its checks, PEFT, trainer arguments.

The checks catch, before any step runs, the failures users of SFT scripts meet only after a
day of training: a pad token equal to EOS (EOS is masked out and the student never stops), a
chat template that drops the `<think>` reasoning or leaves EOS outside the assistant mask, and
logit or on-policy distillation across different vocabularies.
"""

from __future__ import annotations

from distill.errors import InputError

PROBE_REASONING, PROBE_ANSWER = "REASONING-PROBE 17+25", "ANSWER-PROBE 42"


def check_tokenizer(tok, student: str) -> None:
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
            tok.chat_template = get_training_chat_template(tok)
        except Exception:
            raise InputError(
                f"the chat template of {student!r} has no {{% generation %}} markers, which assistant-only "
                "loss needs to find the assistant tokens; add them around the assistant turn",
                key="train.student") from None
    check_template_keeps_reasoning(tok, student)


def check_template_keeps_reasoning(tok, student: str) -> None:
    """Renders one probe conversation: the reasoning must survive inside `<think>`, and the
    assistant mask must cover the answer and the EOS token (or the student never stops)."""
    messages = [{"role": "user", "content": "What is 17+25?"},
                {"role": "assistant", "content": f"<think>{PROBE_REASONING}</think>{PROBE_ANSWER}"}]
    text = tok.apply_chat_template(messages, tokenize=False)
    if PROBE_REASONING not in text or "<think>" not in text:
        raise InputError(
            f"the chat template of {student!r} drops the <think> reasoning from assistant turns (as "
            "DeepSeek-R1-Distill's template does with `content.split('</think>')[-1]`): the student "
            "would learn answers without their reasoning; use a template that keeps the assistant "
            "content as it is", key="train.student")
    enc = tok.apply_chat_template(messages, tokenize=True, return_dict=True,
                                  return_assistant_tokens_mask=True)
    masked = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    trained = tok.decode(masked, skip_special_tokens=False)
    if PROBE_ANSWER not in trained or PROBE_REASONING not in trained:
        raise InputError(f"the {{% generation %}} block of {student!r}'s chat template does not cover "
                         "the assistant's reasoning and answer", key="train.student")
    if tok.eos_token_id not in masked:
        raise InputError(
            f"the {{% generation %}} block of {student!r}'s chat template ends before the EOS token "
            f"{tok.eos_token!r}: the student would never be taught to stop; move "
            "{% endgeneration %} after it", key="train.student")


def tokenize_chats(records: list[dict], tok, max_length: int) -> tuple[list[dict], int]:
    """Each record's chat through the student's template: input_ids and the assistant mask
    (reasoning, answer, EOS). Records longer than max_length are dropped, not truncated: a cut
    trace has no answer and no EOS, and would teach the student to ramble without stopping.
    Returns the examples (with the record's index) and how many were dropped."""
    out, dropped = [], 0
    for i, rec in enumerate(records):
        enc = tok.apply_chat_template(rec["messages"], tokenize=True, return_dict=True,
                                      return_assistant_tokens_mask=True)
        if len(enc["input_ids"]) > max_length:
            dropped += 1
            continue
        out.append({"index": i, "input_ids": list(enc["input_ids"]),
                    "assistant_masks": list(enc["assistant_masks"])})
    if not out:
        raise InputError(f"all {len(records)} training records are longer than train.max_length "
                         f"({max_length} tokens); raise it", key="train.max_length")
    if dropped:
        print(f"train: dropped {dropped} of {len(records)} records longer than {max_length} tokens")
    return out, dropped


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
            "method: sft (the traces as text work with any tokenizer; kd.on_mismatch: sft does it), "
            "or TRL's GOLDTrainer (trl.experimental.gold), which aligns two ByteLevel-BPE tokenizers "
            "with the teacher loaded locally")


def load_teacher_tokenizer(name: str, key: str):
    from transformers import AutoTokenizer

    if name.startswith("toy:"):  # the toy models share one tokenizer; no need to train a teacher
        from distill.toy.tokenizer import build_tokenizer
        return build_tokenizer()
    try:
        return AutoTokenizer.from_pretrained(name)
    except Exception as e:
        raise InputError(f"cannot load the teacher's tokenizer {name!r} to check it against the "
                         f"student's ({type(e).__name__}: {str(e)[:200]}); name a loadable one",
                         key=key) from None


def load_student(t, path: str):
    """The student model, with the recipe's dtype, attention, and 4-bit base for QLoRA."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict = dict(revision=t.revision, dtype=torch.bfloat16 if t.bf16 else torch.float32)
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
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
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


def trainer_kwargs(t, cfg, output_dir) -> dict:
    """TrainingArguments fields every method sets the same way."""
    import torch
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
        logging_steps=50,
        dataloader_pin_memory=torch.cuda.is_available(),
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=2,
        report_to="none",
    )
    if t.gradient_checkpointing:
        kw["activation_checkpointing_kwargs"] = {"use_reentrant": False}
    return kw
