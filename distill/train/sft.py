"""Supervised fine-tuning on the kept traces with TRL's SFTTrainer.

Assistant-only loss (the mask from the student's own template, chat.py: the reasoning, the
answer and the end-of-turn token), full weights or a LoRA/QLoRA adapter, and three batching modes: padded (default), padding-free
(`padding_free: true`: each batch is one row of concatenated documents with position ids
restarting per document, so no compute is spent on padding) and BFD packing (`packing: true`:
rows of `max_length` filled best-fit-decreasing, padding-free too). Documents in one row never
attend to each other: transformers turns restarting position ids into a block-diagonal mask
(flash-attention kernels use them as sequence boundaries).
"""

from __future__ import annotations


def build_sft(cfg, prep, output_dir):
    """The trainer and what tokenization dropped (kept in the train manifest). The arguments
    come first: under DeepSpeed ZeRO-3 they make transformers build the model already sharded."""
    from trl import SFTConfig, SFTTrainer

    from distill.train.common import load_student, peft_config, trainer_kwargs
    from distill.train.data import num_proc, tokenize

    t = cfg.train
    args = SFTConfig(
        **trainer_kwargs(t, cfg, output_dir),
        packing=t.packing,
        padding_free=t.padding_free,
        # rows of max_length when packing; otherwise nothing is longer (dropped in tokenize)
        max_length=t.max_length if t.packing else None,
        assistant_only_loss=False,  # the mask is already in the data
        dataset_num_proc=num_proc(len(prep.data)),
    )
    # Tokenized once, on the main process first (the others read its cache), with the mask of
    # the student's own template: TRL turns `assistant_masks` into labels and skips its own
    # tokenization.
    with args.main_process_first(desc="tokenizing"):
        dataset, dropped = tokenize(prep.data, prep.cache, prep.tok, end_of_turn=prep.end_of_turn,
                                    max_length=t.max_length, method="sft", stop_ids=prep.stop_ids)
    model = load_student(t, prep)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=prep.tok,
                         peft_config=peft_config(t))
    return trainer, {"dropped_too_long": dropped}
