"""The shared scorer and the filter stage, on hand-made answers and generation records."""

import importlib
import json
import random
import shutil
from pathlib import Path

import pytest

from distill.config import Recipe
from distill.errors import InputError
from distill.filters import quality, run_filter
from distill.grading.verify import verify, verify_many
verify_mod = importlib.import_module("distill.grading.verify")
from distill.filters.dedup import duplicates
from distill.records import RunDir, Stage

DATA = Path(__file__).parents[1].parent / "shared" / "data"
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed")

HALF = {"id": "half", "verifier": "math", "answer": "\\frac{1}{2}"}
ADD = {"id": "add", "verifier": "code", "entry_point": "f", "tests": "assert f(2) == 3\nassert f(0) == 1"}


@pytest.mark.parametrize("content, ok", [
    ("so the answer is \\boxed{\\frac{1}{2}}", True),
    ("\\boxed{0.5}", True),
    ("\\boxed{1/2}", True),
    ("first \\boxed{3}, no wait: \\boxed{\\dfrac{1}{2}}", True),
    ("The answer is 0.5.", True),
    ("\\boxed{0.6}", False),
    ("\\boxed{2}", False),
])
def test_math_answers(content, ok):
    assert verify(HALF, content).ok is ok


def test_math_reasons():
    assert verify(HALF, "I am not sure.").reason == "no \\boxed answer"
    assert verify({"verifier": "math", "answer": "13"}, "\\boxed{12}").reason == \
        "wrong answer: got 12, want 13"
    assert verify(HALF, "\\boxed{\\frac{1}{2}}").reason == "ok"


def test_nested_braces_in_boxed():
    assert verify_mod.last_boxed("x \\boxed{\\frac{a}{b^{2}}} y") == "\\frac{a}{b^{2}}"


def test_gold_that_does_not_parse_fails_loudly():
    with pytest.raises(ValueError, match="does not parse"):
        verify({"id": "bad", "verifier": "math", "answer": "\\text{}"}, "\\boxed{1}")


@needs_bwrap
def test_code_answers_and_reasons():
    assert verify(ADD, "Here:\n```python\ndef f(x):\n    return x + 1\n```").ok
    assert verify(ADD, "def f(x):\n    return x + 1").ok          # no fence: whole text
    assert verify(ADD, "```python\ndef f(x):\n    return x\n```").reason == "AssertionError"
    assert verify(ADD, "```python\nwhile True: pass\n```", timeout_s=1).reason == "timeout"
    assert verify(ADD, "```\ndef g(x):\n    return x\n```").reason.startswith("NameError")


@needs_bwrap
def test_verify_many_keeps_order_and_mixes_kinds():
    items = [(HALF, "\\boxed{0.5}"), (ADD, "def f(x): return x + 1"), (HALF, "\\boxed{7}"),
             (ADD, "def f(x): return x")]
    assert [v.ok for v in verify_many(items, workers=2)] == [True, True, False, False]


def test_stuck_math_worker_is_killed(monkeypatch):
    # A limit shorter than a fresh worker's start-up behaves like a hung sympy call.
    verify_mod.close_math_workers()
    monkeypatch.setattr(verify_mod, "MATH_HARD_TIMEOUT_S", 0.01)
    assert [v.reason for v in verify_many([(HALF, "\\boxed{0.5}")], workers=1)] == ["timeout"]


def test_quality_checks():
    assert quality.truncated({"finish_reason": "length"})
    assert quality.truncated({"finish_reason": "stop"}) is None
    assert quality.think({"reasoning": None, "content": "x"}) == "no <think> block"
    assert quality.think({"reasoning": "a</think>b", "content": "x"}) == "unbalanced <think> tags"
    assert quality.think({"reasoning": "fine", "content": "<think>x"}) == "unbalanced <think> tags"
    assert quality.think({"reasoning": "fine", "content": "x"}) is None
    assert quality.empty({"content": "  \n"}) == "empty answer"


def test_dedup_normalises_whitespace_and_keeps_first_id():
    gens = [{"id": "b", "prompt_id": "p", "reasoning": "r  1", "content": "x"},
            {"id": "a", "prompt_id": "p", "reasoning": "r 1", "content": "x "},
            {"id": "c", "prompt_id": "q", "reasoning": "r 1", "content": "x"}]
    assert duplicates(gens) == {"b": "a"}


def _recipe(**filter_cfg) -> Recipe:
    return Recipe.model_validate({
        "run": {"name": "t"},
        "prompts": {"sources": [{"name": "s", "kind": "toy", "category": "reasoning"}]},
        "teacher": {"model": "toy:teacher"},
        "filter": {"code_timeout_s": 2, "decontaminate": "none", **filter_cfg},
        "train": {"student": "toy:student"},
        "eval": {"benchmarks": ["toy_arith"]},
    })


MATH_P = {"prompt_id": "pm", "source": "mathsrc", "category": "reasoning", "verifier": "math",
          "answer": "13", "messages": [{"role": "user", "content": "6+7?"}]}
CODE_P = {"prompt_id": "pc", "source": "codesrc", "category": "coding", "verifier": "code",
          "entry_point": "f", "tests": ADD["tests"],
          "messages": [{"role": "user", "content": "write f"}]}


def _gen(gid, problem, content, reasoning="think", finish="stop"):
    return {"id": gid, **problem, "content": content, "reasoning": reasoning,
            "finish_reason": finish}


GENERATIONS = [
    _gen("g01", MATH_P, "So \\boxed{13}."),                            # kept
    _gen("g02", MATH_P, "So  \\boxed{13}. "),                          # dedup (of g01)
    _gen("g03", MATH_P, "So \\boxed{12}."),                            # verify: wrong
    _gen("g04", MATH_P, "So \\boxed{1", finish="length"),              # truncated
    _gen("g05", MATH_P, "\\boxed{13}", reasoning=None),                # think
    _gen("g06", MATH_P, "   "),                                        # empty
    _gen("g07", CODE_P, "```python\ndef f(x):\n    return x + 1\n```"),  # kept
    _gen("g08", CODE_P, "```python\ndef f(x):\n    return x\n```"),    # verify: assertion
    _gen("g09", CODE_P, "```python\nwhile True:\n    pass\n```"),      # verify: timeout
    _gen("g10", MATH_P, "The answer is \\boxed{13}.", reasoning="other"),  # select: over k
    _gen("g11", MATH_P, "It is thirteen."),                            # answer: none
]


@needs_bwrap
def test_filter_stage_counts(tmp_path):
    with Stage(tmp_path, "generate").writer() as w:
        for g in GENERATIONS:
            w.write(g)
    counts = run_filter(_recipe(max_per_prompt=1), tmp_path)
    assert counts["total"] == 11 and counts["kept"] == 2 and counts["kept_fraction"] == 0.1818
    assert counts["rejected"] == {"truncated": 1, "think": 1, "empty": 1, "answer": 1,
                                  "verify": 3, "dedup": 1, "select": 1}
    assert list(counts["rejected"]) == ["truncated", "think", "empty", "answer", "verify",
                                        "dedup", "select"]       # in pipeline order
    assert counts["by_source"]["mathsrc"] == {
        "total": 8, "kept": 1, "kept_fraction": 0.125,
        "rejected": {"truncated": 1, "think": 1, "empty": 1, "answer": 1, "verify": 1,
                     "dedup": 1, "select": 1}}
    assert counts["by_source"]["codesrc"]["rejected"] == {"verify": 2}
    assert counts["by_category"]["coding"]["total"] == 3
    assert counts["reasons"]["verify"] == {"wrong answer": 1, "AssertionError": 1, "timeout": 1}
    reasons = {e["id"]: e["reason"] for exs in counts["examples"]["verify"].values() for e in exs}
    assert reasons == {"g03": "wrong answer: got 12, want 13", "g08": "AssertionError",
                       "g09": "timeout"}
    ex = counts["examples"]["verify"]["wrong answer"][0]
    assert ex["prompt"] == "6+7?" and ex["answer_tail"] == "So \\boxed{12}."

    verdicts = {r["id"]: r for r in Stage(tmp_path, "filter").read()}
    assert verdicts["g02"]["failed"] == "dedup" and verdicts["g02"]["reasons"]["verify"] == "ok"
    assert verdicts["g01"]["kept"] and verdicts["g01"]["failed"] is None
    data = list(RunDir(tmp_path).dataset.read())
    assert sorted(r["id"] for r in data) == ["g01", "g07"]
    g01 = next(r for r in data if r["id"] == "g01")
    assert g01["messages"][-1] == {"role": "assistant", "content": "<think>think</think>So \\boxed{13}."}
    assert g01["prompt_id"] == "pm" and g01["source"] == "mathsrc"
    assert Stage(tmp_path, "filter").is_complete()
    assert json.loads((tmp_path / "filter" / "report.json").read_text()) == counts
    assert "examples" not in json.loads((tmp_path / "filter" / "counts.json").read_text())
    report = (tmp_path / "filter" / "report.md").read_text()
    assert "Kept **2 of 11** traces (18.2%)" in report
    assert "| mathsrc | 8 | 1 | 12.5% | 1 | 1 | 1 | 1 | 1 | 1 | 1 |" in report
    assert "- **wrong answer** (1)" in report and "`g03`: wrong answer: got 12, want 13" in report


def test_filter_stage_rerun_with_other_settings_replaces_outputs(tmp_path):
    with Stage(tmp_path, "generate").writer() as w:
        for g in GENERATIONS:
            if g["verifier"] == "math":
                w.write(g)
    first = run_filter(_recipe(verify=False), tmp_path)
    assert first["kept"] == 3          # g01, g03, g10 (g02 duplicates g01; g11 has no answer)
    second = run_filter(_recipe(verify=False, drop_truncated=False, require_think=False,
                                require_answer=False, dedup="none"), tmp_path)
    assert second["kept"] == 7 and second["rejected"] == {"empty": 1}
    assert len(list(Stage(tmp_path, "filter").read())) == 8
    assert len(list(RunDir(tmp_path).dataset.read())) == 7


@needs_bwrap
def test_verify_keeps_its_verdicts_across_a_crash_and_grades_only_the_rest(tmp_path, monkeypatch):
    import importlib
    filter_stage = importlib.import_module("distill.filters.verdicts")
    verify = importlib.import_module("distill.grading.verify")

    gens = [_gen(f"m{i:02d}", MATH_P, f"So \\boxed{{{13 if i % 3 else 12}}}.", reasoning=f"r{i}")
            for i in range(10)] + [g for g in GENERATIONS if g["verifier"] == "code"]
    with Stage(tmp_path, "generate").writer() as w:
        for g in gens:
            w.write(g)
    graded: list[str] = []
    real = verify.verify_many

    def counting(items, *a, **kw):
        if len(graded) >= 8 and crash:
            raise KeyboardInterrupt("killed mid-verification")
        graded.extend(p["id"] for p, _ in items)
        return real(items, *a, **kw)

    monkeypatch.setattr(verify, "verify_many", counting)
    monkeypatch.setattr(filter_stage, "VERIFY_BATCH", 4)
    cfg = _recipe(dedup="none")
    crash = True
    with pytest.raises(KeyboardInterrupt):
        run_filter(cfg, tmp_path)
    assert len(graded) == 8 and not Stage(tmp_path, "filter").is_complete()
    crash, before = False, len(graded)
    counts = run_filter(cfg, tmp_path)
    assert len(graded) - before == len(gens) - 8          # only the ungraded ones
    assert set(graded) == {g["id"] for g in gens} and len(set(graded)) == len(graded)
    assert Stage(tmp_path, "filter").manifest()["verified"] == {"graded": 5, "stored": 8}
    assert counts["kept"] == 6 + 1 and counts["rejected"] == {"verify": 4 + 2}
    # The same verdicts as a run that never crashed.
    clean = tmp_path / "clean"
    with Stage(clean, "generate").writer() as w:
        for g in gens:
            w.write(g)
    assert run_filter(cfg, clean)["rejected"] == counts["rejected"]
    # Another limit is another verdict: everything is graded again.
    before = len(graded)
    run_filter(_recipe(dedup="none", code_timeout_s=3), tmp_path)
    assert len(graded) - before == len(gens)


def test_only_the_recipes_prompts_and_sampling_settings_are_graded(tmp_path):
    cfg = _recipe(verify=False)
    now = cfg.generation_hash()
    with Stage(tmp_path, "prompts").writer() as w:
        w.write({"id": "pm", **{k: v for k, v in MATH_P.items() if k != "prompt_id"}})
    with Stage(tmp_path, "generate").writer() as w:
        w.write({**_gen("a", MATH_P, "So \\boxed{13}."), "gen_hash": now})
        w.write({**_gen("b", MATH_P, "So \\boxed{13}!", reasoning="t2"), "gen_hash": "older"})
        w.write({**_gen("c", {**MATH_P, "prompt_id": "gone"}, "So \\boxed{13}."), "gen_hash": now})
    counts = run_filter(cfg, tmp_path)
    assert counts["total"] == 1 and [r["id"] for r in RunDir(tmp_path).dataset.read()] == ["a"]
    assert Stage(tmp_path, "filter").manifest()["not_graded_other_settings"] == 2


# ------------------------------------------------------------------- answer extraction

@pytest.mark.parametrize("text, answer", [
    ("so \\boxed{42}", "42"),
    ("The answer is 7.", "7"),
    ("Final Answer: $\\frac{1}{2}$", "\\frac{1}{2}"),
    ("work...\n**Final answer:** 12", "12"),
    ("Natalia sold 72 clips.\n#### 72", "72"),
    ("Answer: 3\\sqrt{2}", "3\\sqrt{2}"),
    ("I think it is 5 but not sure", None),
])
def test_extract_answer(text, answer):
    assert verify_mod.extract_answer(text) == answer


@pytest.mark.parametrize("text, letter", [
    ("Reasoning...\nAnswer: C", "C"),
    ("so the answer is (B).", "B"),
    ("The final answer is $\\boxed{D}$", "D"),
    ("\\boxed{\\text{A}}", "A"),
    ("**Answer: B**", "B"),
    ("Option A is wrong, option B is wrong.\nAnswer: (D)", "D"),
    ("After all this:\n\nC", "C"),
    ("After all this:\n\n(B) 42 kelvin", "B"),
    ("Answer: E", None),                       # not one of A-D
    ("A and B both look plausible", None),
])
def test_extract_choice(text, letter):
    assert verify_mod.extract_choice(text) == letter


def test_choice_verifier():
    p = {"id": "gpqa/1", "verifier": "choice", "answer": "C", "choices": ["w", "x", "y", "z"]}
    assert verify(p, "... Answer: C").ok
    assert verify(p, "Answer: B").reason == "wrong choice: got B, want C"
    assert verify(p, "no idea").reason == "no choice letter"
    with pytest.raises(ValueError, match="not one of the letters ABCD"):
        verify({**p, "answer": "F"}, "Answer: C")


# ------------------------------------------------------------------------- code tests

@pytest.mark.parametrize("got, want, ok", [
    ("3\n", "3", True),
    ("  1 2 3  \n\n", "1 2 3", True),
    ("0.50\n", "0.5\n", True),
    ("1e2", "100", True),
    ("1 2", "12", False),
    ("3\n4", "3", False),
    ("YES", "yes", False),
    ("abc 1.0", "abc 1", False),       # a non-number token: the lines must be equal strings
])
def test_compare_stdout_follows_livecodebench(got, want, ok):
    assert verify_mod.compare_stdout(got, want) is ok


SUM_STDIN = {"id": "cf/1", "verifier": "code", "stdio_tests": [
    {"input": "1 2\n", "output": "3\n"}, {"input": "10 -4\n", "output": "6\n"},
    {"input": "0.5 0.25\n", "output": "0.75\n"}]}


@needs_bwrap
def test_stdio_tests():
    good = "```python\na, b = map(float, input().split())\nr = a + b\nprint(int(r) if r == int(r) else r)\n```"
    assert verify(SUM_STDIN, good).ok
    v = verify(SUM_STDIN, "```python\na, b = map(int, input().split())\nprint(a + b)\n```")
    assert not v.ok and v.reason.startswith("ValueError") and v.reason.endswith("on test 2")
    v = verify(SUM_STDIN, "print(3)")
    assert v.reason == "wrong answer on test 1: got '3', want '6'"
    slow = {**SUM_STDIN, "test_timeout_s": 0.5}
    assert verify(slow, "import time; time.sleep(5)").reason == "timeout on test 0"


SOLUTION_CLASS = {"id": "lcb/1", "verifier": "code", "entry_point": "twoSum",
                  "functional_tests": {"mode": "exact", "inputs": [[[2, 7, 11, 15], 9], [[3, 3], 6]],
                                       "outputs": [[0, 1], [0, 1]]}}


@needs_bwrap
def test_functional_tests_exact_mode_with_a_solution_class():
    code = ("```python\nclass Solution:\n    def twoSum(self, nums, target):\n"
            "        seen = {}\n        for i, x in enumerate(nums):\n"
            "            if target - x in seen:\n                return (seen[target - x], i)\n"
            "            seen[x] = i\n```")
    assert verify(SOLUTION_CLASS, code).ok             # a tuple reads as a list, as in LCB
    v = verify(SOLUTION_CLASS, code.replace("(seen[target - x], i)", "[i, seen[target - x]]"))
    assert v.reason == "AssertionError: wrong answer on input 0: got [1, 0], want [0, 1]"
    v = verify(SOLUTION_CLASS, "def other(): pass")
    assert v.reason == "NameError: name 'twoSum' is not defined"


def _fn(outputs, inputs=None, **kw):
    return {"id": "fn", "verifier": "code", "entry_point": "f",
            "functional_tests": {"inputs": inputs or [[i] for i in range(len(outputs))],
                                 "outputs": outputs, **kw}}


@needs_bwrap
def test_functional_tests_evalplus_tolerances():
    third = _fn([0.0, 1 / 3, 2 / 3])
    assert verify(third, "def f(i): return i / 3").ok
    assert verify(third, "def f(i): return round(i / 3, 7)").ok         # within 1e-6
    assert not verify(third, "def f(i): return round(i / 3, 3)").ok     # not within 1e-6
    assert verify(_fn([0, 2]), "def f(i): return 2.0 * i").ok           # == says 2 == 2.0
    assert verify(_fn([[1.0, 2.5]], atol=0.1), "def f(i): return [1.05, 2.45]").ok
    assert not verify(_fn([[1.0, 2.5]], atol=0.1), "def f(i): return (1.05, 2.45)").ok


@needs_bwrap
def test_functional_tests_compare_big_outputs_in_full():
    # Expected outputs of megabytes are compared whole, inside the sandbox: one character
    # off fails, and an equal value of another type passes only where == says so.
    big = _fn([" ".join(map(str, range(300_000)))], inputs=[[300_000]])
    assert verify(big, "def f(n): return ' '.join(str(i) for i in range(n))").ok
    assert not verify(big, "def f(n): return ' '.join(str(i) for i in range(n)) + ' '").ok
    floats = _fn([[float(i) for i in range(100_000)]], inputs=[[100_000]])
    assert verify(floats, "def f(n): return list(range(n))").ok


@needs_bwrap
def test_reference_outputs_and_scaled_time_limits():
    p = _fn(None, inputs=[[10], [20], [2_000_000]])
    ref = "def f(n):\n    return sum(i * i for i in range(n))\n"
    blob, times, wall = verify_mod.record_outputs(p, ref)
    assert len(times) == 3 and times[2] > times[0] and wall > sum(times)
    p["functional_tests"]["outputs_packed"] = blob
    assert verify(p, "def f(n): return (n - 1) * n * (2 * n - 1) // 6").ok
    assert verify(p, "def f(n): return n").reason.startswith("AssertionError: wrong answer on input 0")
    # Limits follow the reference: 4x its time, at least MIN_TEST_S (4 s) per input.
    p["reference_times_s"] = verify_mod.reference_times(p, ref)
    code_mod = importlib.import_module("distill.grading.code")
    assert code_mod._limits(p, 3) == [max(code_mod.MIN_TEST_S, 4 * t) for t in p["reference_times_s"]]
    slow = "import time\ndef f(n):\n    if n > 100:\n        time.sleep(60)\n    return (n - 1) * n * (2 * n - 1) // 6"
    v = verify(p, slow)
    assert v.reason.startswith("TimeoutError: time limit of") and v.reason.endswith("on input 2")


@needs_bwrap
def test_exiting_before_the_tests_does_not_pass():
    assert verify(ADD, "import sys\nsys.exit(0)").reason == "exited before the tests finished"
    assert verify(ADD, "import os\nos._exit(0)").reason == "exited before the tests finished"
    assert verify(_fn([1]), "import sys\nsys.exit(0)").reason == "exited before the tests finished"


@needs_bwrap
def test_stdio_reference_times():
    ref = "a, b = map(float, input().split())\nr = a + b\nprint(int(r) if r == int(r) else r)"
    times = verify_mod.reference_times(SUM_STDIN, ref)
    assert len(times) == 3 and all(0 < t < 5 for t in times)
    with pytest.raises(RuntimeError, match="fails stdin test 0"):
        verify_mod.reference_times(SUM_STDIN, "print(0)")


# ----------------------------------------------------------------- quality, dedup, select

def test_quality_answer_repetition_and_length():
    assert quality.final_answer({"verifier": "math", "content": "It is 13."}).startswith(
        "no final answer")
    assert quality.final_answer({"verifier": "math", "content": "so \\boxed{13}"}) is None
    assert quality.final_answer({"verifier": "choice", "content": "hmm"}) == "no choice letter"
    assert quality.final_answer({"verifier": "code", "content": "I would loop twice."}) == \
        "no code block"
    assert quality.final_answer({"verifier": "code", "content": "def f(x):\n    return x"}) is None
    loop = {"reasoning": "Let me add. " + "Wait, 2+2=4. " * 30, "content": ""}
    assert quality.repetition(loop) == "repetition loop: 'Wait, 2+2=4.' x30 at the end"
    # A looping thought followed by a final answer is still caught.
    assert quality.repetition({**loop, "content": "So \\boxed{4}."}).startswith("repetition loop")
    varied = {"reasoning": " ".join(f"Step {i}: {i} * {i + 3} = {i * (i + 3)}." for i in range(300)),
              "content": "\\boxed{1}"}
    assert quality.repetition(varied) is None
    rng = random.Random(0)        # the same paragraph in no periodic order: no loop at the end
    blocks = {"reasoning": "".join(f"Check {rng.randrange(7)}: the same paragraph about the sum "
                                   "again. " for i in range(300)), "content": "x"}
    assert quality.repetition(blocks).startswith("repetitive (compresses to")
    assert quality.length(10, 20, None) == "too short (10 tokens < 20)"
    assert quality.length(10, None, 5) == "too long (10 tokens > 5)"
    assert quality.length(10, 5, 20) is None


def test_near_duplicates_cluster_and_keep_by_rule():
    from distill.filters.dedup import near_duplicates
    base = " ".join(f"word{i}" for i in range(200))
    texts = {"a": base, "b": base.replace("word100", "other"), "c": base + " extra words here",
             "d": " ".join(f"thing{i}" for i in range(200))}
    assert near_duplicates(texts, threshold=0.8) == {"b": "a", "c": "a"}
    # The keep rule picks the copy: here the longest text wins.
    assert near_duplicates(texts, threshold=0.8, keep=lambda k: -len(texts[k])) == \
        {"a": "c", "b": "c"}


def _write(stage_dir, gens):
    with Stage(stage_dir, "generate").writer() as w:
        for g in gens:
            w.write(g)


def test_minhash_dedup_over_prompts_and_traces(tmp_path):
    story = " ".join(f"Tom has {i} apples and gives away {i // 2}." for i in range(40))
    p1 = {**MATH_P, "prompt_id": "p1", "messages": [{"role": "user", "content": story + " How many?"}]}
    p2 = {**MATH_P, "prompt_id": "p2", "messages": [{"role": "user", "content": story + " How many left?"}]}
    p3 = {**MATH_P, "prompt_id": "p3", "messages": [{"role": "user", "content": "A different question entirely, about trains."}]}
    words = ["add", "carry", "digit", "sum", "check", "tens", "ones", "so", "then", "wait"]
    long_trace = " ".join(f"{words[i * i % 10]} {i} {words[(3 * i) % 10]}" for i in range(120))
    gens = [_gen("t1", p1, "So \\boxed{13}.", reasoning="a"),
            _gen("t2", p1, "Thus \\boxed{13}.", reasoning="b"),
            _gen("t3", p2, "So \\boxed{13}.", reasoning="c"),            # p2 ~ p1, fewer traces
            _gen("t4", p3, "So \\boxed{13}.", reasoning=long_trace),
            _gen("t5", p3, "So \\boxed{13}.", reasoning=long_trace + " again")]   # ~ t4, longer
    _write(tmp_path, gens)
    c = run_filter(_recipe(verify=False, dedup="minhash"), tmp_path)
    verdicts = {r["id"]: r for r in Stage(tmp_path, "filter").read()}
    assert verdicts["t3"]["reasons"]["dedup"] == "near-duplicate prompt of p1"
    assert verdicts["t5"]["reasons"]["dedup"] == "near-duplicate trace of t4"
    assert c["kept"] == 3 and c["reasons"]["dedup"] == {"near-duplicate prompt": 1,
                                                         "near-duplicate trace": 1}


def test_select_shortest_and_at_most_k(tmp_path):
    gens = [_gen(f"s{i}", MATH_P, "So \\boxed{13}." + " really" * i, reasoning=f"r{i}")
            for i in (3, 1, 2)]
    _write(tmp_path, gens)
    c = run_filter(_recipe(verify=False, select="shortest"), tmp_path)
    kept = [r["id"] for r in RunDir(tmp_path).dataset.read()]
    assert kept == ["s1"] and c["rejected"] == {"select": 2}
    c = run_filter(_recipe(verify=False, max_per_prompt=2), tmp_path)
    assert [r["id"] for r in RunDir(tmp_path).dataset.read()] == ["s1", "s2"]


def test_length_bounds_count_with_the_students_tokenizer(tmp_path):
    gens = [_gen("l1", MATH_P, "So \\boxed{13}.", reasoning="short"),
            _gen("l2", MATH_P, "So \\boxed{13}.", reasoning=" ".join(map(str, range(120))))]
    _write(tmp_path, gens)
    c = run_filter(_recipe(verify=False, max_tokens=100), tmp_path)   # toy:student, per character
    verdicts = {r["id"]: r for r in Stage(tmp_path, "filter").read()}
    assert verdicts["l2"]["reasons"]["length"] == "too long (384 tokens > 100)"
    assert c["kept"] == 1
    with pytest.raises(InputError, match="filter.tokenizer: cannot load tokenizer"):
        run_filter(_recipe(verify=False, max_tokens=100, tokenizer="/no/such/tokenizer"), tmp_path)


# ------------------------------------------------------------------- decontamination

GSM8K = DATA / "gsm8k" / "test.jsonl"


@pytest.mark.skipif(not GSM8K.is_file(), reason="evaluation data not found")
def test_decontamination_names_the_benchmark_item(tmp_path):
    first = json.loads(GSM8K.read_text().splitlines()[0])["question"]
    copied = {**MATH_P, "prompt_id": "leak", "messages": [{"role": "user", "content":
              "Solve this: " + first.upper().replace(",", " ,") + "\nPut the answer in \\boxed{}."}]}
    clean = {**MATH_P, "prompt_id": "fine"}
    boiler = {**MATH_P, "prompt_id": "boiler", "messages": [{"role": "user", "content":
              "What is 6+7? Please reason step by step, and put your final answer within \\boxed{}."}]}
    _write(tmp_path, [_gen("c1", copied, "So \\boxed{13}."), _gen("c2", clean, "So \\boxed{13}."),
                      _gen("c3", boiler, "So \\boxed{13}.")])
    cfg = _recipe(verify=False, decontaminate=["gsm8k", "toy_arith", "livecodebench"])
    cfg.eval.data_files = {"gsm8k": str(GSM8K)}
    c = run_filter(cfg, tmp_path)
    d = c["decontamination"]
    assert d["checked"] == {"gsm8k": 1319, "toy_arith": 846}
    assert d["skipped"]["livecodebench"].startswith(   # no local file, and the tests are offline
        "not on hand (no local file, and the Hub dataset livecodebench/code_generation_lite "
        "cannot be read (")
    assert [(h["prompt_id"], h["benchmark"], h["item"], h["method"]) for h in d["hits"]] == \
        [("leak", "gsm8k", "gsm8k/0", "ngram")]
    assert c["kept"] == 2       # the benchmark's own instruction text is not a hit
    report = (tmp_path / "filter" / "report.md").read_text()
    assert "| `leak` | gsm8k | `gsm8k/0` | ngram |" in report
    assert "not checked: **livecodebench**" in report


def test_decontamination_minhash_catches_a_reworded_copy():
    from distill.grading.decontaminate import Index
    item = " ".join(f"The train {i} leaves at {i} pm" for i in range(12))
    index = Index({"bench": [("bench/1", item)]}, ngram=50, minhash_threshold=0.5)
    parts = item.split(" pm")       # every fourth sentence reworded: no 50-word run in common
    hit = index.check(" pm".join(p.replace("leaves", "departs") if j % 4 == 0 else p
                                 for j, p in enumerate(parts)))
    assert hit.benchmark == "bench" and hit.item == "bench/1" and hit.method == "minhash"
    assert index.check("Something else about boats and rivers and the sea.") is None


# --------------------------------------------------------------------- traces a user brings

def test_filter_traces_from_a_jsonl_file(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "6+7?"},
                      {"role": "assistant", "content": "<think>6+7=13</think>So \\boxed{13}."}],
         "answer": "13", "source": "mine"},
        {"messages": [{"role": "user", "content": "6+8?"},
                      {"role": "assistant", "content": "14", "reasoning_content": "6+8"}],
         "answer": "15"},
        {"messages": [{"role": "user", "content": "write f"},
                      {"role": "assistant", "content": "<think>easy</think>```python\ndef f(x):\n    return x + 1\n```"}],
         "tests": ADD["tests"], "entry_point": "f"},
    ]
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    c = run_filter(_recipe(input=str(path)), tmp_path / "run")
    assert c["total"] == 3 and c["kept"] == 2 and c["rejected"] == {"answer": 1}
    assert set(c["by_source"]) == {"mine", "traces"}
    assert c["by_category"]["coding"] == {"total": 1, "kept": 1, "kept_fraction": 1.0,
                                          "rejected": {}}
    data = sorted(RunDir(tmp_path / "run").dataset.read(), key=lambda r: r["source"])
    assert data[0]["messages"][-1]["content"] == "<think>6+7=13</think>So \\boxed{13}."

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"messages": [{"role": "user",
                                                                          "content": "x"}]}) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl:2: messages: the last message must be"):
        run_filter(_recipe(input=str(bad)), tmp_path / "run2")
    with pytest.raises(InputError, match="input file not found"):
        run_filter(_recipe(input=str(tmp_path / "missing.jsonl")), tmp_path / "run3")


def test_cli_filter_input(tmp_path):
    from typer.testing import CliRunner

    from distill.cli import app
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"messages": [
        {"role": "user", "content": "6+7?"},
        {"role": "assistant", "content": "<think>ok</think>\\boxed{13}"}], "answer": "13"}) + "\n")
    result = CliRunner().invoke(app, ["filter", "smoke", "--run-dir", str(tmp_path / "run"),
                                      "--input", str(path), "-o", "filter.decontaminate=none"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "filter" / "counts.json").read_text())["kept"] == 1
    result = CliRunner().invoke(app, ["filter", "smoke", "--run-dir", str(tmp_path / "run"),
                                      "--input", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2 and "input file not found" in result.output


@needs_bwrap
def test_livecodebench_test_cases_become_problem_tests():
    functional = verify_mod.livecodebench_tests(
        [{"input": "[1, 2, 3]\n2", "output": "2", "testtype": "functional"},
         {"input": "[5]\n5", "output": "1", "testtype": "functional"}], "countAtLeast")
    p = {"id": "lcb/2", "verifier": "code", **functional}
    code = ("```python\nclass Solution:\n    def countAtLeast(self, nums, k):\n"
            "        return sum(x >= k for x in nums)\n```")
    assert verify(p, code).ok
    assert not verify(p, code.replace(">= k", "> k")).ok
    stdin = verify_mod.livecodebench_tests([{"input": "3\n", "output": "6\n", "testtype": "stdin"}])
    assert verify({"id": "lcb/3", "verifier": "code", **stdin}, "print(int(input()) * 2)").ok


def test_filter_traces_from_parquet_and_a_saved_dataset(tmp_path):
    from datasets import Dataset, DatasetDict
    rows = [{"messages": [{"role": "user", "content": "6+7?"},
                          {"role": "assistant", "content": "<think>6+7</think>\\boxed{13}"}],
             "answer": "13"},
            {"messages": [{"role": "user", "content": "2+2?"},
                          {"role": "assistant", "content": "<think>2+2</think>\\boxed{5}"}],
             "answer": "4"}]
    ds = Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "t.parquet"))
    DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "saved"))
    for spec in (tmp_path / "t.parquet", tmp_path / "saved"):
        c = run_filter(_recipe(input=str(spec)), tmp_path / "runs" / spec.name)
        assert c["total"] == 2 and c["kept"] == 1 and c["reasons"]["verify"] == {"wrong answer": 1}
    with pytest.raises(InputError, match="filter.input_split: no split 'test'"):
        run_filter(_recipe(input=str(tmp_path / "saved"), input_split="test"), tmp_path / "x")


def test_pipelined_math_workers_answer_every_question_in_order():
    # Several questions in flight on one warm worker: every reply is read, none is left in a
    # buffer (which would turn the last ones into timeouts).
    items = [({"id": f"q{i}", "verifier": "math", "answer": str(i)}, f"\\boxed{{{i + i % 2}}}")
             for i in range(12)]
    for _ in range(2):
        assert [v.reason for v in verify_many(items, workers=1)] == [
            "ok" if i % 2 == 0 else f"wrong answer: got {i + 1}, want {i}" for i in range(12)]


def test_a_gold_that_cannot_be_checked_is_a_rejection_not_an_abort(tmp_path):
    """Traces brought with --input (or prompt records from before the prompts stage skipped
    them) whose gold is empty, a proof, unparsable or not a choice letter are rejected with a
    verdict naming the gold; the other traces are graded as usual."""
    def row(answer, content="<think>ok</think>\\boxed{42}", **extra):
        return {"messages": [{"role": "user", "content": f"Q {answer!r} {extra}"},
                             {"role": "assistant", "content": content}], "answer": answer,
                "verifier": "math", **extra}
    rows = [row("42"), row("proof"), row("notfound"), row(""), row("\\frac{"), row("\\text{}"),
            row("E", "<think>ok</think>Answer: B", verifier="choice", choices=["1", "2", "3", "4"])]
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    c = run_filter(_recipe(input=str(path)), tmp_path / "run")
    assert c["total"] == 7 and c["kept"] == 1
    assert c["reasons"]["verify"] == {"bad gold": 6}
    reasons = sorted(v["reasons"]["verify"] for v in Stage(tmp_path / "run", "filter").read()
                     if not v["kept"])
    assert reasons == sorted([
        "bad gold: proof: answer 'proof' is a proof, not an answer to check",
        "bad gold: notfound: answer 'notfound' is not an answer to check",
        "bad gold: empty: the answer is empty",
        "bad gold: unparsable: answer '\\\\frac{' does not parse",
        "bad gold: unparsable: answer '\\\\text{}' does not parse",
        "bad gold: choice: answer 'E' is not one of the letters ABCD"])
    # One problem at a time, a bad gold is still an error for the caller.
    with pytest.raises(ValueError, match="does not parse"):
        verify({"id": "bad", "verifier": "math", "answer": "\\frac{"}, "\\boxed{1}")


def test_check_golds_names_why_a_gold_cannot_be_checked():
    assert verify_mod.check_golds(["42", " ", None, "Proof", "notfound", "\\text{}", "x^2+1",
                                   "\\frac{"], workers=2) == \
        [None, "empty", "empty", "proof", "notfound", "unparsable", None, "unparsable"]


def test_decontamination_ignores_the_instruction_a_recipe_shares_with_the_benchmarks():
    """The R1 recipes ask as MATH-500 and GSM8K ask ("...Please reason step by step, and put
    your final answer within \\boxed{}."): a problem's last word plus the instruction's first
    seven is an 8-gram of every benchmark item ending in that word. Fixed template text is
    left out on both sides; the problems themselves are still compared."""
    from distill.config import load_recipe
    from distill.grading.decontaminate import Index, load_benchmarks, prompt_text, template_literals
    from distill.config import recipe_path

    src = next(s for s in load_recipe(recipe_path("r1-to-7b")).prompts.sources if s.name == "numina_math")
    fixed = template_literals(src.prompt_template)
    items, _ = load_benchmarks(["math500", "gsm8k"], {"math500": str(DATA / "math500" / "test.jsonl"),
                                                      "gsm8k": str(GSM8K)})
    index = Index(items, ngram=8, minhash_threshold=0.8)

    def asked(problem: str) -> str:
        return prompt_text([{"role": "user", "content": src.prompt_template.format(prompt=problem)}], fixed)

    train = [json.loads(line)["question"] for line in
             (DATA / "gsm8k" / "train.jsonl").read_text().splitlines()[:400]]
    hits = [index.check(asked(q)) for q in train]
    assert not [h.evidence for h in hits if h and "reason" in h.evidence]
    assert sum(h is not None for h in hits) <= 4     # GSM8K's own train/test near-copies, if any
    leaked = [json.loads(line)["problem"] for line in
              (DATA / "math500" / "test.jsonl").read_text().splitlines()[:60]]
    found = [index.check(asked(p)) for p in leaked]
    assert sum(h is not None and h.benchmark == "math500" for h in found) >= 57


def test_a_short_benchmark_item_is_a_copy_only_when_it_is_most_of_the_prompt():
    """Items shorter than n words (a toy sum, "25+29=") are matched whole: in a prompt of
    about their length that is a copy; inside a long prompt (MBPP's tests hold "25, 29") it is
    a coincidence that threw real prompts away."""
    from distill.grading.decontaminate import Index
    index = Index({"toy_arith": [("toy_arith/1", "25+29=")]}, ngram=8, minhash_threshold=None)
    assert index.check("What is 25+29?").item == "toy_arith/1"
    long = ("Write a function to find the maximum of similar indices in two lists of tuples. "
            "assert max_similar_indices([(2, 4), (6, 7)], [(5, 4), (8, 10)]) == [(5, 4), (8, 10)]\n"
            "assert max_similar_indices([(3, 5), (25, 29)], [(6, 5), (9, 11)]) == [(6, 5), (25, 29)]")
    assert index.check(long) is None
