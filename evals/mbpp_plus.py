"""MBPP+ (evalplus v0.2.0: 378 tasks): the task's base `assertion`s, then every base and plus
input compared with the canonical solution's outputs. Reads the release file (task_id
"Mbpp/N", canonical_solution, base_input, plus_input, assertion) or the Hub layout of
evalplus/mbppplus (int task_id, code, prompt, test_imports, test_list and a `test` program
holding the inputs and expected results; its one split is `train` or `test` by revision)."""

from distill.grading.benchmarks import CODE_INSTRUCTION, Benchmark, fill, read_rows, user
from evals import _evalplus

HUB = "evalplus/mbppplus"
PROMPT = "{prompt}\n" + CODE_INSTRUCTION


def _as_tuples(task_id: str, inputs: list) -> list:
    """JSON has no tuples, sets or complex numbers: evalplus restores them per task
    (evalplus.data.mbpp.mbpp_deserialize_inputs)."""
    n = int(task_id.split("/")[-1])
    if n in (2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616,
             630, 726, 740, 744, 809):
        return [[tuple(x) for x in inp] for inp in inputs]
    if n in (63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780):
        return [[[tuple(x) for x in xs] for xs in inp] for inp in inputs]
    if n in (75, 413, 444, 753):
        return [[[tuple(x) for x in inp[0]]] + [inp[1]] for inp in inputs]
    if n in (106, 750):
        return [[inp[0]] + [tuple(inp[1])] for inp in inputs]
    if n == 115:
        return [[[set(x) if isinstance(x, list) and len(x) else {} for x in inp[0]]]
                for inp in inputs]
    if n == 124:
        return [(float(inp[0]), complex(inp[1])) for inp in inputs]
    if n in (250, 405, 446, 617, 720, 763, 808):
        return [[tuple(inp[0])] + [inp[1]] for inp in inputs]
    if n in (259, 401, 445):
        nested = [[[tuple(x) for x in xs] for xs in inp] for inp in inputs]
        return [[tuple(x) for x in inp] for inp in nested]
    if n == 278:
        nested = [[[tuple(x) if isinstance(x, list) else x for x in inp[0]]] for inp in inputs]
        return [[tuple(x) for x in inp] for inp in nested]
    if n == 307:
        return [[tuple(inp[0])] + [inp[1], inp[2]] for inp in inputs]
    if n == 722:
        return [[{k: tuple(v) for k, v in inp[0].items()}] + inp[1:] for inp in inputs]
    if n == 252:
        return [[complex(inp[0])] for inp in inputs]
    if n in (580, 615, 791):
        def deep(x):
            return tuple(deep(i) for i in x) if isinstance(x, list) else x
        return [deep(inp) for inp in inputs]
    return inputs


def _prompt(text: str) -> str:
    return text.strip().strip('"').strip()


def _hub_problem(r: dict) -> dict:
    """A Hub row: its `test` program holds every base and plus input, so it is the test."""
    n = int(r["task_id"])
    first = (r["test_list"] or [None])[0]
    question = r["prompt"].strip() + (f"\n{first}" if first else "")  # as the release asks
    return {
        "id": f"mbpp_plus/{n}",
        "task_id": f"Mbpp/{n}",
        "source": "mbpp_plus",
        "messages": user(fill(PROMPT, prompt=question)),
        "verifier": "code",
        "answer": None,
        "tests": "".join(f"{line}\n" for line in r["test_imports"] or [])
                 + _evalplus.hub_program(r["test"]),
        "entry_point": _evalplus.entry_point(r["code"], first),
        "timeout_s": _evalplus.HUB_TIMEOUT_S,
        "memory_mb": _evalplus.MEMORY_MB,
        "canonical_solution": r["code"],
        "categories": {},
    }


def load(data_file: str | None = None, limit: int | None = None) -> list[dict]:
    rows = read_rows(data_file, HUB, split=None)[:limit]
    if rows and "canonical_solution" not in rows[0] and "code" in rows[0]:
        return [_hub_problem(r) for r in rows]
    tasks = [{"task_id": r["task_id"], "code": r["canonical_solution"],
              "entry_point": r["entry_point"],
              "inputs": _as_tuples(r["task_id"], _evalplus.parse_inputs(r.get("base_input"))
                                   + _evalplus.parse_inputs(r.get("plus_input")))}
             for r in rows]
    expected = _evalplus.expected_outputs("mbpp_plus", tasks)
    problems = []
    for r, t in zip(rows, tasks):
        e = expected[r["task_id"]]
        # The base asserts use math.isclose without importing math.
        base = "import math\n" + (r.get("assertion") or r.get("test") or "")
        tests = base
        problems.append({
            "id": r["task_id"].replace("Mbpp", "mbpp_plus"),
            "task_id": r["task_id"],
            "source": "mbpp_plus",
            "messages": user(fill(PROMPT, prompt=_prompt(r["prompt"]))),
            "verifier": "code",
            "answer": None,
            "tests": tests,
            "functional_tests": _evalplus.functional_tests(
                r["entry_point"], "mbpp", t["inputs"], e["expected"], float(r.get("atol") or 0)),
            "reference_times_s": e["times_s"],
            "entry_point": r["entry_point"],
            "timeout_s": _evalplus.timeout_for(e),
            "memory_mb": _evalplus.MEMORY_MB,
            "canonical_solution": r["canonical_solution"],
            "categories": {},
        })
    return problems


BENCHMARK = Benchmark(name="mbpp_plus", version="evalplus-v0.2.0", category="coding", hub=HUB,
                      load=load, scorer="code", prompt=PROMPT)
