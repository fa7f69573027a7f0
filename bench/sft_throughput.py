"""SFT throughput and MFU of a Qwen2.5-1.5B-architecture student (random init) on one GPU.

Measures useful (non-pad) tokens/s, model FLOPs utilisation and peak memory for a full
fine-tuning step (bf16 autocast over fp32 master weights, fused AdamW), at 4k and 16k tokens,
padded batches versus packed rows (position ids reset per document, so attention stays within
each document), with and without gradient checkpointing and Liger kernels.

    python bench/sft_throughput.py                # on a GPU: the full table
    python bench/sft_throughput.py --tiny         # on CPU: a smoke run of the script itself

Document lengths are drawn like reasoning traces (log-uniform between 1/8 and 1x the context),
so padding wastes what it wastes in real SFT. MFU counts 6 x (non-embedding parameters +
lm_head) FLOPs per token plus causal attention (6 x layers x hidden x context per token) over
989 TFLOP/s, the H100/H200 dense bf16 peak.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time

import torch

PEAK_FLOPS = 989e12


def qwen25_15b_config(tiny: bool):
    from transformers import Qwen2Config
    if tiny:
        return Qwen2Config(vocab_size=1000, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=32768, tie_word_embeddings=True)
    return Qwen2Config(vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                       num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                       max_position_embeddings=32768, rope_theta=1e6, tie_word_embeddings=True,
                       rms_norm_eps=1e-6)


def doc_lengths(n_tokens: int, ctx: int, rng: random.Random) -> list[int]:
    out, total = [], 0
    while total < n_tokens:
        n = int(math.exp(rng.uniform(math.log(ctx / 8), math.log(ctx))))
        out.append(n)
        total += n
    return out


def make_batch(mode: str, ctx: int, tokens_per_step: int, vocab: int, rng: random.Random, device):
    lengths = doc_lengths(tokens_per_step, ctx, rng)
    if mode == "padded":
        # one document per row, padded to the longest in the batch (as TRL's padding collator)
        rows = len(lengths)
        width = max(lengths)
        ids = torch.randint(0, vocab, (rows, width), device=device)
        mask = torch.zeros(rows, width, dtype=torch.long, device=device)
        for i, n in enumerate(lengths):
            mask[i, :n] = 1
        labels = ids.masked_fill(mask == 0, -100)
        return dict(input_ids=ids, attention_mask=mask, labels=labels), sum(lengths)
    # packed: documents concatenated into rows of ctx tokens, positions restart per document
    rows = max(1, sum(lengths) // ctx)
    ids = torch.randint(0, vocab, (rows, ctx), device=device)
    pos = torch.empty(rows, ctx, dtype=torch.long)
    it = iter(lengths)
    for r in range(rows):
        c = 0
        while c < ctx:
            n = min(next(it, ctx), ctx - c)
            pos[r, c:c + n] = torch.arange(n)
            c += n
    return dict(input_ids=ids, position_ids=pos.to(device), labels=ids.clone()), rows * ctx


def flops_per_token(cfg, ctx_mean: float) -> float:
    d, L, V = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    hd = d // cfg.num_attention_heads
    kv = cfg.num_key_value_heads * hd
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * cfg.intermediate_size  # q,o + k,v + mlp
    dense = L * per_layer + d * V                                          # + lm_head
    return 6 * dense + 6 * L * d * ctx_mean


def isolation_error(attn: str, device) -> float:
    """How far a packed row's logits are from running each document alone (0: isolated)."""
    import copy
    from transformers import Qwen2ForCausalLM
    cfg = copy.deepcopy(qwen25_15b_config(tiny=True))
    cfg._attn_implementation = attn
    model = Qwen2ForCausalLM(cfg).to(device).eval()
    a, b = torch.randint(0, 1000, (1, 5), device=device), torch.randint(0, 1000, (1, 7), device=device)
    pos = torch.cat([torch.arange(5), torch.arange(7)])[None].to(device)
    with torch.no_grad():
        packed = model(torch.cat([a, b], 1), position_ids=pos).logits
        return (packed[:, 5:] - model(b).logits).abs().max().item()


def run(cfg, ctx, mode, ckpt, liger, steps, tokens_per_step, device, dtype):
    import copy
    from transformers import Qwen2ForCausalLM
    if liger:
        from liger_kernel.transformers import apply_liger_kernel_to_qwen2
        apply_liger_kernel_to_qwen2()
    torch.manual_seed(0)
    cfg = copy.deepcopy(cfg)
    # packed-flex: flex attention builds a block-diagonal mask from the position ids, so packed
    # documents do not attend to each other; plain sdpa attends across them (wrapped packing).
    cfg._attn_implementation = "flex_attention" if mode == "packed-flex" else "sdpa"
    model = Qwen2ForCausalLM(cfg).to(device)
    model.config.use_cache = False
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    rng = random.Random(0)
    batches = [make_batch(mode, ctx, tokens_per_step, cfg.vocab_size, rng, device)
               for _ in range(steps + 2)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, useful = [], 0
    for i, (batch, n_useful) in enumerate(batches):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:  # two warm-up steps
            times.append(time.perf_counter() - t)
            useful += n_useful
    secs = sum(times)
    # mean attended context per token: half the document length for causal attention is in
    # flops_per_token's 6*L*d*ctx term; use the mean document length as ctx
    mean_doc = sum(doc_lengths(100 * ctx, ctx, random.Random(1))) / len(doc_lengths(100 * ctx, ctx, random.Random(1)))
    tps = useful / secs
    mfu = tps * flops_per_token(cfg, mean_doc) / PEAK_FLOPS
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return dict(ctx=ctx, mode=mode, grad_ckpt=ckpt, liger=liger, tokens_per_s=round(tps),
                mfu=round(mfu, 3), peak_mem_gib=round(peak, 1), step_s=round(secs / len(times), 3))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="tiny model on CPU: checks the script")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--tokens-per-step", type=int, default=65536)
    ap.add_argument("--liger", action="store_true", help="also measure with Liger kernels")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    cfg = qwen25_15b_config(args.tiny)
    tps = 2048 if args.tiny else args.tokens_per_step
    ctxs = [256, 512] if args.tiny else [4096, 16384]
    grid = []
    for ctx in ctxs:
        grid += [(ctx, "padded", True, False), (ctx, "packed", True, False),
                 (ctx, "packed-flex", True, False)]
        if ctx == ctxs[0]:
            grid += [(ctx, "packed", False, False)]
        if args.liger:
            grid += [(ctx, "packed", True, True)]
    rows = []
    for attn in ("sdpa", "flex_attention"):
        try:
            print(f"packed-row isolation error with {attn}: {isolation_error(attn, device):.2e}")
        except Exception as e:  # flex attention needs a working inductor toolchain
            print(f"packed-row isolation with {attn}: unavailable ({type(e).__name__})")
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}")
    print(f"{'ctx':>6} {'mode':>7} {'ckpt':>5} {'liger':>5} {'tok/s':>9} {'MFU':>6} {'peak GiB':>8}")
    for ctx, mode, ckpt, liger in grid:
        try:
            r = run(cfg, ctx, mode, ckpt, liger, args.steps, tps, device, torch.bfloat16)
        except Exception as e:  # out of memory, or a kernel missing on this machine
            print(f"{ctx} {mode}: {type(e).__name__}: {str(e)[:200]}")
            r = dict(ctx=ctx, mode=mode, grad_ckpt=ckpt, liger=liger, tokens_per_s=0, mfu=0,
                     peak_mem_gib=float("inf"), step_s=None)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(r)
        print(f"{r['ctx']:>6} {r['mode']:>7} {str(r['grad_ckpt']):>5} {str(r['liger']):>5} "
              f"{r['tokens_per_s']:>9} {r['mfu']:>6.1%} {r['peak_mem_gib']:>8}", flush=True)
    base = {(r["ctx"]): r for r in rows if r["mode"] == "padded"}
    for r in rows:
        if r["mode"].startswith("packed") and base.get(r["ctx"], {}).get("tokens_per_s"):
            print(f"ctx {r['ctx']} {r['mode']}/padded (ckpt={r['grad_ckpt']}, liger={r['liger']}): "
                  f"{r['tokens_per_s'] / base[r['ctx']]['tokens_per_s']:.2f}x")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
