"""MBPP, sanitized (google-research-datasets/mbpp, sanitized, test: 257 tasks, ids 11-510):
the task's description with its first assert as the signature hint; graded by the task's
`test_imports` and every assert of `test_list`."""

from distill.grading.benchmarks import CODE_INSTRUCTION, Benchmark, fill, read_rows, user

HUB = "google-research-datasets/mbpp"
PROMPT = "{prompt}\nYour code should pass this test:\n{test}\n" + CODE_INSTRUCTION


def _entry_point(test: str) -> str | None:
    import re
    m = re.search(r"assert\s+(?:not\s+)?\(?\s*(?:set\(|math\.isclose\()?\s*([A-Za-z_]\w*)\s*\(", test)
    return m.group(1) if m else None


def load(data_file: str | None = None, limit: int | None = None) -> list[dict]:
    rows = read_rows(data_file, HUB, config="sanitized")
    # A local copy of the sanitized file holds every split; the test split is ids 11-510.
    rows = [r for r in rows if 11 <= int(r["task_id"]) <= 510][:limit]
    return [{
        "id": f"mbpp/{r['task_id']}",
        "task_id": str(r["task_id"]),
        "source": "mbpp",
        "messages": user(fill(PROMPT, prompt=r["prompt"].strip(), test=r["test_list"][0])),
        "verifier": "code",
        "answer": None,
        "tests": "\n".join(list(r.get("test_imports") or []) + list(r["test_list"])) + "\n",
        "entry_point": _entry_point(r["test_list"][0]),
        "canonical_solution": r["code"],
        "categories": {},
    } for r in rows]


BENCHMARK = Benchmark(name="mbpp", version="google-research/mbpp-sanitized", category="coding",
                      hub=HUB, load=load, scorer="code", prompt=PROMPT)
