"""Training the student: TRL SFT (full or LoRA) on the kept traces of a run."""

from distill.train.sft import run_train

__all__ = ["run_train"]
