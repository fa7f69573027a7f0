"""GPU memory of a training configuration, estimated per GPU before anything is launched.

    weights + gradients + optimizer   16 B/param for full fine-tuning with mixed precision
                                      (bf16 weights and grads, fp32 master, Adam m and v),
                                      divided by the GPUs under ZeRO-3 / FSDP; LoRA: the frozen
                                      base at 2 B/param (0.5 with QLoRA's 4-bit) plus 16 B per
                                      adapter parameter
    activations                       with gradient checkpointing, each layer's input is kept
                                      (layers x hidden x 2 B per token) and one layer is
                                      recomputed at a time (about 34 x hidden + 6 x ffn bytes
                                      per token for a Llama/Qwen block); without, every layer
                                      keeps all of its activations (layers x that)
    logits                            tokens x vocab x 10 B (bf16 logits, their fp32 copy for the
                                      loss and its gradient), unless Liger's fused linear
                                      cross-entropy computes the loss in chunks (~0)

`tokens` is what one micro-batch holds per GPU (batch_size x max_length when packing). The
estimate ignores the CUDA context and allocator fragmentation (add 2-4 GB); bench/sft_throughput.py
measures the real peak on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from distill.models import meta_model

GIB = 2**30


@dataclass(frozen=True)
class Dense:
    """A dense decoder's shape (config.json fields)."""
    params: float
    layers: int
    hidden: int
    ffn: int
    vocab: int


def lora_params(m: Dense, r: int) -> float:
    """LoRA on all linear layers of each block: q, k, v, o (~4 d x d, less with GQA: an upper
    bound) and gate, up, down (3 x d x ffn), r x (in + out) each."""
    return m.layers * r * (4 * 2 * m.hidden + 3 * (m.hidden + m.ffn))


def training_gib(m: Dense, *, tokens: int, gpus: int = 1, sharded: bool = False,
                 adapter: str = "none", lora_r: int = 16, checkpointing: bool = True,
                 liger: bool = False) -> dict[str, float]:
    if adapter == "none":
        states = 16 * m.params / (gpus if sharded else 1)
    else:
        base = (0.5 if adapter == "qlora" else 2.0) * m.params
        states = base / (gpus if sharded else 1) + 16 * lora_params(m, lora_r)
    block = 34 * m.hidden + 6 * m.ffn                       # bytes per token for one block
    if checkpointing:
        acts = tokens * (m.layers * m.hidden * 2 + block)
    else:
        acts = tokens * m.layers * block
    logits = 0.0 if liger else tokens * m.vocab * 10.0
    parts = {"weights_grads_optimizer": states / GIB, "activations": acts / GIB, "logits": logits / GIB}
    parts["total"] = sum(parts.values())
    return {k: round(v, 1) for k, v in parts.items()}


# Students of the shipped recipes (config.json of each; parameter counts as published).
QWEN25_15B = Dense(1.54e9, 28, 1536, 8960, 151936)
QWEN25_7B = Dense(7.62e9, 28, 3584, 18944, 152064)
QWEN25_14B = Dense(14.77e9, 48, 5120, 13824, 152064)
QWEN3_8B = Dense(8.19e9, 36, 4096, 12288, 151936)


def dense_from_config(config) -> Dense:
    """The shape of any causal LM from its config; parameters counted exactly on the meta
    device (no memory, no download beyond config.json)."""
    model = meta_model(config)
    text = config.get_text_config()
    ffn = getattr(text, "intermediate_size", None) or 4 * text.hidden_size
    return Dense(sum(p.numel() for p in model.parameters()), text.num_hidden_layers,
                 text.hidden_size, ffn, text.vocab_size)


def preflight(t, config, capacity_gib: float, gpus: int = 1, sharded: bool = False) -> tuple[dict, str | None]:
    """The estimate for the train section `t` on GPUs of `capacity_gib`, and what to change when
    it does not fit (None when it does)."""
    m = dense_from_config(config)
    est = training_gib(m, tokens=t.batch_size * t.max_length, gpus=gpus, sharded=sharded,
                       adapter=t.adapter, lora_r=t.lora.r, checkpointing=t.gradient_checkpointing,
                       liger=t.liger)
    if est["total"] <= 0.95 * capacity_gib:
        return est, None
    fixes = []
    if not t.liger and est["logits"] > 1:
        fixes.append(f"train.liger: true (the logits take {est['logits']} GiB)")
    if not t.gradient_checkpointing:
        fixes.append("train.gradient_checkpointing: true")
    if t.batch_size > 1:
        fixes.append(f"train.batch_size: 1 with train.grad_accum x{t.batch_size}")
    if t.adapter == "none" and not sharded:
        fixes.append("ZeRO-3 or FSDP over several GPUs (configs/accelerate/), or train.adapter: lora")
    elif t.adapter == "lora":
        fixes.append("train.adapter: qlora")
    parts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in est.items() if k != "total")
    return est, (f"the student needs ~{est['total']} GiB per GPU ({parts}; {m.params / 1e9:.2f}B "
                 f"parameters, {t.batch_size} x {t.max_length} tokens per micro-batch) but the GPU has "
                 f"{capacity_gib:.0f} GiB; try " + "; ".join(fixes or ["a GPU with more memory"]))
