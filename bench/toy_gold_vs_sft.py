"""Toy GOLD versus SFT on the same kept traces: time per step and the student's score.

Copies the dataset stage of a finished run (e.g. the demo's) into `<out>/sft` and `<out>/gold`,
trains the toy student there with the smoke recipe, once by `method: sft` and once by
`method: gold` from `toy:teacher-bpe` (a teacher whose tokenizer is not the student's, so GOLD's
ULD loss runs), both for the same number of steps, and scores each student greedily on the toy
benchmarks' held-out split (80 arith + 60 code tasks). A finished method is not trained again
(the train stage's own skip), so the two can run at different times.

    python bench/toy_gold_vs_sft.py --run-dir runs/demo --out /tmp/gold-bench
    python bench/toy_gold_vs_sft.py --run-dir runs/demo --out /tmp/gold-bench --max-steps 400 --methods sft

No method is expected to win: the table is a measurement, on the toy world only.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path


def train(method: str, source: Path, out: Path, max_steps: int | None, teacher: str) -> dict:
    from distill.config import load_recipe, recipe_path
    from distill.records import RunDir
    from distill.train import run_train
    run = out / method
    if not (run / "dataset").exists():
        shutil.copytree(source / "dataset", run / "dataset")
    overrides = [f"train.method={method}"] + ([f"train.max_steps={max_steps}"] if max_steps else [])
    if method == "gold":
        overrides.append(f"train.gold.teacher_model={teacher}")
    model_dir = run_train(load_recipe(recipe_path("smoke"), overrides), run)
    manifest = RunDir(run).stage("train").manifest()
    steps = manifest["ranks"][0]["steps"]
    return {"model": model_dir, "steps": steps, "seconds": manifest["train_seconds"],
            "s_per_step": manifest["train_seconds"] / steps, "loss": manifest["train_loss"]}


def score(model_dir: Path) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.toy.tasks import make_tasks
    from distill.toy.teacher import score as toy_score
    tasks = make_tasks("arith", 80, 3, "eval") + make_tasks("code", 60, 3, "eval")
    r = toy_score(AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir), tasks)
    return {family: r[family]["accuracy"] for family in ("arith", "code")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", type=Path, required=True, help="a run whose dataset stage is complete")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--max-steps", type=int, default=None, help="default: the smoke recipe's 8 epochs")
    p.add_argument("--methods", default="sft,gold")
    p.add_argument("--teacher", default="toy:teacher-bpe")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    rows = {}
    for method in a.methods.split(","):
        r = train(method, a.run_dir, a.out, a.max_steps, a.teacher)
        r.update(score(r["model"]))
        rows[method] = r
        (a.out / f"{method}.json").write_text(json.dumps({k: str(v) if isinstance(v, Path) else v
                                                          for k, v in r.items()}, indent=2))
    print(f"{'method':8} {'steps':>6} {'s/step':>7} {'train s':>8} {'loss':>7} {'arith':>6} {'code':>6}")
    for method, r in rows.items():
        print(f"{method:8} {r['steps']:6d} {r['s_per_step']:7.3f} {r['seconds']:8.0f} {r['loss']:7.3f} "
              f"{r['arith']:6.1%} {r['code']:6.1%}")
    if {"sft", "gold"} <= rows.keys():
        print(f"gold / sft time per step: {rows['gold']['s_per_step'] / rows['sft']['s_per_step']:.2f}x")


if __name__ == "__main__":
    main()
