"""Grading speed: every HumanEval+ and MBPP+ canonical solution against all base and plus
inputs, distill (`distill score`, bubblewrap sandbox) versus evalplus (`evalplus.evaluate`, no
sandbox: a process per sample with a reliability guard), same samples, same parallelism, one
run, side by side.

Setup of the peer (a separate venv; evalplus is not a dependency of the project):

    python3 -m venv /work/bench-envs/evalplus
    /work/bench-envs/evalplus/bin/pip install evalplus==0.3.1

Run (from the repository root):

    PYTHONPATH=$PWD .venv/bin/python bench/eval_grading.py [--rounds 2] [--workers 2]

Both sides read the same local dataset files (evalplus through HUMANEVAL_OVERRIDE_PATH /
MBPP_OVERRIDE_PATH) and both cache the canonical solutions' expected outputs: a warm-up round
fills both caches and is not timed. Each timed round runs evalplus and distill alternately;
the table gives each side's median wall time, the tasks that passed, and the ratio.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "evalplus"
PEER = Path(os.environ.get("EVALPLUS_VENV", "/work/bench-envs/evalplus"))
SETS = {  # distill benchmark -> (evalplus dataset, data file, override variable)
    "humaneval_plus": ("humaneval", DATA / "HumanEvalPlus-v0.1.10.jsonl.gz", "HUMANEVAL_OVERRIDE_PATH"),
    "mbpp_plus": ("mbpp", DATA / "MbppPlus-v0.2.0.jsonl.gz", "MBPP_OVERRIDE_PATH"),
}


def write_samples(bench: str, out: Path) -> int:
    _, path, _ = SETS[bench]
    rows = [json.loads(line) for line in gzip.open(path, "rt")]
    with open(out, "w") as f:
        for r in rows:
            code = r["canonical_solution"]
            if bench == "humaneval_plus":  # a HumanEval canonical solution is a body
                code = r["prompt"] + code
            f.write(json.dumps({"task_id": r["task_id"], "solution": code}) + "\n")
    return len(rows)


def run_evalplus(bench: str, samples: Path, workers: int) -> tuple[float, int]:
    dataset, path, var = SETS[bench]
    env = {**os.environ, var: str(path)}
    result = samples.with_name(samples.stem + "_eval_results.json")
    result.unlink(missing_ok=True)  # evalplus asks on stdin before overwriting it
    t = time.perf_counter()
    subprocess.run([str(PEER / "bin" / "evalplus.evaluate"), "--dataset", dataset,
                    "--samples", str(samples), "--parallel", str(workers),
                    "--i-just-wanna-run"], env=env, check=True, capture_output=True)
    took = time.perf_counter() - t
    results = json.loads(result.read_text())
    passed = sum(all(r["base_status"] == r["plus_status"] == "pass" for r in rs)
                 for rs in results["eval"].values())
    return took, passed


def run_distill(bench: str, samples: Path, workers: int) -> tuple[float, int]:
    _, path, _ = SETS[bench]
    out = samples.with_name(f"{samples.stem}.{bench}.results.json")
    out.unlink(missing_ok=True)  # its per-sample cache would skip the grading
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "distill.cli", "score", bench, "--samples",
                    str(samples), "--data-file", str(path), "--workers", str(workers)],
                   check=True, capture_output=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    took = time.perf_counter() - t
    passed = sum(s["correct"] for s in json.loads(out.read_text())["samples"])
    return took, passed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--bench", nargs="*", default=list(SETS))
    args = ap.parse_args()
    if not (PEER / "bin" / "evalplus.evaluate").exists():
        sys.exit(f"evalplus not found in {PEER}; see this script's docstring to create it")

    tmp = Path(tempfile.mkdtemp(prefix="eval-grading-"))
    rows = []
    for bench in args.bench:
        samples = tmp / f"{bench}.jsonl"
        n = write_samples(bench, samples)
        run_evalplus(bench, samples, args.workers)   # warm-up: both ground-truth caches
        run_distill(bench, samples, args.workers)
        times = {"evalplus": [], "distill": []}
        passed = {}
        for _ in range(args.rounds):
            for side, fn in (("evalplus", run_evalplus), ("distill", run_distill)):
                took, ok = fn(bench, samples, args.workers)
                times[side].append(took)
                passed[side] = ok
            print(f"{bench}: evalplus {times['evalplus'][-1]:.1f} s, "
                  f"distill {times['distill'][-1]:.1f} s", flush=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append((bench, n, passed, med))

    print(f"\n{'benchmark':<16} {'tasks':>5} {'evalplus s':>10} {'pass':>5} "
          f"{'distill s':>10} {'pass':>5} {'ratio':>6}")
    total = {"evalplus": 0.0, "distill": 0.0}
    for bench, n, passed, med in rows:
        total = {k: total[k] + med[k] for k in total}
        print(f"{bench:<16} {n:>5} {med['evalplus']:>10.1f} {passed['evalplus']:>5} "
              f"{med['distill']:>10.1f} {passed['distill']:>5} "
              f"{med['distill'] / med['evalplus']:>5.2f}x")
    print(f"{'both':<16} {'':>5} {total['evalplus']:>10.1f} {'':>5} {total['distill']:>10.1f} "
          f"{'':>5} {total['distill'] / total['evalplus']:>5.2f}x")
    print(f"(median of {args.rounds} rounds, {args.workers} workers each; distill: bubblewrap "
          "sandbox per job, evalplus: no sandbox)")


if __name__ == "__main__":
    main()
