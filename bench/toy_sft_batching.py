"""Toy SFT throughput on CPU: padded batches versus padding-free and BFD packing.

Trains the toy student (distill.toy) with distill's own SFT path (TRL SFTTrainer, assistant-only
loss) for one epoch over the same gold traces in each batching mode, and reports useful
(non-pad) tokens per second and the ratio to padded batches. Each mode runs twice, alternating,
and the faster run counts (these machines are noisy).

    python bench/toy_sft_batching.py                  # ~2 minutes on 2 cores
    python bench/toy_sft_batching.py --records 3000   # the smoke recipe's size
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def _records(n: int) -> list[dict]:
    from distill.records import record_id
    from distill.toy.tasks import make_tasks
    tasks = make_tasks("arith", n * 16 // 25, 0) + make_tasks("code", n * 9 // 25, 0)
    return [{"id": record_id(t["messages"]),
             "messages": t["messages"] + [{"role": "assistant", "content": t["reference"]}]}
            for t in tasks]


def run(mode: str, records: list[dict], batch_size: int) -> dict:
    from distill.config import Recipe
    from distill.records import RunDir
    from distill.toy import resolve_model
    from distill.chat import prepare_tokenizer
    from distill.train.common import Prepared
    from distill.train.data import source_dataset, tokenize
    from distill.positions import positions
    from distill.train.sft import build_sft
    student = resolve_model("toy:student")
    cfg = Recipe.model_validate({
        "run": {"name": "bench", "seed": 0},
        "prompts": {"sources": [{"name": "toy", "kind": "toy", "family": "arith", "category": "math"}]},
        "teacher": {"model": "toy:teacher"},
        "train": {"student": "toy:student", "epochs": 1, "batch_size": batch_size, "learning_rate": 1e-3,
                  "max_length": 512, "padding_free": mode == "padding_free", "packing": mode == "packing"},
        "eval": {"benchmarks": ["toy_arith"]},
    })
    with tempfile.TemporaryDirectory() as out:
        stage = RunDir(out).stage("dataset")
        with stage.writer() as w:
            for rec in records:
                w.write(rec)
        stage.complete()
        data, cache = source_dataset(stage, Path(out) / "cache")
        tok, stop_ids = prepare_tokenizer(cfg.train, student)
        prep = Prepared(path=student, tok=tok, end_of_turn=tok.eos_token, stop_ids=stop_ids,
                        positions=positions(cfg.train, 512, "toy:student"), data=data, cache=cache)
        examples, _ = tokenize(data, cache, tok, end_of_turn=tok.eos_token, max_length=512,
                               method="sft", stop_ids=stop_ids)
        useful = sum(len(ids) for ids in examples["input_ids"])
        trainer, _ = build_sft(cfg, prep, Path(out) / "checkpoints")
        trainer.args.save_strategy = "no"
        trainer.args.logging_steps = 10**9
        t = time.perf_counter()
        result = trainer.train()
        secs = time.perf_counter() - t
    return {"mode": mode, "tokens_per_s": round(useful / secs), "seconds": round(secs, 1),
            "loss": round(result.training_loss, 4)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out")
    args = ap.parse_args()
    import torch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    records = _records(args.records)
    best: dict[str, dict] = {}
    for _ in range(2):
        for mode in ("padded", "padding_free", "packing"):
            r = run(mode, records, args.batch_size)
            if mode not in best or r["tokens_per_s"] > best[mode]["tokens_per_s"]:
                best[mode] = r
            print(json.dumps(r), flush=True)
    base = best["padded"]["tokens_per_s"]
    print(f"\n{'mode':>13} {'tok/s':>8} {'vs padded':>9}")
    for r in best.values():
        print(f"{r['mode']:>13} {r['tokens_per_s']:>8} {r['tokens_per_s'] / base:>8.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps(list(best.values()), indent=2))


if __name__ == "__main__":
    main()
