"""The quantize stage: the distilled student as GGUF (llama.cpp) and torchao int8/int4
checkpoints, each checked and measured; distill/quantize/stage.py."""

from distill.quantize.stage import run_quantize

__all__ = ["run_quantize"]
