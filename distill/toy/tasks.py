"""Synthetic task families for the CPU world, each with a gold response the teacher trains on.

- `arith` (category reasoning): two-digit addition with a digit-by-digit carry trace inside
  `<think>`, final answer in `\\boxed{}`, verified with math-verify like any math answer.
- `code` (category coding): write a one-line Python function from a description, graded by
  running assert tests in the sandbox.

Every family enumerates its whole task space deterministically and splits it by a hash of the
prompt: one task in ten belongs to the `eval` split, never to `train`, so the toy benchmarks
are not contaminated by training prompts.
"""

from __future__ import annotations

import hashlib
import random
from typing import Callable

CATEGORIES = {"arith": "reasoning", "mult": "reasoning", "code": "coding"}


def _split_of(prompt: str) -> str:
    return "eval" if int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 10 == 0 else "train"


def _arith(a: int, b: int) -> dict:
    prompt = f"What is {a}+{b}?"
    steps, carry = [], 0
    da, db = str(a)[::-1], str(b)[::-1]
    for i in range(max(len(da), len(db))):
        x, y = int(da[i]) if i < len(da) else 0, int(db[i]) if i < len(db) else 0
        s = x + y + carry
        steps.append(f"{x}+{y}+{carry}={s}" if carry else f"{x}+{y}={s}")
        carry = s // 10
    carries = sum(1 for s in steps if int(s.split("=")[1]) >= 10)
    answer = str(a + b)
    reasoning = ", ".join(steps) + f", so {answer}"
    return {
        "prompt": prompt,
        "subcategory": f"carries={carries}",
        "verifier": "math",
        "answer": answer,
        "tests": None,
        "reference": f"<think>{reasoning}</think>The answer is \\boxed{{{answer}}}.",
    }


def _mult(a: int, b: int) -> dict:
    """a (2 or 3 digits) times b (one digit), digit by digit from the right: each digit's
    product from the times table, then the carry of the digit before added to it, e.g. 347*6:
    `7*6=42, 4*6=24, 24+4=28, 3*6=18, 18+2=20, so 2082`."""
    prompt = f"What is {a}*{b}?"
    steps, carry = [], 0
    for d in str(a)[::-1]:
        p = int(d) * b
        steps.append(f"{d}*{b}={p}")
        if carry:
            steps.append(f"{p}+{carry}={p + carry}")
        carry = (p + carry) // 10
    answer = str(a * b)
    reasoning = ", ".join(steps) + f", so {answer}"
    return {
        "prompt": prompt,
        "subcategory": f"digits={len(str(a))}",
        "verifier": "math",
        "answer": answer,
        "tests": None,
        "reference": f"<think>{reasoning}</think>The answer is \\boxed{{{answer}}}.",
    }


_OPS: dict[str, tuple[str, str, Callable[[int, int], int]]] = {
    # op: (description, expression, function)
    "plus": ("x plus {a}", "x + {a}", lambda x, a: x + a),
    "minus": ("x minus {a}", "x - {a}", lambda x, a: x - a),
    "times": ("x times {a}", "x * {a}", lambda x, a: x * a),
    "max": ("the larger of x and {a}", "max(x, {a})", lambda x, a: max(x, a)),
    "min": ("the smaller of x and {a}", "min(x, {a})", lambda x, a: min(x, a)),
}


def _code(op: str, a: int) -> dict:
    desc, expr, fn = _OPS[op]
    desc, expr = desc.format(a=a), expr.format(a=a)
    prompt = f"Write a Python function f(x) that returns {desc}."
    xs = [0, 3, -7, a, 2 * a + 1]
    tests = "\n".join(f"assert f({x}) == {fn(x, a)}" for x in xs)
    return {
        "prompt": prompt,
        "subcategory": op,
        "verifier": "code",
        "answer": None,
        "tests": tests,
        "entry_point": "f",
        "reference": f"<think>f returns {expr}</think>```python\ndef f(x):\n    return {expr}\n```",
    }


def _space(family: str) -> list[dict]:
    if family == "arith":
        return [_arith(a, b) for a in range(10, 100) for b in range(10, 100)]
    if family == "mult":
        return [_mult(a, b) for a in range(10, 1000) for b in range(2, 10)]
    if family == "code":
        return [_code(op, a) for op in _OPS for a in range(1, 200)]
    raise KeyError(family)


def make_tasks(family: str, count: int | None, seed: int, split: str = "train") -> list[dict]:
    """`count` tasks of one family from one split, drawn without replacement with `seed`."""
    if family not in CATEGORIES:
        raise KeyError(f"unknown toy family {family!r}; known: {sorted(CATEGORIES)}")
    pool = [t for t in _space(family) if _split_of(t["prompt"]) == split]
    random.Random(seed).shuffle(pool)
    out = []
    for t in pool[:count] if count is not None else pool:
        out.append({
            "family": family,
            "category": CATEGORIES[family],
            "messages": [{"role": "user", "content": t["prompt"]}],
            **{k: v for k, v in t.items() if k != "prompt"},
        })
    return out
