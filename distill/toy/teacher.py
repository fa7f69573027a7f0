"""Trains the toy MoE teacher on the gold responses of the toy task families; scores toy models.

Reads `distill.toy.tasks.make_tasks(family, split="train")` for `arith` and `code`, trains the
Qwen3-MoE of `distill.toy.models.build_teacher` on the chat-formatted gold responses (loss on
assistant tokens only, plus the router's load-balancing loss), and writes the model, its
tokenizer and `expert_utilisation.json` into a directory with `save_pretrained`.

A plain torch loop rather than TRL: this is pretraining a toy from scratch with two families
sampled in fixed proportions and one family per batch (so batches hardly pad), not SFT of a
pretrained student. Greedy scoring (`score`) is a local check of the toy world only; the
pipeline grades through `distill.grading.verify` and the sandbox.
"""

from __future__ import annotations

import json
import logging
import math
import re
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

FAMILIES = ("arith", "mult", "code")

# Sizes and schedule measured on 2 CPU cores: both families reach >= 95% greedy accuracy on
# the eval split in about 3-4 minutes. Changing any value changes the cache key.
TRAIN = dict(
    seed=0,
    steps=1300,
    batch_size=32,
    learning_rate=3e-3,
    warmup_steps=30,
    min_lr_ratio=0.1,
    weight_decay=0.01,
    # share of the batches per family (one family per batch): code has 7x fewer training tasks
    # than arith or mult, so it is sampled more than its share of the data
    mix=dict(arith=0.35, mult=0.35, code=0.3),
    grad_clip=1.0,
)


# ----------------------------------------------------------------------------------- data

def encode(tok, task: dict, response: str) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 outside the assistant turn) of one chat-formatted example."""
    enc = tok.apply_chat_template(
        task["messages"] + [{"role": "assistant", "content": response}],
        tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    return ids, [i if m else -100 for i, m in zip(ids, mask)]


def _batch(examples: list[tuple[list[int], list[int]]], pad_id: int):
    import torch
    # Right padding for training: positions then start at 0 for every row.
    n = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), -100, dtype=torch.long)
    attn = torch.zeros((len(examples), n), dtype=torch.long)
    for r, (ids, lab) in enumerate(examples):
        input_ids[r, :len(ids)] = torch.tensor(ids)
        labels[r, :len(lab)] = torch.tensor(lab)
        attn[r, :len(ids)] = 1
    return input_ids, labels, attn


# ------------------------------------------------------------------------------- training

def train_teacher(out_dir: Path, train: dict | None = None, tokenizer=None) -> dict:
    """Trains the toy teacher and saves it (model, tokenizer, expert utilisation) to `out_dir`;
    logs its size, the loss every 50 steps and the utilisation (INFO). Returns a summary:
    steps, seconds, tokens/s, final loss, utilisation. `tokenizer`: another than the character
    one (toy:teacher-bpe)."""
    import torch
    from distill.toy.arch import build_teacher
    from distill.toy.tasks import make_tasks

    cfg = {**TRAIN, **(train or {})}
    model, tok = build_teacher(seed=cfg["seed"], tokenizer=tokenizer)
    assert model.config.output_router_logits and model.config.router_aux_loss_coef > 0
    data = {f: [encode(tok, t, t["reference"]) for t in make_tasks(f, None, cfg["seed"], "train")]
            for f in FAMILIES}
    gen = torch.Generator().manual_seed(cfg["seed"])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["learning_rate"],
                            weight_decay=cfg["weight_decay"], betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < cfg["warmup_steps"]:
            return (step + 1) / cfg["warmup_steps"]
        p = (step - cfg["warmup_steps"]) / max(1, cfg["steps"] - cfg["warmup_steps"])
        return cfg["min_lr_ratio"] + (1 - cfg["min_lr_ratio"]) * 0.5 * (1 + math.cos(math.pi * p))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    t0, cpu0, tokens, ce_sum, aux_sum, n_log = time.time(), time.process_time(), 0, 0.0, 0.0, 0
    n_params = sum(p.numel() for p in model.parameters())
    log.info("toy teacher: %.2fM params, %d steps of %d, %d training examples", n_params / 1e6,
             cfg["steps"], cfg["batch_size"], sum(len(v) for v in data.values()))
    for step in range(cfg["steps"]):
        u, family = torch.rand((), generator=gen).item(), FAMILIES[-1]
        for f in FAMILIES:
            u -= cfg["mix"][f]
            if u < 0:
                family = f
                break
        pool = data[family]
        idx = torch.randint(len(pool), (cfg["batch_size"],), generator=gen).tolist()
        input_ids, labels, attn = _batch([pool[i] for i in idx], tok.pad_token_id)
        out = model(input_ids=input_ids, attention_mask=attn, labels=labels)
        # out.loss already holds router_aux_loss_coef * aux_loss (Qwen3MoeForCausalLM adds it
        # when output_router_logits is set); checked in tests/test_toy.py.
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(attn.sum())
        aux = float(out.aux_loss.detach())
        ce_sum += float(out.loss.detach()) - model.config.router_aux_loss_coef * aux
        aux_sum += aux
        n_log += 1
        if (step + 1) % 50 == 0 or step + 1 == cfg["steps"]:
            dt = time.time() - t0
            log.info("toy teacher: step %5d/%d  loss %.4f  aux %.3f  lr %.2e  %s tok/s  %.0fs",
                     step + 1, cfg["steps"], ce_sum / n_log, aux_sum / n_log,
                     sched.get_last_lr()[0], f"{tokens / dt:,.0f}", dt)
            last_loss, ce_sum, aux_sum, n_log = ce_sum / n_log, 0.0, 0.0, 0
    seconds, cpu_seconds = time.time() - t0, time.process_time() - cpu0
    model.eval()
    util = expert_utilisation(model, tok, [data[f][:256] for f in FAMILIES])
    out_dir = Path(out_dir)
    # The load-balancing loss is a training term. Saved with it on, transformers 5.24 fails to
    # generate with a KV cache (it masks one step's router logits with the whole attention mask).
    model.config.output_router_logits = False
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    (out_dir / "expert_utilisation.json").write_text(json.dumps(util, indent=2))
    summary = dict(steps=cfg["steps"], seconds=round(seconds, 1),
                   cpu_seconds=round(cpu_seconds, 1), tokens_per_s=round(tokens / seconds),
                   final_loss=round(last_loss, 5), train=cfg, params=n_params)
    (out_dir / "training.json").write_text(json.dumps(summary, indent=2))
    log.info("toy teacher trained in %.0fs; expert utilisation per layer: %s", seconds,
             "; ".join(" ".join(f"{x:.2f}" for x in layer) for layer in util["per_layer"]))
    return {**summary, "utilisation": util}


def expert_utilisation(model, tok, pools: list[list[tuple[list[int], list[int]]]]) -> dict:
    """Fraction of routed (token, top-k slot) assignments that go to each expert, per layer,
    over real (non-pad) tokens of the given examples. 1/num_experts everywhere is perfect balance.
    The counting is distill.experts', which the report also runs per task category."""
    from distill.experts import router_counts, summarise
    batches = ((ids, attn) for ids, _, attn in (_batch(pool, tok.pad_token_id) for pool in pools))
    s = summarise(router_counts(model, batches), model.config.num_experts_per_tok)
    return {k: s[k] for k in ("num_experts", "top_k", "tokens", "per_layer", "max_over_uniform")}


# -------------------------------------------------------------------------------- scoring

def generate(model, tok, tasks: list[dict], max_new_tokens: int = 160, batch_size: int = 64,
             temperature: float = 0.0) -> list[tuple[str, bool]]:
    """Completions of each task's prompt, greedy or sampled: (text, stopped by <|im_end|>)."""
    import torch
    tok.padding_side = "left"
    out: list[tuple[str, bool]] = []
    model.eval()
    for i in range(0, len(tasks), batch_size):
        chunk = tasks[i:i + batch_size]
        prompts = [tok.apply_chat_template(t["messages"], tokenize=False, add_generation_prompt=True)
                   for t in chunk]
        enc = tok(prompts, return_tensors="pt", padding=True)
        with torch.no_grad():
            sampling = dict(do_sample=True, temperature=temperature, top_p=1.0, top_k=0) \
                if temperature > 0 else dict(do_sample=False)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, **sampling,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        for row in gen[:, enc["input_ids"].shape[1]:].tolist():
            stopped = tok.eos_token_id in row
            if stopped:
                row = row[:row.index(tok.eos_token_id)]
            out.append((tok.decode(row, skip_special_tokens=False), stopped))
    return out


def _answer_part(text: str) -> str:
    return text.split("</think>", 1)[1] if "</think>" in text else ""


def is_correct(task: dict, text: str) -> bool:
    """Local check: the last \\boxed{} equals the answer (arith), or the last ```python block
    passes the tests in a subprocess (code)."""
    answer = _answer_part(text)
    if task["verifier"] == "math":
        boxed = re.findall(r"\\boxed\{([^{}]*)\}", answer)
        return bool(boxed) and boxed[-1].strip() == task["answer"]
    blocks = re.findall(r"```python\n(.*?)```", answer, re.S)
    if not blocks:
        return False
    try:
        run = subprocess.run([sys.executable, "-I", "-c", blocks[-1] + "\n" + task["tests"]],
                             capture_output=True, timeout=10)
    except subprocess.TimeoutExpired:
        return False
    return run.returncode == 0


def score(model, tok, tasks: list[dict], temperature: float = 0.0, samples: int = 1) -> dict:
    """Accuracy (mean over `samples` completions per task: pass@1) and stop rate per family,
    greedy by default."""
    import torch
    torch.manual_seed(0)
    tasks = [t for t in tasks for _ in range(samples)]
    outs = generate(model, tok, tasks, temperature=temperature)
    res: dict[str, dict] = {}
    for task, (text, stopped) in zip(tasks, outs):
        r = res.setdefault(task["family"], {"n": 0, "correct": 0, "stopped": 0})
        r["n"] += 1
        r["correct"] += bool(stopped and is_correct(task, text))
        r["stopped"] += stopped
    for r in res.values():
        r["accuracy"] = r["correct"] / r["n"]
        r["stop_rate"] = r["stopped"] / r["n"]
    return res
