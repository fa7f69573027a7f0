"""HumanEval+ (evalplus v0.1.10: 164 tasks): the original `test` + `check(entry_point)`, then
every base and plus input compared with the canonical solution's outputs. A completion may be
a whole function or only its body (the task prompt is prepended either way). Reads the
release file (base_input, plus_input, atol) or the Hub layout of evalplus/humanevalplus, whose
`test` is a generated `check(candidate)` holding the base and plus inputs and results."""

from distill.grading.benchmarks import Benchmark, fill, read_rows, user
from evals import _evalplus
from evals.humaneval import PROMPT  # the same tasks, asked the same way

HUB = "evalplus/humanevalplus"


def _problem(r: dict, **tests) -> dict:
    """A task as a problem; `tests` are its tests and their limits, by layout."""
    return {
        "id": r["task_id"].replace("HumanEval", "humaneval_plus"),
        "task_id": r["task_id"],
        "source": "humaneval_plus",
        "messages": user(fill(PROMPT, prompt=r["prompt"])),
        "verifier": "code",
        "answer": None,
        "entry_point": r["entry_point"],
        "code_prefix": r["prompt"],
        "memory_mb": _evalplus.MEMORY_MB,
        "canonical_solution": r["canonical_solution"],
        "categories": {},
        **tests,
    }


def load(data_file: str | None = None, limit: int | None = None) -> list[dict]:
    rows = read_rows(data_file, HUB, split=None)[:limit]
    if rows and "base_input" not in rows[0] and "plus_input" not in rows[0]:
        # The Hub layout: `test` is a check(candidate) program holding the inputs and results.
        return [_problem(r, tests=_evalplus.hub_program(r["test"]) + f"\n\ncheck({r['entry_point']})\n",
                         timeout_s=_evalplus.HUB_TIMEOUT_S) for r in rows]
    tasks = [{"task_id": r["task_id"], "code": r["prompt"] + r["canonical_solution"],
              "entry_point": r["entry_point"],
              "inputs": _evalplus.parse_inputs(r.get("base_input"))
              + _evalplus.parse_inputs(r.get("plus_input"))} for r in rows]
    expected = _evalplus.expected_outputs("humaneval_plus", tasks)
    problems = []
    for r, t in zip(rows, tasks):
        e = expected[r["task_id"]]
        problems.append(_problem(
            r, tests=r["test"] + f"\n\ncheck({r['entry_point']})\n",
            functional_tests=_evalplus.functional_tests(
                r["entry_point"], "humaneval", t["inputs"], e["expected"], float(r.get("atol") or 0)),
            reference_times_s=e["times_s"], timeout_s=_evalplus.timeout_for(e)))
    return problems


BENCHMARK = Benchmark(name="humaneval_plus", version="evalplus-v0.1.10", category="coding",
                      hub=HUB, load=load, scorer="code", prompt=PROMPT)
