"""HumanEval (openai/openai_humaneval, test: 164 tasks): the completion, after the task's
prompt, must pass the original `test` + `check(entry_point)`. A completion may be a whole
function or only its body (the prompt is prepended either way)."""

from distill.grading.benchmarks import CODE_INSTRUCTION, Benchmark, fill, read_rows, user

HUB = "openai/openai_humaneval"
PROMPT = "Complete the following Python function.\n```python\n{prompt}```\n" + CODE_INSTRUCTION


def load(data_file: str | None = None, limit: int | None = None) -> list[dict]:
    rows = read_rows(data_file, HUB)[:limit]
    return [{
        "id": r["task_id"].replace("HumanEval", "humaneval"),
        "task_id": r["task_id"],
        "source": "humaneval",
        "messages": user(fill(PROMPT, prompt=r["prompt"])),
        "verifier": "code",
        "answer": None,
        "tests": r["test"] + f"\n\ncheck({r['entry_point']})\n",
        "entry_point": r["entry_point"],
        "code_prefix": r["prompt"],
        "canonical_solution": r["canonical_solution"],
        "categories": {},
    } for r in rows]


BENCHMARK = Benchmark(name="humaneval", version="openai/human-eval@6d43fb9", category="coding",
                      hub=HUB, load=load, scorer="code", prompt=PROMPT)
