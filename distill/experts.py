"""Expert utilisation of a local Mixture-of-Experts teacher, per task category, through its
router logits. Reads a model directory and the teacher's traces (generation records: prompt
messages, reasoning, content, category); returns fractions and warnings, writes nothing.

Each token's top-k routing slots are counted per layer over real (non-pad) tokens: 1 /
num_experts everywhere is perfect balance. The counts come from the router logits the model
returns with `output_router_logits=True` (Qwen-MoE, Mixtral, OLMoE, ... in transformers); top-k of
the logits is top-k of the softmax, so this is the routing the model performs. (DeepSeek-V3 adds a
per-expert bias before its top-k: its logits alone give an approximation.)

Collapse: a few experts taking most tokens wastes the rest of the parameters (memory paid for,
compute never used) and is what the load-balancing loss exists to prevent. The plan warns when,
in any layer, the busiest quarter of the experts takes COLLAPSE_SHARE of the slots or more (25%
when balanced), and counts experts below DEAD_SHARE of their balanced share as idle.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterable

COLLAPSE_SHARE = 0.75
DEAD_SHARE = 0.1


@contextlib.contextmanager
def one_thread_on_cpu(model):
    """Runs torch on one thread while `model` is on the CPU: on a shared 2-core machine two
    spinning OpenMP threads ran the toy teacher's forward 10-17x slower than one."""
    import torch
    threads = torch.get_num_threads()
    if next(model.parameters()).device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def moe_shape(config) -> tuple[int, int] | None:
    """(num_experts, top_k) of a transformers config, or None for a dense model."""
    n = next((getattr(config, k) for k in ("num_experts", "num_local_experts", "n_routed_experts")
              if getattr(config, k, None)), 0)
    k = getattr(config, "num_experts_per_tok", None) or getattr(config, "experts_per_token", None)
    return (n, k) if n and k else None


def router_counts(model, batches):
    """(moe layers, num_experts) counts of top-k assignments over the real tokens of
    `batches`, an iterable of (input_ids, attention_mask) tensors."""
    import torch
    n_exp, k = moe_shape(model.config)
    counts = None
    with torch.no_grad():
        for input_ids, attn in batches:
            out = model(input_ids=input_ids, attention_mask=attn, output_router_logits=True)
            keep = attn.reshape(-1).bool()
            layer_counts = torch.stack([
                torch.bincount(logits.reshape(-1, n_exp)[keep].topk(k, dim=-1).indices.reshape(-1),
                               minlength=n_exp)
                for logits in out.router_logits]).double()
            counts = layer_counts if counts is None else counts + layer_counts
    return counts


def summarise(counts, top_k: int) -> dict:
    """Per-layer fractions and the balance figures of a counts tensor."""
    n_exp = counts.shape[1]
    frac = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    quarter = max(1, math.ceil(n_exp / 4))
    top_quarter = frac.sort(dim=1, descending=True).values[:, :quarter].sum(dim=1)
    probs = frac.clamp(min=1e-12)
    entropy = -(frac * probs.log()).sum(dim=1) / math.log(n_exp)
    dead = (frac < DEAD_SHARE / n_exp).sum(dim=1)
    return {"num_experts": n_exp, "top_k": top_k, "tokens": int(counts[0].sum()) // top_k,
            "per_layer": [[round(float(x), 4) for x in row] for row in frac],
            "max_over_uniform": round(float(frac.max() * n_exp), 3),
            "top_quarter_share": [round(float(x), 3) for x in top_quarter],
            "entropy": [round(float(x), 3) for x in entropy],
            "idle_experts": [int(x) for x in dead]}


def collapse_warnings(label: str, s: dict) -> list[str]:
    out = []
    quarter = max(1, math.ceil(s["num_experts"] / 4))
    for layer, share in enumerate(s["top_quarter_share"]):
        if share >= COLLAPSE_SHARE:
            fr = s["per_layer"][layer]
            busiest = sorted(range(len(fr)), key=lambda e: -fr[e])[:quarter]
            out.append(f"expert collapse ({label}, layer {layer}): experts "
                       f"{', '.join(map(str, busiest))} take {100 * share:.0f}% of the routed tokens "
                       f"(balanced: {100 * quarter / s['num_experts']:.0f}%)")
    return out


def _encode(tok, rec: dict) -> list[int]:
    prompt = [m for m in rec["messages"] if m["role"] != "assistant"]
    text = f"<think>{rec.get('reasoning') or ''}</think>{rec.get('content') or ''}"
    enc = tok.apply_chat_template(prompt + [{"role": "assistant", "content": text}],
                                  tokenize=True, return_dict=True)
    return list(enc["input_ids"])


def _batches(seqs: list[list[int]], pad_id: int, size: int, max_len: int):
    import torch
    for i in range(0, len(seqs), size):
        chunk = [s[:max_len] for s in seqs[i:i + size]]
        n = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), n), pad_id, dtype=torch.long)
        attn = torch.zeros((len(chunk), n), dtype=torch.long)
        for r, s in enumerate(chunk):
            ids[r, :len(s)] = torch.tensor(s)
            attn[r, :len(s)] = 1
        yield ids, attn


def by_category(model_path: str, records: Iterable[dict], per_category: int = 64,
                batch_size: int = 16, max_len: int = 2048) -> dict | None:
    """Utilisation per category over up to `per_category` traces of each, and overall, with
    collapse warnings. None when the model is not a Mixture of Experts."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    shape = moe_shape(AutoConfig.from_pretrained(model_path))
    if shape is None:
        return None
    model = AutoModelForCausalLM.from_pretrained(model_path)
    model.eval()
    tok = AutoTokenizer.from_pretrained(model_path)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    groups: dict[str, list[list[int]]] = {}
    for rec in records:
        cat = str(rec.get("category"))
        if len(groups.setdefault(cat, [])) < per_category:
            groups[cat].append(_encode(tok, rec))
    result: dict = {"top_k": shape[1], "num_experts": shape[0], "categories": {}, "warnings": []}
    total = None
    for cat, seqs in sorted(groups.items()):
        with one_thread_on_cpu(model):
            counts = router_counts(model, _batches(seqs, pad, batch_size, max_len))
        total = counts if total is None else total + counts
        s = summarise(counts, shape[1])
        s["traces"] = len(seqs)
        result["categories"][cat] = s
        result["warnings"] += collapse_warnings(f"category {cat}", s)
    if total is not None:
        result["overall"] = summarise(total, shape[1])
    return result
