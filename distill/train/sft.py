"""Supervised fine-tuning on the kept traces with TRL's SFTTrainer.

Assistant-only loss (the `{% generation %}` mask: the reasoning, the answer and EOS), full
weights or a LoRA/QLoRA adapter, and three batching modes: padded (default), padding-free
(`padding_free: true`: each batch is one row of concatenated documents with position ids
restarting per document, so no compute is spent on padding) and BFD packing (`packing: true`:
rows of `max_length` filled best-fit-decreasing, padding-free too). Documents in one row never
attend to each other: transformers turns restarting position ids into a block-diagonal mask
(flash-attention kernels use them as sequence boundaries).
"""

from __future__ import annotations


def build_sft(cfg, model, tok, records: list[dict], output_dir):
    """The trainer and what tokenization dropped (kept in the train manifest)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from distill.train.common import peft_config, tokenize_chats, trainer_kwargs

    t = cfg.train
    # Tokenized here, once, with the assistant mask: TRL turns `assistant_masks` into labels
    # (assistant-only loss) and skips its own tokenization.
    examples, dropped = tokenize_chats(records, tok, t.max_length)
    dataset = Dataset.from_list([{k: e[k] for k in ("input_ids", "assistant_masks")} for e in examples])
    args = SFTConfig(
        **trainer_kwargs(t, cfg, output_dir),
        packing=t.packing,
        padding_free=t.padding_free,
        # rows of max_length when packing; otherwise nothing is longer (dropped above)
        max_length=t.max_length if t.packing else None,
        assistant_only_loss=False,  # the mask is already in the data
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                         peft_config=peft_config(t))
    return trainer, {"dropped_too_long": dropped}
