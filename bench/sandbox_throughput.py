"""Sandbox throughput: grade every HumanEval+ canonical solution on all base and plus inputs,
distill (bubblewrap fork servers, outputs compared in full inside the sandbox) versus
`evalplus.evaluate` (multiprocessing, no isolation), at the same parallelism, side by side in
one run. Each side is timed twice: computing the expected outputs of the canonical solutions,
then grading with them cached.

    python -m venv /work/bench-envs/evalplus
    /work/bench-envs/evalplus/bin/pip install evalplus==0.3.1
    PYTHONPATH=. .venv/bin/python bench/sandbox_throughput.py --workers 2 --repeat 2

Prints a table: seconds per side and phase, tasks passed, and distill / evalplus ratios.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "evalplus" / "HumanEvalPlus-v0.1.10.jsonl.gz"

EVALPLUS_SCRIPT = r"""
import json, sys, time
from evalplus.evaluate import evaluate
t = time.perf_counter()
evaluate("humaneval", samples=sys.argv[1], parallel=int(sys.argv[2]), i_just_wanna_run=True)
print("EVALPLUS_SECONDS", time.perf_counter() - t)
"""


def run_evalplus(python: str, data: Path, samples: Path, cache: Path, workers: int) -> dict:
    """Runs evalplus on the samples; `cache` empty: the first call computes the ground truth."""
    results_file = samples.with_name(samples.stem + "_eval_results.json")
    results_file.unlink(missing_ok=True)     # evalplus asks on stdin before overwriting it
    env = {**os.environ, "HUMANEVAL_OVERRIDE_PATH": str(data), "XDG_CACHE_HOME": str(cache),
           "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run([python, "-c", EVALPLUS_SCRIPT, str(samples), str(workers)], env=env,
                         capture_output=True, text=True, check=True).stdout
    total = float(re.search(r"EVALPLUS_SECONDS ([\d.]+)", out).group(1))
    m = re.search(r"Expected outputs computed in ([\d.]+)s", out)
    results = json.loads(results_file.read_text())
    passed = sum(1 for rs in results["eval"].values()
                 if rs[0]["base_status"] == "pass" and rs[0]["plus_status"] == "pass")
    failed = sorted(t for t, rs in results["eval"].items()
                    if not (rs[0]["base_status"] == "pass" and rs[0]["plus_status"] == "pass"))
    return {"seconds": total, "expected_s": float(m.group(1)) if m else 0.0, "passed": passed,
            "failed": failed}


def run_distill(data: Path, cache: Path, workers: int) -> dict:
    os.environ["DISTILL_CACHE"] = str(cache)
    from distill.grading.benchmarks import get_benchmark
    from distill.grading.verify import verify_many

    t = time.perf_counter()
    problems = get_benchmark("humaneval_plus").load(str(data), None)
    load_s = time.perf_counter() - t
    items = [(p, f"```python\n{p['canonical_solution']}\n```") for p in problems]
    t = time.perf_counter()
    verdicts = verify_many(items, workers=workers)
    grade_s = time.perf_counter() - t
    return {"seconds": grade_s, "load_s": load_s, "passed": sum(v.ok for v in verdicts),
            "failed": [p["task_id"] for p, v in zip(problems, verdicts) if not v.ok],
            "inputs": sum(len(p["functional_tests"]["inputs"]) for p in problems)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--evalplus-python", default="/work/bench-envs/evalplus/bin/python")
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plain = tmp / "HumanEvalPlus.jsonl"
        with gzip.open(args.data, "rt") as f:
            tasks = [json.loads(line) for line in f if line.strip()]
        plain.write_text("".join(json.dumps(t) + "\n" for t in tasks))
        samples = tmp / "samples.jsonl"
        samples.write_text("".join(json.dumps({"task_id": t["task_id"], "solution": t["prompt"]
                                               + t["canonical_solution"]}) + "\n" for t in tasks))
        for r in range(args.repeat):
            cache_e, cache_d = tmp / f"evalplus-cache-{r}", tmp / f"distill-cache-{r}"
            e_first = run_evalplus(args.evalplus_python, plain, samples, cache_e, args.workers)
            d_first = run_distill(args.data, cache_d, args.workers)
            e_warm = run_evalplus(args.evalplus_python, plain, samples, cache_e, args.workers)
            d_warm = run_distill(args.data, cache_d, args.workers)
            rows.append((e_first, d_first, e_warm, d_warm))
            print(f"run {r}: evalplus {e_first['expected_s']:.1f} s expected + "
                  f"{e_warm['seconds']:.1f} s grading; distill {d_first['load_s']:.1f} s "
                  f"expected + {d_warm['seconds']:.1f} s grading", flush=True)

    print(f"HumanEval+ canonical solutions, {len(tasks)} tasks, "
          f"{rows[0][1]['inputs']} inputs, {args.workers} workers")
    print(f"{'run':>3} | {'phase':<26} | {'evalplus s':>10} | {'distill s':>9} | ratio")
    print("----|" + "-" * 28 + "|------------|-----------|------")
    for i, (e1, d1, e2, d2) in enumerate(rows):
        exp_e, exp_d = e1["expected_s"], d1["load_s"]
        print(f"{i:>3} | {'expected outputs':<26} | {exp_e:>10.1f} | {exp_d:>9.1f} | "
              f"{exp_d / exp_e:.2f}x")
        print(f"{i:>3} | {'grading (outputs cached)':<26} | {e2['seconds']:>10.1f} | "
              f"{d2['seconds']:>9.1f} | {d2['seconds'] / e2['seconds']:.2f}x")
    e2, d2 = rows[-1][2], rows[-1][3]
    print(f"passed: evalplus {e2['passed']}/{len(tasks)} (failed {e2['failed']}), "
          f"distill {d2['passed']}/{len(tasks)} (failed {d2['failed']})")
    print("distill runs every program in bubblewrap (no network, read-only system, private "
          "tmp, limits); evalplus runs them in plain subprocesses of the grading process.")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
