"""Math verification throughput: answers to MATH-500 checked through distill's verifier
(`verify_many`: answer extraction, gold wrapped in \\boxed{}, math-verify in killable worker
processes with a hard timeout) versus calling math-verify directly in one process (parse the
gold and the answer, `verify(gold, answer)`), side by side in one run, same answers.

    PYTHONPATH=. .venv/bin/python bench/math_verify_throughput.py --repeat 2

The answers: for every problem its gold answer in a sentence ("so the answer is
\\boxed{...}") and a wrong one (the next problem's answer), 1,000 checks per pass. Prints
checks per second for each side, agreement of the verdicts, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "math500" / "test.jsonl"


def items(path: Path) -> list[tuple[dict, str]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = []
    for i, r in enumerate(rows):
        problem = {"id": r["unique_id"], "verifier": "math", "answer": r["answer"]}
        wrong = rows[(i + 1) % len(rows)]["answer"]
        out.append((problem, f"Working... so the answer is \\boxed{{{r['answer']}}}."))
        out.append((problem, f"Working... so the answer is \\boxed{{{wrong}}}."))
    return out


def direct(pairs: list[tuple[dict, str]]) -> tuple[float, list[bool]]:
    from math_verify import parse, verify

    start = time.perf_counter()
    verdicts = []
    for problem, answer in pairs:
        gold = parse("\\boxed{" + problem["answer"] + "}")
        verdicts.append(bool(verify(gold, parse(answer))))
    return time.perf_counter() - start, verdicts


def through_distill(pairs: list[tuple[dict, str]], workers: int) -> tuple[float, list[bool]]:
    from distill.grading.verify import verify_many

    start = time.perf_counter()
    verdicts = [v.ok for v in verify_many(pairs, workers=workers)]
    return time.perf_counter() - start, verdicts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    pairs = items(args.data)
    n = len(pairs)
    print(f"{n} math-verify checks per pass (MATH-500 gold and wrong answers)")
    print(f"{'run':>3} | {'side':<28} | {'seconds':>7} | {'checks/s':>8} | vs direct")
    for r in range(args.repeat):
        t_direct, v_direct = direct(pairs)
        t_one, v_one = through_distill(pairs, 1)
        t_two, v_two = through_distill(pairs, 2)
        print(f"{r:>3} | {'math-verify direct, 1 process':<28} | {t_direct:>7.1f} | "
              f"{n / t_direct:>8.0f} | 1.00x")
        print(f"{r:>3} | {'distill verify_many, 1 worker':<28} | {t_one:>7.1f} | "
              f"{n / t_one:>8.0f} | {t_direct / t_one:.2f}x")
        print(f"{r:>3} | {'distill verify_many, 2 workers':<28} | {t_two:>7.1f} | "
              f"{n / t_two:>8.0f} | {t_direct / t_two:.2f}x")
        agree = sum(a == b for a, b in zip(v_direct, v_one))
        print(f"    verdicts agree on {agree}/{n}; distill accepts {sum(v_one)}, "
              f"direct accepts {sum(v_direct)}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
