"""A grader that fails is not a wrong answer: a sandbox that died or could not set up, or a
math-verify worker that crashed, gives a Verdict with `infra`, which the filter stage does not
keep as final and the eval stage grades again instead of scoring."""

import importlib
import sys

import pytest

from distill.grading import sandbox
from distill.grading.pool import Pool
from distill.config import Recipe
from distill.filters import run_filter
from distill.records import Stage

code = importlib.import_module("distill.grading.code")
verify_mod = importlib.import_module("distill.grading.verify")

ADD = {"id": "add", "verifier": "code", "entry_point": "f", "tests": "assert f(2) == 3"}
ADD_STDIO = {"id": "echo", "verifier": "code", "stdio_tests": [{"input": "1\n", "output": "1\n"}]}
SOLUTION = "```python\ndef f(x):\n    return x + 1\n```"


@pytest.mark.parametrize("result, infra, reason", [
    (sandbox.Result("error", None, "", "sandbox died during the run", 0.4), True,
     "sandbox died during the run"),
    (sandbox.Result("error", None, "", "cannot place the program's files: [Errno 28]", 0.0), True,
     "cannot place the program's files"),
    (sandbox.Result("timeout", None, "", "sandbox stopped answering", 20.0), True,
     "sandbox stopped answering"),
    (sandbox.Result("timeout", None, "", "", 10.0), False, "timeout"),      # the program's
    (sandbox.Result("error", 137, "", "", 0.3), False, "killed by signal 9"),
    (sandbox.Result("fail", 1, "", "AssertionError", 0.1), False, "AssertionError"),
    (sandbox.Result("memory", 1, "", "MemoryError", 0.1), False, "memory"),
])
@pytest.mark.parametrize("problem", [ADD, ADD_STDIO])
def test_a_sandbox_that_dies_is_the_graders_failure_not_the_answers(monkeypatch, result, infra,
                                                                     reason, problem):
    monkeypatch.setattr(code.sandbox, "run_python", lambda *a, **kw: result)
    v = code.verify_code(problem, SOLUTION)
    assert not v.ok and v.infra is infra and v.reason.startswith(reason)


def _workers_that_die_on(word: str) -> Pool:
    """Math worker processes that serve as the real ones but exit on an answer with `word`."""
    script = ("import importlib, os, sys\n"
              "v = importlib.import_module('distill.grading.verify')\n"
              "class Lines:\n"
              "    def __iter__(self):\n"
              "        for line in sys.__stdin__:\n"
              f"            if {word!r} in line:\n"
              "                os._exit(9)\n"
              "            yield line\n"
              "sys.stdin = Lines()\n"
              "v._serve()\n")

    return Pool(lambda _key: verify_mod._MathWorker([sys.executable, "-c", script]))


def test_a_crashed_math_worker_is_the_graders_failure_and_the_rest_are_graded(monkeypatch):
    monkeypatch.setattr(verify_mod, "_workers", _workers_that_die_on("CRASH"))
    half = {"id": "half", "verifier": "math", "answer": "\\frac{1}{2}"}
    items = [(half, "\\boxed{0.5}"), (half, "\\boxed{3} CRASH"), (half, "\\boxed{1/2}"),
             (half, "\\boxed{2}")]
    verdicts = verify_mod.verify_many(items, workers=1)
    assert [(v.ok, v.infra) for v in verdicts] == [(True, False), (False, True), (True, False),
                                                   (False, False)]
    assert verdicts[1].reason == "math verification worker died"


def _recipe() -> Recipe:
    return Recipe.model_validate({
        "run": {"name": "t"},
        "prompts": {"sources": [{"name": "m", "kind": "jsonl", "category": "reasoning",
                                 "path": "x.jsonl"}]},
        "teacher": {"model": "toy:teacher"},
        "filter": {"decontaminate": "none", "dedup": "none", "workers": 1},
        "train": {"student": "toy:student"},
        "eval": {"benchmarks": ["toy_arith"]},
    })


def test_the_filter_does_not_keep_a_verdict_the_grader_failed_to_give(tmp_path, monkeypatch):
    problem = {"prompt_id": "pm", "source": "m", "category": "reasoning", "verifier": "math",
               "answer": "13", "messages": [{"role": "user", "content": "6+7?"}]}
    with Stage(tmp_path, "generate").writer() as w:
        contents = ["So \\boxed{13}.", "So \\boxed{13}. CRASH", "So \\boxed{12}."]
        for i, content in enumerate(contents):
            w.write({"id": f"g{i}", **problem, "content": content,
                     "reasoning": f"r{i}", "finish_reason": "stop"})
    monkeypatch.setattr(verify_mod, "_workers", _workers_that_die_on("CRASH"))
    counts = run_filter(_recipe(), tmp_path)
    assert counts["kept"] == 1
    verdicts = {r["id"]: r for r in Stage(tmp_path, "filter").read()}
    assert verdicts["g1"]["reasons"]["verify"] == "not graded: math verification worker died"
    assert len(list(Stage(tmp_path, "filter/verdicts").read())) == 2      # g0 and g2 only
    assert Stage(tmp_path, "filter").manifest()["verified"] == {"graded": 3, "stored": 0,
                                                                "not_graded": 1}

    # With a working grader the next run grades only g1, and keeps it.
    monkeypatch.undo()
    counts = run_filter(_recipe(), tmp_path)
    assert counts["kept"] == 2
    assert Stage(tmp_path, "filter").manifest()["verified"] == {"graded": 1, "stored": 2}
