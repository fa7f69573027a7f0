"""Training the student on the kept traces: SFT, logit distillation or on-policy distillation,
full weights or LoRA / QLoRA (stage.py dispatches; one module per method)."""

from distill.train.stage import run_train

__all__ = ["run_train"]
