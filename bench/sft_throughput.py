"""SFT throughput and MFU of a Qwen2.5-1.5B-architecture student (random init) on one GPU.

Measures useful (non-pad) tokens/s, model FLOPs utilisation and peak memory of a full
fine-tuning step (AdamW, fused on CUDA) at 4k and 16k tokens of context:

- padded: one document per row, padded to the longest in the micro-batch (TRL's padding collator);
- packed: documents concatenated into full rows with position ids restarting per document and no
  attention mask (TRL's padding-free / BFD packing); transformers builds a block-diagonal mask
  from the position ids (when no KV cache is in use), so documents do not see each other;
- packed-flex: the same rows through flex attention, which skips the masked blocks;

with and without gradient checkpointing and Liger kernels (fused linear cross-entropy, RMSNorm,
SwiGLU, RoPE), with fp32 master weights under bf16 autocast (a model loaded in fp32, `bf16: true`)
or pure bf16 weights (a model loaded in bf16, as most SFT recipes do). Each configuration runs in
its own process, so Liger's patching and the CUDA allocator of one do not leak into the next.

    python bench/sft_throughput.py                # on a GPU: the full table (about 5 minutes on an H100)
    python bench/sft_throughput.py --tiny         # on CPU: a smoke run of the script itself

Document lengths are drawn like reasoning traces (log-uniform between 1/8 and 1x the context),
so padding wastes what it wastes in real SFT. FLOPs are counted from the documents actually in
each batch: 6 x (non-embedding parameters + lm_head) per token, plus causal attention
(6 x layers x hidden x n^2 per document of n tokens); gradient-checkpointing recompute is not
counted (it is overhead, not useful work). MFU divides by 989 TFLOP/s, the H100/H200 dense bf16 peak.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
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
        out.append(min(n, n_tokens - total) if out else n)
        total += out[-1]
    return out


def make_batch(mode: str, ctx: int, tokens_per_step: int, vocab: int, rng: random.Random, device):
    """A micro-batch and the document lengths it holds (what the FLOPs are counted from)."""
    lengths = doc_lengths(tokens_per_step, ctx, rng)
    if mode == "padded":
        rows, width = len(lengths), max(lengths)
        ids = torch.randint(0, vocab, (rows, width), device=device)
        mask = torch.zeros(rows, width, dtype=torch.long, device=device)
        for i, n in enumerate(lengths):
            mask[i, :n] = 1
        return dict(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)), lengths
    rows = max(1, tokens_per_step // ctx)
    ids = torch.randint(0, vocab, (rows, ctx), device=device)
    pos = torch.empty(rows, ctx, dtype=torch.long)
    segments, it = [], iter(lengths * 2)
    for r in range(rows):
        c = 0
        while c < ctx:
            n = min(next(it), ctx - c)
            pos[r, c:c + n] = torch.arange(n)
            segments.append(n)
            c += n
    return dict(input_ids=ids, position_ids=pos.to(device), labels=ids.clone()), segments


def model_flops(cfg, lengths: list[int]) -> float:
    d, L, V = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    kv = cfg.num_key_value_heads * (d // cfg.num_attention_heads)
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * cfg.intermediate_size  # q,o + k,v + mlp
    dense = L * per_layer + d * V                                          # + lm_head
    return 6 * dense * sum(lengths) + 6 * L * d * sum(n * n for n in lengths)


def isolation_error(attn: str, device) -> float:
    """How far a packed row's logits are from running each document alone (0: isolated)."""
    from transformers import Qwen2ForCausalLM
    cfg = qwen25_15b_config(tiny=True)
    cfg._attn_implementation = attn
    model = Qwen2ForCausalLM(cfg).to(device).eval()
    a, b = torch.randint(0, 1000, (1, 5), device=device), torch.randint(0, 1000, (1, 7), device=device)
    pos = torch.cat([torch.arange(5), torch.arange(7)])[None].to(device)
    with torch.no_grad():
        packed = model(torch.cat([a, b], 1), position_ids=pos, use_cache=False).logits
        return (packed[:, 5:] - model(b, use_cache=False).logits).abs().max().item()


def run_one(tiny, ctx, mode, ckpt, liger, bf16_weights, steps, tokens_per_step) -> dict:
    from transformers import Qwen2ForCausalLM
    device = torch.device("cuda" if torch.cuda.is_available() and not tiny else "cpu")
    if liger:
        from liger_kernel.transformers import apply_liger_kernel_to_qwen2
        apply_liger_kernel_to_qwen2()
    torch.manual_seed(0)
    cfg = qwen25_15b_config(tiny)
    cfg._attn_implementation = "flex_attention" if mode == "packed-flex" else "sdpa"
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg)
    if bf16_weights:
        model = model.to(torch.bfloat16)
    model.config.use_cache = False  # a KV cache would disable the packed-sequence mask
    model.train()
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    rng = random.Random(0)
    batches = [make_batch(mode, ctx, tokens_per_step, cfg.vocab_size, rng, device)
               for _ in range(steps + 2)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    secs, useful, flops = 0.0, 0, 0.0
    for i, (batch, lengths) in enumerate(batches):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=not bf16_weights):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:  # two warm-up steps (kernel autotuning, flex compilation)
            secs += time.perf_counter() - t
            useful += sum(lengths)
            flops += model_flops(cfg, lengths)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return dict(ctx=ctx, mode=mode, grad_ckpt=ckpt, liger=liger, bf16_weights=bf16_weights,
                tokens_per_s=round(useful / secs), mfu=round(flops / secs / PEAK_FLOPS, 3),
                peak_mem_gib=round(peak, 1), step_s=round(secs / steps, 3), loss=round(loss.item(), 3))


def grid(tiny: bool, liger: bool) -> list[tuple]:
    """(ctx, mode, grad_ckpt, liger, bf16_weights)"""
    small, large = (256, 512) if tiny else (4096, 16384)
    rows = [(small, "padded", True, False, False), (small, "packed", True, False, False),
            (small, "packed-flex", True, False, False), (small, "packed", False, False, False),
            (small, "packed", False, False, True)]
    if liger:
        rows += [(small, "packed", True, True, False), (small, "packed", False, True, False),
                 (small, "packed", False, True, True)]
    rows += [(large, "padded", True, False, False), (large, "packed", True, False, False),
             (large, "packed-flex", True, False, False)]
    if liger:
        rows += [(large, "packed", True, True, False), (large, "packed", True, True, True)]
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="tiny model on CPU: checks the script")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--tokens-per-step", type=int, default=8192,
                    help="tokens per micro-batch (at least one row of the context)")
    ap.add_argument("--liger", action="store_true", help="also measure with Liger kernels")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.one:  # child process: one configuration, one JSON line
        ctx, mode, ckpt, liger, bf16w = json.loads(args.one)
        tps = max(ctx, 1024 if args.tiny else args.tokens_per_step)
        print("RESULT " + json.dumps(run_one(args.tiny, ctx, mode, ckpt, liger, bf16w, args.steps, tps)))
        return
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    for attn in ("sdpa", "flex_attention"):
        try:
            print(f"packed-row isolation error with {attn}: {isolation_error(attn, device):.2e}")
        except Exception as e:  # flex attention needs a working inductor toolchain
            print(f"packed-row isolation with {attn}: unavailable ({type(e).__name__})")
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}")
    print(f"{'ctx':>6} {'mode':>11} {'ckpt':>5} {'liger':>5} {'bf16w':>5} {'tok/s':>9} {'MFU':>6} {'peak GiB':>8}")
    rows = []
    for conf in grid(args.tiny, args.liger):
        cmd = [sys.executable, __file__, "--one", json.dumps(conf), "--steps", str(args.steps),
               "--tokens-per-step", str(args.tokens_per_step)] + (["--tiny"] if args.tiny else [])
        p = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:  # out of memory, or a kernel missing on this machine
            err = (p.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"{conf}: failed: {err[:300]}", flush=True)
            r = dict(zip(("ctx", "mode", "grad_ckpt", "liger", "bf16_weights"), conf),
                     tokens_per_s=0, mfu=0.0, peak_mem_gib=None, error=err[:300])
        else:
            r = json.loads(line[len("RESULT "):])
        rows.append(r)
        print(f"{r['ctx']:>6} {r['mode']:>11} {str(r['grad_ckpt']):>5} {str(r['liger']):>5} "
              f"{str(r['bf16_weights']):>5} {r['tokens_per_s']:>9} {r['mfu']:>6.1%} {str(r['peak_mem_gib']):>8}",
              flush=True)
    base = {r["ctx"]: r for r in rows if r["mode"] == "padded"}
    for r in rows:
        if r["mode"] != "padded" and r["tokens_per_s"] and base.get(r["ctx"], {}).get("tokens_per_s"):
            print(f"ctx {r['ctx']} {r['mode']} ckpt={r['grad_ckpt']} liger={r['liger']} "
                  f"bf16w={r['bf16_weights']}: {r['tokens_per_s'] / base[r['ctx']]['tokens_per_s']:.2f}x padded")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
