"""A sweep on the toy world: its wall time, and the speedup of running variants concurrently
against one after the other on this machine.

    PYTHONPATH=. .venv/bin/python bench/sweep.py [--sizes 250,500,1000] \
        [--students toy:student,toy:student-l] [--concurrency 2] [--dir /tmp/distill-sweep-bench]

1. `distill sweep smoke --over train.max_examples=SIZES --over train.student=STUDENTS
   --stages prompts,generate,filter`, from nothing: the shared part, once for every variant;
2. the same with `--stages train,evaluate,publish` at sweep.concurrency = CONCURRENCY: the
   per-variant part; 1 + 2 is the whole sweep's wall time;
3. the variants' train, eval, publish and report folders removed (the shared stages kept), the
   per-variant part again one variant at a time (concurrency 1): against 2, the speedup of
   running variants concurrently, on the same machine, back to back.

Nothing else should run on the machine meanwhile. Prints a Markdown table (and --out JSON).
The toy teacher is trained once into the distill cache first if it is not there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PER_VARIANT = ("train", "eval", "publish", "report")
SHARED, PER_VARIANT_STAGES = "prompts,generate,filter", "train,evaluate,publish"


def sweep(args, run_dir: Path, concurrency: int, stages: str) -> float:
    cmd = [sys.executable, "-m", "distill.cli", "sweep", "smoke", "--run-dir", str(run_dir),
           "--over", f"train.max_examples={args.sizes}", "--over", f"train.student={args.students}",
           "-o", f"sweep.concurrency={concurrency}", "--stages", stages]
    t0 = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.time() - t0


def wipe_per_variant(run_dir: Path) -> None:
    for variant in (run_dir / "variants").iterdir():
        for name in PER_VARIANT:
            path = variant / name
            if path.is_symlink():
                path.unlink()
            elif path.exists():
                shutil.rmtree(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="250,500,1000")
    p.add_argument("--students", default="toy:student,toy:student-l")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--dir", type=Path, default=Path("/tmp/distill-sweep-bench"))
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    subprocess.run([sys.executable, "-c", "from distill.toy import resolve_model as r; "
                    "r('toy:teacher'); [r(s) for s in %r.split(',')]" % args.students],
                   check=True, cwd=ROOT)
    shutil.rmtree(args.dir, ignore_errors=True)
    n = len(args.sizes.split(",")) * len(args.students.split(","))
    at_once, one = f"per-variant part, {args.concurrency} at once", "per-variant part, one at a time"
    rows = {"shared part (prompts, generate, filter)": sweep(args, args.dir, 1, SHARED)}
    rows[at_once] = sweep(args, args.dir, args.concurrency, PER_VARIANT_STAGES)
    rows["whole sweep"] = rows["shared part (prompts, generate, filter)"] + rows[at_once]
    shutil.copytree(args.dir / "report", args.dir.with_name(args.dir.name + "-map"), dirs_exist_ok=True)
    wipe_per_variant(args.dir)
    rows[one] = sweep(args, args.dir, 1, PER_VARIANT_STAGES)
    speedup = rows[one] / rows[at_once]
    print(f"\n{n} variants ({args.sizes} traces x {args.students}); {os.cpu_count()} cores, "
          f"{platform.processor() or platform.machine()}\n")
    print("| what | wall s |\n|---|---:|")
    for what, seconds in rows.items():
        print(f"| {what} | {seconds:.0f} |")
    print(f"\nspeedup of {args.concurrency} at once over one at a time: {speedup:.2f}x")
    print(f"map of the concurrent run: {args.dir.with_name(args.dir.name + '-map') / 'map.md'}")
    if args.out:
        args.out.write_text(json.dumps({"variants": n, "seconds": rows, "speedup": speedup,
                                        "cores": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    main()
