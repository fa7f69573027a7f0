"""HumanEval+ (evalplus v0.1.10: 164 tasks): the original `test` + `check(entry_point)`, then
every base and plus input compared with the canonical solution's outputs. A completion may be
a whole function or only its body (the task prompt is prepended either way). Reads the
release file (base_input, plus_input, atol) or the Hub layout of evalplus/humanevalplus, whose
`test` is a generated `check(candidate)` holding the base and plus inputs and results."""

from distill.eval.benchmark import Benchmark, fill, read_rows, user
from evals import _evalplus
from evals.humaneval import PROMPT  # the same tasks, asked the same way

HUB = "evalplus/humanevalplus"


def _hub_problem(r: dict) -> dict:
    return {
        "id": r["task_id"].replace("HumanEval", "humaneval_plus"),
        "task_id": r["task_id"],
        "source": "humaneval_plus",
        "messages": user(fill(PROMPT, prompt=r["prompt"])),
        "verifier": "code",
        "answer": None,
        "tests": _evalplus.hub_program(r["test"]) + f"\n\ncheck({r['entry_point']})\n",
        "entry_point": r["entry_point"],
        "code_prefix": r["prompt"],
        "timeout_s": _evalplus.HUB_TIMEOUT_S,
        "memory_mb": _evalplus.MEMORY_MB,
        "canonical_solution": r["canonical_solution"],
        "categories": {},
    }


def load(data_file: str | None = None, limit: int | None = None) -> list[dict]:
    rows = read_rows(data_file, HUB, split=None)[:limit]
    if rows and "base_input" not in rows[0] and "plus_input" not in rows[0]:
        return [_hub_problem(r) for r in rows]
    tasks = [{"task_id": r["task_id"], "code": r["prompt"] + r["canonical_solution"],
              "entry_point": r["entry_point"],
              "inputs": _evalplus.parse_inputs(r.get("base_input"))
              + _evalplus.parse_inputs(r.get("plus_input"))} for r in rows]
    expected = _evalplus.expected_outputs("humaneval_plus", tasks)
    problems = []
    for r, t in zip(rows, tasks):
        e = expected[r["task_id"]]
        tests = r["test"] + f"\n\ncheck({r['entry_point']})\n"
        problems.append({
            "id": r["task_id"].replace("HumanEval", "humaneval_plus"),
            "task_id": r["task_id"],
            "source": "humaneval_plus",
            "messages": user(fill(PROMPT, prompt=r["prompt"])),
            "verifier": "code",
            "answer": None,
            "tests": tests,
            "functional_tests": _evalplus.functional_tests(
                r["entry_point"], "humaneval", t["inputs"], e["expected"], float(r.get("atol") or 0)),
            "reference_times_s": e["times_s"],
            "entry_point": r["entry_point"],
            "code_prefix": r["prompt"],
            "timeout_s": _evalplus.timeout_for(e["times_s"]),
            "memory_mb": _evalplus.MEMORY_MB,
            "canonical_solution": r["canonical_solution"],
            "categories": {},
        })
    return problems


BENCHMARK = Benchmark(name="humaneval_plus", version="evalplus-v0.1.10", category="coding",
                      hub=HUB, load=load, scorer="code", prompt=PROMPT)
