"""Training the student on the kept traces: SFT, logit distillation or on-policy distillation,
full weights or LoRA / QLoRA (stage.py dispatches; one module per method).

May import: the contract (config, records, models, chat, positions), serving, toy. Not another
stage."""

from distill.train.stage import run_train

__all__ = ["run_train"]
