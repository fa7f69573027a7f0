"""The student's weights in the formats it is served in on small machines (llama.cpp's GGUF and
torchao's weight-only int8 / int4), and its KV cache at the recipe's eval context. Reads `Arch` /
`Params`, writes nothing.

    bf16     2 bytes per parameter.
    Q8_0     8.5 bits per weight: blocks of 32 int8 values and one fp16 scale (34 bytes).
    Q4_K_M   4.8944 bits per weight on average: a mix of Q4_K (4.5 bpw) with Q6_K (6.5625 bpw) for
             half of attn_v / ffn_down and the output tensor. Both figures are llama.cpp's
             published averages over every tensor of Llama-3.1-8B (tools/quantize/README.md,
             "bits/weight": Q8_0 8.5008, Q4_K_M 4.8944), embeddings included: GGUF quantizes
             those too, so the average applies to all parameters. On Qwen2.5-7B it gives
             8.09 GB and 4.66 GB; the Hub's Qwen2.5-7B-Instruct-GGUF files weigh 8.1 GB and
             4.68 GB.
    int8     torchao Int8WeightOnlyConfig: the decoder's Linear weights at one byte plus a bf16
             scale per output row (rows taken as hidden-size long); the embedding and lm_head
             stay bf16, as distill/quantize/torchao.py leaves them.
    int4     torchao int4 weight-only, packed two values a byte with a bf16 scale and zero point
             per group of 128 inputs, or the largest of 64 / 32 that divides the hidden size
             (tinygemm's layout, on a GPU). The CPU checkpoint that
             distill/quantize/torchao.py writes keeps one int4 value a byte (torchao's only int4
             layout transformers can save on a CPU), so on a CPU it weighs what int8 does.

torchao quantizes `nn.Linear` only: a MoE student's routed experts (one 3-D parameter per layer in
transformers) stay bf16 in the int8 / int4 rows; GGUF quantizes them with the rest.
"""

from __future__ import annotations

from distill.plan.params import Arch, Params
from distill.plan.serving import kv_bytes

BITS = {"Q8_0": 8.5008, "Q4_K_M": 4.8944}    # llama.cpp's published bits per weight (above)
INT4_GROUPS = (128, 64, 32)                 # as distill/quantize/torchao.py chooses


def edge_bytes(a: Arch, p: Params) -> dict[str, float]:
    """Weight bytes of the model in bf16, Q8_0, Q4_K_M, int8 and int4, from its parameter
    counts."""
    tables = p.embedding + p.lm_head
    # Norms and biases count as Linear weights here: under 0.1% of a decoder's parameters.
    linear = p.non_expert - tables
    rest = tables * 2.0 + p.experts * 2.0         # what torchao leaves in bf16
    group = next((g for g in INT4_GROUPS if a.hidden % g == 0), INT4_GROUPS[-1])
    return {
        "bf16": p.total * 2.0,
        "Q8_0": p.total * BITS["Q8_0"] / 8,
        "Q4_K_M": p.total * BITS["Q4_K_M"] / 8,
        "int8": linear * (1.0 + 2.0 / a.hidden) + rest,
        "int4": linear * (0.5 + 4.0 / group) + rest,
    }


def eval_context(cfg, positions: int | None) -> int:
    """Tokens of one eval sequence: eval.max_model_len, else the longest prompt the plan
    assumes (plan.max_prompt_tokens) plus eval.max_tokens (or generate.max_tokens), capped at
    the positions the trained student has (the eval stage's own rule)."""
    if cfg.eval.max_model_len:
        n = cfg.eval.max_model_len
    else:
        n = cfg.plan.max_prompt_tokens + (cfg.eval.max_tokens or cfg.generate.max_tokens)
    return min(n, positions) if positions else n


def edge_plan(a: Arch, p: Params, context: int) -> dict:
    """The student's weights per format and its bf16 KV cache for one sequence of `context`."""
    return {"weights": edge_bytes(a, p), "context": context, "kv_bytes": kv_bytes(a, context)}
