"""Benchmark files: the registry, the loaders on the local data copies, and the scorer
against gold answers and canonical solutions (which must pass) and broken ones (which must
not)."""

import json
import random
import re
import shutil
from pathlib import Path

import pytest

from distill.errors import InputError
from distill.grading.benchmarks import get_benchmark, list_benchmarks
from distill.grading.verify import verify, verify_many

DATA = Path(__file__).parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"evaluation data not found at {DATA}")
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed")

FILES = {
    "gsm8k": DATA / "gsm8k" / "test.jsonl",
    "math500": DATA / "math500" / "test.jsonl",
    "aime24": DATA / "aime" / "aime24.jsonl",
    "aime25": DATA / "aime" / "aime25.jsonl",
    "humaneval": DATA / "humaneval" / "HumanEval.jsonl.gz",
    "mbpp": DATA / "mbpp" / "sanitized-mbpp.json",
    "humaneval_plus": DATA / "evalplus" / "HumanEvalPlus-v0.1.10.jsonl.gz",
    "mbpp_plus": DATA / "evalplus" / "MbppPlus-v0.2.0.jsonl.gz",
}
ALL = {"toy_arith", "toy_code", "toy_mult", "gsm8k", "math500", "aime24", "aime25", "gpqa_diamond",
       "humaneval", "humaneval_plus", "mbpp", "mbpp_plus", "livecodebench"}


def _fenced(code: str) -> str:
    return f"Here is the solution.\n```python\n{code}\n```"


def test_registry_discovers_every_benchmark_file():
    names = list_benchmarks()
    assert ALL <= set(names)
    assert not any(n.startswith("_") for n in names)
    for name in names:
        bench = get_benchmark(name)
        assert bench.name == name and bench.category in ("reasoning", "coding")
        assert bench.scorer in ("math", "code", "choice") and bench.prompt and bench.version
        assert bench.samples >= 1 and bench.max_tokens >= 1
    with pytest.raises(KeyError, match="unknown benchmark"):
        get_benchmark("nope")


def test_a_benchmark_declares_its_categories_and_options():
    assert get_benchmark("math500").categories == ("subject", "level")
    assert get_benchmark("aime24").samples == 64    # open-r1's AIME setting
    bench = get_benchmark("toy_arith")
    p = bench.problems(None, 1)[0]
    assert bench.category_labels(p) == ["reasoning", f"reasoning/carries={p['categories']['carries']}"]
    with pytest.raises(InputError, match="unknown option 'release' for benchmark toy_arith"):
        bench.problems(None, 1, {"release": "v1"})


@needs_bwrap
@pytest.mark.parametrize("name", ["toy_arith", "toy_code", "toy_mult"])
def test_toy_benchmarks_are_fixed_and_their_references_pass(name):
    bench = get_benchmark(name)
    problems = bench.load(None, 20)
    assert [p["id"] for p in problems] == [p["id"] for p in bench.load(None, 20)]
    assert len({p["id"] for p in problems}) == 20
    answers = [p["reference"].split("</think>", 1)[1] for p in problems]
    assert all(v.ok for v in verify_many(list(zip(problems, answers))))


@needs_data
def test_version_pins_the_local_file():
    bench = get_benchmark("gsm8k")
    assert bench.resolved_version(str(FILES["gsm8k"])) == f"{bench.version}+sha256.3730d312f6e34405"
    assert bench.resolved_version(None) == bench.version


@needs_data
def test_gsm8k_gold_answers_all_verify():
    problems = get_benchmark("gsm8k").load(str(FILES["gsm8k"]), None)
    assert len(problems) == 1319
    assert problems[0]["answer"] == "18" and "\\boxed{}" in problems[0]["messages"][0]["content"]
    verdicts = verify_many([(p, f"The answer is \\boxed{{{p['answer']}}}.") for p in problems])
    assert [p["id"] for p, v in zip(problems, verdicts) if not v.ok] == []
    wrong = verify_many([(p, f"\\boxed{{{int(float(p['answer'])) + 1}}}") for p in problems[:50]])
    assert not any(v.ok for v in wrong)


@needs_data
def test_math500_gold_answers_all_verify():
    problems = get_benchmark("math500").problems(str(FILES["math500"]))
    assert len(problems) == 500
    assert {p["categories"]["subject"] for p in problems} == {
        "Algebra", "Counting & Probability", "Geometry", "Intermediate Algebra",
        "Number Theory", "Prealgebra", "Precalculus"}
    assert {p["categories"]["level"] for p in problems} == {1, 2, 3, 4, 5}
    verdicts = verify_many([(p, f"so \\boxed{{{p['answer']}}}") for p in problems])
    assert [p["id"] for p, v in zip(problems, verdicts) if not v.ok] == []
    wrong = verify_many([(p, f"so \\boxed{{{p['answer']}+1}}") for p in problems[:40]])
    assert [p["id"] for p, v in zip(problems, wrong) if v.ok] == []


@needs_data
@pytest.mark.parametrize("name", ["aime24", "aime25"])
def test_aime_gold_answers_all_verify_and_wrong_ones_fail(name):
    problems = get_benchmark(name).problems(str(FILES[name]))
    assert len(problems) == 30
    assert [p["categories"]["contest"] for p in problems].count("I") == 15
    assert all(p["answer"].isdigit() and not p["answer"].startswith("0") for p in problems)
    verdicts = verify_many([(p, f"The answer is \\boxed{{{p['answer']}}}.") for p in problems])
    assert [p["id"] for p, v in zip(problems, verdicts) if not v.ok] == []
    # A zero-padded answer is the same integer; a neighbour is not.
    padded = verify_many([(p, f"\\boxed{{{int(p['answer']):03d}}}") for p in problems])
    assert all(v.ok for v in padded)
    wrong = verify_many([(p, f"\\boxed{{{int(p['answer']) + 1}}}") for p in problems])
    assert not any(v.ok for v in wrong)


@needs_data
def test_aime25_repairs_the_escape_bug_of_its_copy():
    raw = get_benchmark("aime25").problems(str(FILES["aime25"]))
    fixed = get_benchmark("aime25").problems(str(DATA / "aime" / "aime25.escape_fixed.jsonl"))
    assert [p["messages"] for p in raw] == [p["messages"] for p in fixed]
    assert not any("\x0c" in p["messages"][0]["content"] for p in raw)


def _broken(solution: str) -> str:
    return re.sub(r"\breturn\b(?!\s*$)", "return None  #", solution, flags=re.M)


def _check_canonical_and_broken(problems: list[dict]) -> None:
    verdicts = verify_many([(p, _fenced(p["canonical_solution"])) for p in problems], workers=2)
    assert [(p["id"], v.reason) for p, v in zip(problems, verdicts) if not v.ok] == []

    sample = random.Random(0).sample(problems, min(30, len(problems)))
    broken = verify_many([(p, _fenced(_broken(p["canonical_solution"]))) for p in sample])
    assert [p["id"] for p, v in zip(sample, broken) if v.ok] == []


@needs_data
@needs_bwrap
@pytest.mark.parametrize("name,count", [("humaneval", 164), ("mbpp", 257)])
def test_original_humaneval_and_mbpp_canonical_pass_broken_fail(name, count):
    problems = get_benchmark(name).problems(str(FILES[name]))
    assert len(problems) == count
    _check_canonical_and_broken(problems)


@needs_data
@needs_bwrap
@pytest.mark.parametrize("name", ["humaneval_plus", "mbpp_plus"])
def test_evalplus_first_tasks_canonical_pass_broken_fail(name):
    _check_canonical_and_broken(get_benchmark(name).load(str(FILES[name]), 12))


@pytest.mark.slow
@needs_data
@needs_bwrap
@pytest.mark.parametrize("name", ["humaneval_plus", "mbpp_plus"])
def test_evalplus_all_canonical_solutions_pass_and_broken_ones_fail(name):
    # Minutes on 2 cores: every base and plus input of every task, run twice (once to record
    # the expected outputs, unless cached, once to grade).
    problems = get_benchmark(name).load(str(FILES[name]), None)
    assert len(problems) == {"humaneval_plus": 164, "mbpp_plus": 378}[name]
    _check_canonical_and_broken(problems)


@needs_data
@needs_bwrap
def test_humaneval_plus_accepts_a_bare_function_body():
    problems = get_benchmark("humaneval_plus").load(str(FILES["humaneval_plus"]), 3)
    for p in problems:
        assert verify(p, _fenced(p["canonical_solution"].strip("\n"))).ok
        # The canonical solution is a body; indented as it is, it continues the prompt.
        assert verify(p, "```python\n" + p["canonical_solution"] + "```").ok


@needs_data
@needs_bwrap
def test_evalplus_wrong_answer_names_the_input():
    p = get_benchmark("mbpp_plus").load(str(FILES["mbpp_plus"]), 1)[0]
    # Passes the three base asserts but not the differential inputs.
    fake = ("def similar_elements(a, b):\n"
            "    s = tuple(sorted(set(a) & set(b)))\n"
            "    return s if len(a) == 4 else ()\n")
    v = verify(p, _fenced(fake))
    assert not v.ok and v.reason.startswith("AssertionError: wrong answer on input")


# ------------------------------------------------------------------ differential: math-verify

# (gold, response): equivalent and non-equivalent answers. The scorer must give math-verify's
# own verdict on each, math-verify being called directly on the whole response.
MATH_CASES = [
    ("\\frac{1}{2}", "so \\boxed{0.5}"), ("\\frac{1}{2}", "\\boxed{\\frac{2}{4}}"),
    ("\\frac{1}{2}", "\\boxed{\\frac{1}{3}}"), ("\\sqrt{2}+1", "\\boxed{1+\\sqrt{2}}"),
    ("\\sqrt{2}+1", "\\boxed{\\sqrt{2}-1}"), ("3\\sqrt{13}", "It is \\boxed{3\\sqrt{13}}."),
    ("3\\sqrt{13}", "\\boxed{3}"), ("(3, \\frac{\\pi}{2})", "\\boxed{(3, \\frac{\\pi}{2})}"),
    ("(3, \\frac{\\pi}{2})", "\\boxed{(3, \\pi)}"), ("10", "\\boxed{10.0}"),
    ("10", "\\boxed{10.5}"), ("x^2+2x+1", "\\boxed{(x+1)^2}"),
    ("x^2+2x+1", "\\boxed{(x-1)^2}"), ("[0, 1)", "\\boxed{[0,1)}"), ("[0, 1)", "\\boxed{[0,1]}"),
    ("\\dfrac{3}{4}", "\\boxed{\\tfrac34}"), ("2", "\\boxed{3}"), ("-3", "\\boxed{-3}"),
    ("3", "\\boxed{-3}"), ("\\infty", "\\boxed{\\infty}"), ("5", "The answer is 5"),
    ("5", "The answer is 6"), ("\\pi", "\\boxed{\\pi}"), ("\\pi", "\\boxed{3.14}"),
    ("\\frac{\\sqrt{3}}{2}", "\\boxed{\\frac{1}{2}\\sqrt{3}}"),
    ("\\frac{\\sqrt{3}}{2}", "\\boxed{\\frac{\\sqrt{2}}{2}}"), ("25", "\\boxed{025}"),
    ("2^{10}", "\\boxed{1024}"), ("2^{10}", "\\boxed{1023}"),
    ("\\{1, 2, 3\\}", "\\boxed{\\{3, 2, 1\\}}"), ("\\{1, 2, 3\\}", "\\boxed{\\{1, 2\\}}"),
    ("100\\%", "\\boxed{100}"), ("\\text{(C)}", "\\boxed{\\text{(C)}}"),
    ("7", "no answer here"), ("7", "\\boxed{}"),
]


def _math_verify_direct(gold: str, response: str) -> bool:
    from math_verify import parse, verify as math_equal
    return bool(math_equal(parse("\\boxed{" + gold + "}"), parse(response)))


def test_math_verdicts_agree_with_math_verify_called_directly():
    problems = [{"id": f"m{i}", "verifier": "math", "answer": g} for i, (g, _) in enumerate(MATH_CASES)]
    ours = verify_many([(p, r) for p, (_, r) in zip(problems, MATH_CASES)])
    direct = [_math_verify_direct(g, r) for g, r in MATH_CASES]
    assert [(g, r) for (g, r), a, b in zip(MATH_CASES, ours, direct) if a.ok != b] == []
    assert 10 < sum(direct) < len(direct) - 10    # both kinds are there


def test_the_last_boxed_answer_is_the_final_one():
    """The one place the scorer departs from math-verify's own extraction, on purpose: with
    several \\boxed{} answers the last one counts (the MATH grader's rule; math-verify
    called on the whole text rejects both)."""
    text = "First \\boxed{4}, no wait: \\boxed{5}"
    assert verify({"id": "m", "verifier": "math", "answer": "5"}, text).ok
    assert not verify({"id": "m", "verifier": "math", "answer": "4"}, text).ok
    assert _math_verify_direct("5", "\\boxed{5}") and not _math_verify_direct("5", text)


def _math500_pairs(n: int | None):
    rows = [json.loads(line) for line in open(FILES["math500"])][:n]
    problems = get_benchmark("math500").problems(str(FILES["math500"]), n)
    # Each reference solution against its own gold answer (equivalent) and against the next
    # problem's (almost always not).
    right = [(p, r["solution"]) for p, r in zip(problems, rows)]
    wrong = [(p, r["solution"]) for p, r in zip(problems, rows[1:] + rows[:1])]
    return right + wrong


def _check_math500_differential(n: int | None) -> None:
    pairs = _math500_pairs(n)
    ours = verify_many(pairs)
    direct = [_math_verify_direct(p["answer"], text) for p, text in pairs]
    assert [p["id"] for (p, _), a, b in zip(pairs, ours, direct) if a.ok != b] == []
    half = len(pairs) // 2
    assert all(v.ok for v in ours[:half]) and sum(v.ok for v in ours[half:]) < half // 20


@needs_data
def test_math500_solutions_graded_as_math_verify_grades_them():
    _check_math500_differential(120)


@pytest.mark.slow
@needs_data
def test_math500_all_solutions_graded_as_math_verify_grades_them():
    _check_math500_differential(None)


# ------------------------------------------------- benchmarks not on hand: fixtures of their schema

FIXTURES = Path(__file__).parent / "fixtures"


def test_livecodebench_reads_its_hub_schema_and_keeps_a_date_window():
    bench = get_benchmark("livecodebench")
    path = str(FIXTURES / "livecodebench_lite.jsonl")
    everything = bench.problems(path)
    assert [p["id"] for p in everything] == ["livecodebench/abc901_a", "livecodebench/1999Z",
                                             "livecodebench/9001", "livecodebench/9002"]
    window = bench.problems(path, options={"start_date": "2024-07-01", "end_date": "2024-12-31"})
    assert [p["task_id"] for p in window] == ["1999Z", "9001"]
    stdin, functional = everything[0], everything[2]
    # Public and private tests together; the private ones decoded from base64(zlib(pickle)).
    assert stdin["stdio_tests"] == [{"input": "3\n1 2 3\n", "output": "6\n"},
                                    {"input": "1\n-5\n", "output": "-5\n"},
                                    {"input": "4\n10 20 30 40\n", "output": "100\n"},
                                    {"input": "2\n1000000000 1000000000\n", "output": "2000000000\n"}]
    assert functional["entry_point"] == "countPairs"
    assert functional["functional_tests"]["inputs"] == [[[1, 2, 3, 4], 5], [[1, 1, 1], 2],
                                                        [[], 0], [[5, -5, 0], 0]]
    assert functional["functional_tests"]["outputs"] == [2, 3, 0, 1]
    assert "starter code" in functional["messages"][-1]["content"]
    assert "def countPairs" in functional["messages"][-1]["content"]
    assert "Read the inputs from stdin" in stdin["messages"][-1]["content"]
    assert bench.category_labels(functional) == ["coding", "coding/difficulty=medium",
                                                 "coding/platform=leetcode"]
    with pytest.raises(InputError, match=r"options.release: unknown release 'release_v9' "
                                         r"\(did you mean 'release_v6'\?\)"):
        bench.problems(path, options={"release": "release_v9"})
    with pytest.raises(InputError, match="not an ISO date"):
        bench.problems(path, options={"start_date": "last year"})


def test_livecodebench_private_tests_never_unpickle_objects():
    import base64
    import pickle
    import zlib

    from evals.livecodebench import decode_tests

    evil = base64.b64encode(zlib.compress(pickle.dumps(print))).decode()
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.print"):
        decode_tests(evil)


def test_gpqa_choices_are_shuffled_with_a_seed_per_question():
    bench = get_benchmark("gpqa_diamond")
    path = str(FIXTURES / "gpqa_diamond.csv")
    problems = bench.problems(path)
    assert len(problems) == 6 and {p["categories"]["domain"] for p in problems} == {
        "Physics", "Chemistry", "Biology"}
    again = bench.problems(path)
    assert [p["messages"] for p in problems] == [p["messages"] for p in again]
    for p in problems:
        text = p["messages"][0]["content"]
        gold = p["choices"]["ABCD".index(p["answer"])]
        assert f"\n{p['answer']}) {gold}" in text and "Answer: $LETTER" in text
    assert len({p["answer"] for p in problems}) > 1     # the gold letter is not always A
    # The order depends on the question and the seed, not on the row's position.
    assert [p["answer"] for p in bench.problems(path, 3)] == [p["answer"] for p in problems[:3]]
    other = bench.problems(path, options={"seed": 7})
    assert [p["answer"] for p in other] != [p["answer"] for p in problems]


LCB_SOLUTIONS = {  # task -> (a correct solution, a wrong one)
    "abc901_a": ("n = int(input())\nprint(sum(map(int, input().split())))\n",
                 "n = int(input())\nprint(sum(map(int, input().split())) % 1000000000)\n"),
    # Prints the mean as 4.5 where the expected output says 4.50: equal as decimals.
    "1999Z": ("import sys\nxs = [int(x) for x in sys.stdin.read().split()[1:]]\n"
              "print(*sorted(xs), sep='\\n')\nprint(sum(xs) / len(xs))\n",
              "import sys\nxs = [int(x) for x in sys.stdin.read().split()[1:]]\n"
              "print(*xs, sep='\\n')\nprint(sum(xs) / len(xs))\n"),
    # LeetCode style: `List` comes from the preamble, as in LiveCodeBench's harness.
    "9001": ("class Solution:\n    def countPairs(self, nums: List[int], target: int) -> int:\n"
             "        return sum(1 for i, j in combinations(range(len(nums)), 2)\n"
             "                   if nums[i] + nums[j] == target)\n",
             "class Solution:\n    def countPairs(self, nums: List[int], target: int) -> int:\n"
             "        return sum(1 for i in range(len(nums)) for j in range(len(nums))\n"
             "                   if i != j and nums[i] + nums[j] == target)\n"),
    "9002": ("class Solution:\n    def reverseWords(self, s: str) -> List[str]:\n"
             "        return s.split()[::-1]\n",
             "class Solution:\n    def reverseWords(self, s: str) -> List[str]:\n"
             "        return s.split(' ')[::-1]\n"),
}


@needs_bwrap
def test_livecodebench_stdin_and_functional_tests_grade_right_and_wrong_programs():
    problems = get_benchmark("livecodebench").problems(str(FIXTURES / "livecodebench_lite.jsonl"))
    items = []
    for p in problems:
        right, wrong = LCB_SOLUTIONS[p["task_id"]]
        items += [(p, _fenced(right)), (p, _fenced(wrong))]
    verdicts = verify_many(items)
    assert [v.ok for v in verdicts] == [True, False] * 4, [v.reason for v in verdicts]
    assert "wrong answer on test" in verdicts[1].reason


def test_gpqa_grades_the_final_letter_and_votes_on_it():
    from distill.eval import scoring

    bench = get_benchmark("gpqa_diamond")
    p = bench.problems(str(FIXTURES / "gpqa_diamond.csv"), 1)[0]
    wrong = next(x for x in "ABCD" if x != p["answer"])
    answers = [f"Thinking...\nAnswer: {p['answer']}", f"Answer: {wrong}", f"Answer: {wrong}",
               "I cannot decide."]
    verdicts = verify_many([(p, a) for a in answers])
    assert [v.ok for v in verdicts] == [True, False, False, False]
    q = scoring.Question(p["id"], bench.category_labels(p), [v.ok for v in verdicts],
                         [scoring.voted_answer(p, a) for a in answers])
    assert q.answers == [p["answer"], wrong, wrong, None]
    assert scoring.metric_value(q, "maj@4") == 0.0 and scoring.metric_value(q, "pass@4") == 1.0


# --------------------------------------------------------------------- differential: evalplus

MUTANTS = FIXTURES / "evalplus_humaneval_mutants.json"


def _mutant_verdicts(count: int | None):
    """distill's and evalplus' verdicts on the recorded mutants (record_evalplus_verdicts.py);
    in the default tier a seeded sample of `count` of the tasks whose canonical solutions are
    fast, all of them in the slow tier."""
    recorded = json.loads(MUTANTS.read_text())["samples"]
    problems = {p["task_id"]: p for p in get_benchmark("humaneval_plus").problems(
        str(FILES["humaneval_plus"]))}
    if count is not None:
        fast = sorted({s["task_id"] for s in recorded
                       if sum(problems[s["task_id"]]["reference_times_s"]) < 0.05})
        tasks = set(random.Random(0).sample(fast, count))
        recorded = [s for s in recorded if s["task_id"] in tasks]
    verdicts = verify_many([(problems[s["task_id"]], _fenced(s["solution"])) for s in recorded])
    return recorded, verdicts


def _check_agreement(recorded, verdicts):
    """Every mutant's verdict is evalplus' verdict. Canonical solutions must pass here; evalplus
    itself rejected three of them when the fixture was recorded (HumanEval/32, its own
    find_zero solution, and the plus inputs of HumanEval/15 and /59, past their time limits on
    a loaded machine), so for those the fixture's verdict is not the truth."""
    mutants = [(s, v) for s, v in zip(recorded, verdicts) if s["kind"] == "mutant"]
    disagree = [(s["task_id"], s["evalplus_status"], v.reason) for s, v in mutants
                if v.ok != s["evalplus_pass"]]
    assert disagree == []
    canonical = [(s["task_id"], v.reason) for s, v in zip(recorded, verdicts)
                 if s["kind"] == "canonical" and not v.ok]
    assert canonical == []
    # Both kinds are there: mutants that still pass (equivalent) and mutants that fail.
    assert 0 < sum(s["evalplus_pass"] for s, _ in mutants) < len(mutants)


@needs_data
@needs_bwrap
def test_humaneval_plus_verdicts_agree_with_evalplus_on_mutants():
    _check_agreement(*_mutant_verdicts(40))


@pytest.mark.slow
@needs_data
@needs_bwrap
def test_humaneval_plus_verdicts_agree_with_evalplus_on_every_mutant():
    _check_agreement(*_mutant_verdicts(None))


# ------------------------------------------------------ the Hub layouts of EvalPlus and friends

# The generated `test` programs of evalplus/mbppplus and evalplus/humanevalplus on the Hub:
# inputs and expected results embedded, compared through an `assertion` helper that uses
# numpy (written here in their shape, with a handful of inputs each).
_HUB_HELPERS = '''import numpy as np
from math import inf


def is_floats(x) -> bool:
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)):
        return all(isinstance(i, float) for i in x)
    if isinstance(x, np.ndarray):
        return x.dtype == np.float64 or x.dtype == np.float32
    return False


def assertion(out, exp, atol):
    exact_match = out == exp
    if atol == 0 and is_floats(exp):
        atol = 1e-6
    if not exact_match and atol != 0:
        assert np.allclose(out, exp, rtol=1e-07, atol=atol)
    else:
        assert exact_match

'''
MBPP_HUB_ROWS = [
    {"task_id": 2, "code": "def similar_elements(test_tup1, test_tup2):\n  return tuple(set(test_tup1) & set(test_tup2))\n",
     "prompt": "Write a function to find the shared elements from the given two lists.",
     "source_file": "Benchmark Questions Verification V2.ipynb", "test_imports": [],
     "test_list": ["assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))",
                   "assert set(similar_elements((1, 2, 3, 4),(5, 4, 3, 7))) == set((3, 4))"],
     "test": _HUB_HELPERS + "inputs = [[(3, 4, 5, 6), (5, 7, 4, 10)], [(1, 2, 3, 4), (5, 4, 3, 7)], "
             "[(11, 12, 14, 13), (17, 15, 14, 13)], [(), ()], [(1, 2, 3), ()]]\n"
             "results = [(4, 5), (3, 4), (13, 14), (), ()]\n"
             "for i, (inp, exp) in enumerate(zip(inputs, results)):\n"
             "    assertion(similar_elements(*inp), exp, 0)\n"},
    {"task_id": 82, "code": "import math\ndef volume_sphere(r):\n  return (4./3.) * math.pi * (r**3)\n",
     "prompt": "Write a function to find the volume of a sphere.",
     "source_file": "Mike's Copy of Benchmark Questions Verification V2.ipynb",
     "test_imports": ["import math"],
     "test_list": ["assert math.isclose(volume_sphere(10), 4188.790204786391, rel_tol=0.001)"],
     "test": _HUB_HELPERS + "inputs = [[10], [25], [20], [3.5], [1000000.0], [3.141]]\n"
             "results = [4188.790204786391, 65449.84694978735, 33510.32163829113, "
             "179.59438003021648, 4.1887902047863905e+18, 129.8052979860732]\n"
             "for i, (inp, exp) in enumerate(zip(inputs, results)):\n"
             "    assertion(volume_sphere(*inp), exp, 0.0001)\n"},
]
HUMANEVAL_HUB_ROW = {
    "task_id": "HumanEval/2",
    "prompt": '\n\ndef truncate_number(number: float) -> float:\n    """ Return the decimal part of '
              'the number.\n    >>> truncate_number(3.5)\n    0.5\n    """\n',
    "canonical_solution": "\n\n    return number - int(number)\n\n",
    "entry_point": "truncate_number",
    "test": _HUB_HELPERS.replace("assert np.allclose(out, exp, rtol=1e-07, atol=atol)",
                                 "np.testing.assert_allclose(out, exp, atol=atol)")
            + "def check(candidate):\n"
              "    inputs = [[3.5], [1.33], [123.456], [999.99999], [0.3333333], [1.0]]\n"
              "    results = [0.5, 0.33000000000000007, 0.45600000000000307, 0.9999900000000252, "
              "0.3333333, 0.0]\n"
              "    for i, (inp, exp) in enumerate(zip(inputs, results)):\n"
              "        assertion(candidate(*inp), exp, 1e-06)\n",
}


def _hub_repo(root: Path, rows: list[dict], split: str = "test", config: str = "default") -> Path:
    """A local copy of a Hub dataset repo: the data file and the README's `configs:`."""
    root.mkdir(parents=True)
    (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "README.md").write_text(f"---\nconfigs:\n- config_name: {config}\n  data_files:\n"
                                    f"  - split: {split}\n    path: {split}.jsonl\n---\n")
    return root


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    import datasets
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


@needs_bwrap
@pytest.mark.parametrize("split", ["test", "train"])   # the split's name depends on the revision
def test_mbpp_plus_reads_the_hub_layout(tmp_path, hf_cache, split):
    folder = _hub_repo(tmp_path / "mbppplus", MBPP_HUB_ROWS, split=split)
    problems = get_benchmark("mbpp_plus").problems(str(folder))
    assert [(p["id"], p["task_id"], p["entry_point"]) for p in problems] == [
        ("mbpp_plus/2", "Mbpp/2", "similar_elements"), ("mbpp_plus/82", "Mbpp/82", "volume_sphere")]
    # Asked as the release asks: the task's text and its first test.
    assert "Write a function to find the shared elements from the given two lists.\nassert " \
           "set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))\n" \
           in problems[0]["messages"][-1]["content"]
    assert problems[1]["tests"].startswith("import math\n")
    # The repo's data file alone is read by its columns, as the release file is.
    assert get_benchmark("mbpp_plus").problems(str(folder / f"{split}.jsonl")) == problems
    for p, row in zip(problems, MBPP_HUB_ROWS):
        assert verify(p, _fenced(row["code"])).ok, verify(p, _fenced(row["code"])).reason
    # A float answer off by rounding passes through the tolerance (numpy's allclose, which the
    # sandbox cannot import, done in the standard library); a wrong one fails on a plus input.
    close = "import math\ndef volume_sphere(r):\n  return (4/3)*math.pi*r*r*r"
    assert verify(problems[1], _fenced(close)).ok
    assert not verify(problems[1], _fenced(close.replace("4/3", "4.001/3"))).ok
    wrong = "def similar_elements(a, b):\n  return tuple(x for x in a if x in b) or (0,)"
    assert not verify(problems[0], _fenced(wrong)).ok


@needs_bwrap
def test_humaneval_plus_reads_the_hub_layout(tmp_path, hf_cache):
    folder = _hub_repo(tmp_path / "humanevalplus", [HUMANEVAL_HUB_ROW])
    (p,) = get_benchmark("humaneval_plus").problems(str(folder))
    assert p["id"] == "humaneval_plus/2" and p["entry_point"] == "truncate_number"
    assert p["tests"].rstrip().endswith("check(truncate_number)")
    assert verify(p, _fenced(HUMANEVAL_HUB_ROW["canonical_solution"])).ok
    assert verify(p, _fenced("    return number % 1.0")).ok       # within atol
    assert not verify(p, _fenced("    return round(number % 1.0, 2)")).ok


def test_read_rows_takes_a_local_copy_of_a_hub_repo(tmp_path, hf_cache):
    from distill.grading.benchmarks import file_sha256, read_rows
    rows = json.loads((DATA / "mbpp" / "sanitized-mbpp.json").read_text())
    from datasets import Dataset, Features, Sequence, Value
    features = Features({"source_file": Value("string"), "task_id": Value("int32"),
                         "prompt": Value("string"), "code": Value("string"),
                         "test_imports": Sequence(Value("string")),
                         "test_list": Sequence(Value("string"))})
    (tmp_path / "mbpp" / "sanitized").mkdir(parents=True)
    for split, lo, hi in (("test", 11, 510), ("train", 601, 974)):
        Dataset.from_list([r for r in rows if lo <= r["task_id"] <= hi], features=features).to_parquet(
            str(tmp_path / "mbpp" / "sanitized" / f"{split}-00000-of-00001.parquet"))
    (tmp_path / "mbpp" / "README.md").write_text(
        "---\nconfigs:\n- config_name: sanitized\n  data_files:\n  - split: train\n    path: "
        "sanitized/train-*\n  - split: test\n    path: sanitized/test-*\n---\n")
    folder = str(tmp_path / "mbpp")
    assert len(read_rows(folder, "google-research-datasets/mbpp", config="sanitized")) == 257
    assert len(read_rows(folder, "x", config="sanitized", split="train")) == 120
    bench = get_benchmark("mbpp")
    assert len(bench.problems(folder)) == 257
    # A folder is pinned by the content of its files, as a file is.
    version = bench.resolved_version(folder)
    assert version == bench.resolved_version(folder) and version.startswith(bench.version + "+sha256.")
    (tmp_path / "mbpp" / "README.md").write_text((tmp_path / "mbpp" / "README.md").read_text() + "\n")
    assert bench.resolved_version(folder) != version and len(file_sha256(folder)) == 64
    with pytest.raises(InputError, match="has several splits"):
        read_rows(folder, "x", config="sanitized", split=None)


def test_livecodebench_reads_the_release_files_of_a_folder(tmp_path):
    lines = (FIXTURES / "livecodebench_lite.jsonl").read_text().splitlines(True)
    folder = tmp_path / "lcb"
    folder.mkdir()
    (folder / "test.jsonl").write_text("".join(lines[:2]))
    (folder / "test2.jsonl").write_text("".join(lines[2:]))
    bench = get_benchmark("livecodebench")
    assert len(bench.problems(str(folder), options={"release": "release_v1"})) == 2
    assert len(bench.problems(str(folder), options={"release": "release_v2"})) == 4
    assert [p["task_id"] for p in bench.problems(str(folder), options={"release": "v2"})] == \
        ["9001", "9002"]
    with pytest.raises(InputError, match="test3.jsonl.*release_v3"):
        bench.problems(str(folder), options={"release": "release_v3"})


def test_decontamination_reads_the_hub_layout_and_names_a_broken_one(tmp_path, hf_cache):
    from distill.grading.decontaminate import Index, load_benchmarks
    folder = _hub_repo(tmp_path / "mbppplus", MBPP_HUB_ROWS)
    for data in (folder / "test.jsonl", folder):
        items, skipped = load_benchmarks(["mbpp_plus"], {"mbpp_plus": str(data)})
        assert skipped == {}
        assert [i for i, _ in items["mbpp_plus"]] == ["mbpp_plus/2", "mbpp_plus/82"]
    # An MBPP train prompt of the same task is found (MBPP+ holds tasks of MBPP's train split).
    hit = Index(items).check("You are an expert Python programmer, and here is your task: Write "
                             "a function to find the volume of a sphere. Your code should pass "
                             "these tests:\n\nassert math.isclose(volume_sphere(10), ...)")
    assert hit and hit.item == "mbpp_plus/82"
    # Data in neither layout: an error naming the benchmark and the column, not "not on hand".
    broken = _hub_repo(tmp_path / "broken", [{k: v for k, v in MBPP_HUB_ROWS[0].items()
                                              if k != "prompt"}])
    with pytest.raises(InputError) as e:
        load_benchmarks(["mbpp_plus"], {"mbpp_plus": str(broken)})
    assert "mbpp_plus" in str(e.value) and "'prompt'" in str(e.value)
    assert "not on hand" not in str(e.value)
    # Not on hand (no file, no Hub) is still skipped and named.
    _, skipped = load_benchmarks(["humaneval_plus"], {})
    assert skipped["humaneval_plus"].startswith("not on hand")
