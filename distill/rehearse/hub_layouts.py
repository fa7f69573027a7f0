"""Local copies of Hub dataset repos for rehearsing a recipe offline: reads the data on hand
(`shared/data`: the benchmarks' public releases and real rows of the Hub datasets) and writes,
under a root folder, one folder per Hub dataset in the repo's layout: README.md with its
`configs:` (and features), data files named as the repo names them, and a SOURCE.md saying
which rows are real and which were made here. `datasets.load_dataset(folder, config,
split=...)` reads a folder as it reads the Hub repo, so a recipe's prompt sources (`kind: hf,
path: <folder>`) and `eval.data_files` take them unchanged.

`answer_key(folders)` reads the folders back and says, per row, how to answer it right: a
teacher stand-in finds the entry whose `match` is in the prompt (`lookup`: the longest, as an
MBPP+ question holds its MBPP task's first test) and answers with `answer`.

Written by hand because nothing publishes these layouts offline: the Hub is unreachable here,
MBPP+ and HumanEval+ rows exist on hand only in their release layout (their Hub `test`
programs are rebuilt from it, expected results from one run of the canonical solution in the
sandbox), and GPQA's questions must never be copied (its rows here are made up).
"""

from __future__ import annotations

import base64
import csv
import itertools
import json
import pickle
import re
import shutil
import zlib
from pathlib import Path

import yaml

from distill.jsonl import numbered_rows

NUMINA = "AI-MO/NuminaMath-1.5"
MBPP = "google-research-datasets/mbpp"
MBPP_PLUS = "evalplus/mbppplus"
HUMANEVAL_PLUS = "evalplus/humanevalplus"
LIVECODEBENCH = "livecodebench/code_generation_lite"
GPQA = "Idavidrein/gpqa"

NUMINA_FEATURES = {"problem": "string", "solution": "string", "answer": "string",
                   "problem_type": "string", "question_type": "string",
                   "problem_is_valid": "string", "solution_is_valid": "string",
                   "source": "string", "synthetic": "bool"}
MBPP_FEATURES = {"source_file": "string", "task_id": "int32", "prompt": "string",
                 "code": "string", "test_imports": ["string"], "test_list": ["string"]}
MBPP_FULL_FEATURES = {"task_id": "int32", "text": "string", "code": "string",
                      "test_list": ["string"], "test_setup_code": "string",
                      "challenge_test_list": ["string"]}
MBPP_PLUS_FEATURES = {"task_id": "int64", "code": "string", "prompt": "string",
                      "source_file": "string", "test_imports": ["string"],
                      "test_list": ["string"], "test": "string"}
HUMANEVAL_PLUS_FEATURES = {"task_id": "string", "prompt": "string",
                           "canonical_solution": "string", "entry_point": "string",
                           "test": "string"}
# MBPP sanitized splits by task id, as the Hub's (schemas/mbpp-sanitized/schema.md).
MBPP_SPLITS = {"train": (601, 974), "test": (11, 510), "validation": (511, 600), "prompt": (1, 10)}
LCB_FILES = ["test.jsonl"] + [f"test{i}.jsonl" for i in range(2, 7)]


# -------------------------------------------------------------------------- writing

def _features(spec: dict) -> list[dict]:
    return [{"name": k, "sequence": v[0]} if isinstance(v, list) else {"name": k, "dtype": v}
            for k, v in spec.items()]


def _readme(folder: Path, hub_id: str, configs: list[dict], features: dict | None = None,
            per_config: dict[str, dict] | None = None) -> None:
    meta: dict = {}
    if features or per_config:    # the dtypes the Hub declares (the json and csv builders would guess)
        infos = [{"config_name": c["config_name"],
                  "features": _features((per_config or {}).get(c["config_name"]) or features or {})}
                 for c in configs]
        meta["dataset_info"] = infos[0] if len(infos) == 1 else infos
    meta["configs"] = configs
    (folder / "README.md").write_text(
        "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"
        f"# {hub_id} (local copy)\n\nThe Hub repo's layout, for an offline rehearsal of a "
        "recipe. Which rows are real and which were made here: SOURCE.md.\n")


def _parquet(path: Path, rows: list[dict], spec: dict) -> None:
    """A parquet file with the `datasets` features in its schema, as the Hub's are written."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Features, Sequence, Value
    features = Features({k: Sequence(Value(v[0])) if isinstance(v, list) else Value(v)
                         for k, v in spec.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([{k: r[k] for k in spec} for r in rows],
                                        schema=features.arrow_schema), path)


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _read_jsonl(path: Path) -> list[dict]:
    return [row for _, row in numbered_rows(path)]


# ------------------------------------------------------------------------ NuminaMath

def _numina_edge(problem: str, answer: str, question_type: str = "math-word-problem",
                 valid: str = "Yes") -> dict:
    return {"problem": problem, "solution": "(made here)", "answer": answer,
            "problem_type": "Algebra", "question_type": question_type, "problem_is_valid": valid,
            "solution_is_valid": "Yes", "source": "made-here", "synthetic": False}


# What the recipes' `where` and the prompts stage's gold check must leave out.
NUMINA_EDGE_ROWS = [
    _numina_edge("Show that the sum of two odd numbers is even.", "proof"),
    _numina_edge("How many primes divide zero? (made here)", "notfound"),
    _numina_edge("Find the number the figure shows. (made here)", ""),
    _numina_edge("Which is larger? (A) 2 (B) 3 (C) 1 (D) 0 (made here)", "B", question_type="MCQ"),
    _numina_edge("Find x in the triangle of the figure. (made here)", "7", valid="No"),
    _numina_edge("Evaluate the broken sum. (made here)", "\\frac{"),
]


def _from_gsm8k(row: dict) -> dict:
    solution, _, answer = row["answer"].rpartition("####")
    return {"problem": row["question"],
            "solution": re.sub(r"<<[^>]*>>", "", solution).strip(),   # calculator annotations
            "answer": answer.strip().replace(",", ""), "problem_type": "Algebra",
            "question_type": "math-word-problem", "problem_is_valid": "Yes",
            "solution_is_valid": "Yes", "source": "gsm8k-converted", "synthetic": False}


def _numina(folder: Path, shared: Path, n: int) -> None:
    real = _read_jsonl(shared / "schemas" / "numinamath-1.5" / "train.sample.jsonl")
    rows = numbered_rows(shared / "gsm8k" / "train.jsonl")
    gsm8k = [_from_gsm8k(r) for _, r in itertools.islice(rows, n)]
    _parquet(folder / "data" / "train-00000-of-00001.parquet",
             real + NUMINA_EDGE_ROWS + gsm8k, NUMINA_FEATURES)
    _readme(folder, NUMINA, [{"config_name": "default", "data_files": [
        {"split": "train", "path": "data/train-*"}]}], NUMINA_FEATURES)
    (folder / "SOURCE.md").write_text(f"""# {NUMINA}: what is real here

Columns and dtypes: the Hub card (shared/data/schemas/numinamath-1.5/schema.md). One split,
`train`, in `data/train-00000-of-00001.parquet` (the Hub shards its parquet files; how many
and their names were not checked).

- rows 1-2: the first 2 real train rows (shared/data/schemas/numinamath-1.5/train.sample.jsonl);
- rows 3-{2 + len(NUMINA_EDGE_ROWS)}: MADE HERE, source `made-here`: the cases a recipe must
  leave out (answer "proof", "notfound", "", a multiple-choice question, a problem marked
  invalid, an answer that does not parse);
- the other {len(gsm8k)} rows: CONVERTED from shared/data/gsm8k/train.jsonl (real GSM8K train
  questions), source `gsm8k-converted`: problem = question, solution = the worked answer
  without its `<<calc>>` annotations, answer = the number after `####` (commas removed).
""")


# ------------------------------------------------------------------------------ MBPP

def _mbpp(folder: Path, shared: Path, n: int) -> None:
    rows = json.loads((shared / "mbpp" / "sanitized-mbpp.json").read_text())
    full = _read_jsonl(shared / "mbpp" / "mbpp.jsonl")
    for split, (lo, hi) in MBPP_SPLITS.items():
        _parquet(folder / "sanitized" / f"{split}-00000-of-00001.parquet",
                 [r for r in rows if lo <= r["task_id"] <= hi], MBPP_FEATURES)
        _parquet(folder / "full" / f"{split}-00000-of-00001.parquet",
                 [r for r in full if lo <= r["task_id"] <= hi], MBPP_FULL_FEATURES)
    _readme(folder, MBPP, [{"config_name": name, "data_files": [
        {"split": s, "path": f"{name}/{s}-*"} for s in MBPP_SPLITS]} for name in ("full", "sanitized")],
        per_config={"full": MBPP_FULL_FEATURES, "sanitized": MBPP_FEATURES})
    (folder / "SOURCE.md").write_text(f"""# {MBPP} (configs `full` and `sanitized`): what is real here

All rows are real. `sanitized` ({len(rows)} rows): shared/data/mbpp/sanitized-mbpp.json;
`full` ({len(full)} rows): shared/data/mbpp/mbpp.jsonl (a copy of google-research's
mbpp.jsonl; its provenance and a caveat about a few hundred characters that may differ are in
shared/data/SOURCES.md). Both split by task id as the Hub splits them: prompt 1-10, test
11-510, validation 511-600, train 601-974.
""")


# --------------------------------------------------------------- MBPP+ and HumanEval+

_IS_FLOATS = '''import numpy as np
from math import inf


def is_floats(x) -> bool:
    # a float, or a list or tuple of floats only
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)):
        return all(isinstance(i, float) for i in x)
    if isinstance(x, np.ndarray):
        return x.dtype == np.float64 or x.dtype == np.float32
    return False


'''
_EXACT = '''def assertion(out, exp, atol):
    exact_match = out == exp
    if atol == 0 and is_floats(exp):
        atol = 1e-6
    if not exact_match and atol != 0:
        {close}
    else:
        assert exact_match


'''
# evalplus compares these MBPP tasks' outputs as sets (evals/_evalplus.py: _SET_EQ).
_AS_SETS = '''def assertion(out, exp, atol):
    if atol == 0 and is_floats(exp):
        atol = 1e-6
    out = set(out)
    exp = set(exp)
    if out != exp and atol != 0:
        assert np.allclose(out, exp, rtol=1e-07, atol=atol)
    else:
        assert out == exp, f"out: {out}, exp: {exp}"


'''
_LOOP = "for i, (inp, exp) in enumerate(zip(inputs, results)):\n    assertion({call}(*inp), exp, {atol!r})\n"


def _run(program: str, **limits):
    from distill.grading.sandbox import run_python
    return run_python(program, **{"timeout_s": 300.0, "memory_mb": 4096, **limits})


def _results(code: str, entry: str, inputs: list) -> str | None:
    """The canonical solution's outputs on the inputs, as a Python literal, from one run in
    the sandbox (the code is the benchmark's, but it runs nowhere else); None when it fails."""
    r = _run(f"from math import inf\n{code}\n\n_inputs = {inputs!r}\nimport sys\n"
             f"sys.stdout.write(repr([{entry}(*_i) for _i in _inputs]))\n",
             output_bytes=64 << 20, file_mb=256)
    return r.stdout if r.ok and not r.truncated else None


def _passes(program: str) -> bool:
    r = _run(program + "\nprint('distill-copy-ok')\n")
    return r.ok and r.stdout.rstrip().endswith("distill-copy-ok")


def _mbpp_plus(folder: Path, shared: Path, n: int) -> list[str]:
    from evals._evalplus import _SET_EQ, hub_program, parse_inputs
    from evals.mbpp_plus import _as_tuples

    sanitized = {r["task_id"]: r for r in json.loads((shared / "mbpp" / "sanitized-mbpp.json").read_text())}
    rows, dropped = [], []
    for r in _read_jsonl(shared / "evalplus" / "MbppPlus-v0.2.0.jsonl.gz")[:n]:
        task = int(r["task_id"].split("/")[1])
        s, entry, code = sanitized[task], r["entry_point"], r["canonical_solution"].lstrip("\n")
        inputs = _as_tuples(r["task_id"], parse_inputs(r["base_input"]) + parse_inputs(r["plus_input"]))
        results = _results(code, entry, inputs)
        assertion = _AS_SETS if entry in _SET_EQ else _EXACT.format(
            close="assert np.allclose(out, exp, rtol=1e-07, atol=atol)")
        test = (_IS_FLOATS + assertion + f"inputs = {inputs!r}\nresults = {results}\n"
                + _LOOP.format(call=entry, atol=r["atol"]))
        imports = "".join(f"{line}\n" for line in s["test_imports"])
        if results is None or not _passes(code + "\n" + imports + hub_program(test)):
            dropped.append(r["task_id"])
            continue
        rows.append({"task_id": task, "code": code, "prompt": s["prompt"],
                     "source_file": s["source_file"], "test_imports": s["test_imports"],
                     "test_list": s["test_list"], "test": test})
    _jsonl(folder / "test.jsonl", rows)
    _readme(folder, MBPP_PLUS, [{"config_name": "default", "data_files": [
        {"split": "test", "path": "test.jsonl"}]}], MBPP_PLUS_FEATURES)
    _evalplus_source(folder, MBPP_PLUS, "MbppPlus-v0.2.0.jsonl.gz", len(rows), dropped, """\
`code` is the release's canonical solution; `prompt`, `source_file`, `test_imports` and
`test_list` are MBPP's (shared/data/mbpp/sanitized-mbpp.json), as on the Hub. The split is
`test` (the latest revision's; an older one names it `train`).""")
    return dropped


def _humaneval_plus(folder: Path, shared: Path, n: int) -> list[str]:
    from evals._evalplus import hub_program, parse_inputs

    rows, dropped = [], []
    for r in _read_jsonl(shared / "evalplus" / "HumanEvalPlus-v0.1.10.jsonl.gz")[:n]:
        entry, code = r["entry_point"], r["prompt"] + r["canonical_solution"]
        inputs = parse_inputs(r["base_input"]) + parse_inputs(r["plus_input"])
        results = _results(code, entry, inputs)
        body = f"inputs = {inputs!r}\nresults = {results}\n" + _LOOP.format(call="candidate",
                                                                            atol=r["atol"])
        test = (_IS_FLOATS + _EXACT.format(close="np.testing.assert_allclose(out, exp, atol=atol)")
                + "def check(candidate):\n" + "".join("    " + ln for ln in body.splitlines(True)))
        if results is None or not _passes(code + "\n" + hub_program(test) + f"\ncheck({entry})\n"):
            dropped.append(r["task_id"])
            continue
        rows.append({"task_id": r["task_id"], "prompt": r["prompt"],
                     "canonical_solution": r["canonical_solution"], "entry_point": entry,
                     "test": test})
    _jsonl(folder / "test.jsonl", rows)
    _readme(folder, HUMANEVAL_PLUS, [{"config_name": "default", "data_files": [
        {"split": "test", "path": "test.jsonl"}]}], HUMANEVAL_PLUS_FEATURES)
    _evalplus_source(folder, HUMANEVAL_PLUS, "HumanEvalPlus-v0.1.10.jsonl.gz", len(rows), dropped,
                     "`task_id`, `prompt`, `canonical_solution` and `entry_point` are the "
                     "release's, as on the Hub.")
    return dropped


def _evalplus_source(folder: Path, hub_id: str, release: str, kept: int, dropped: list[str],
                     columns: str) -> None:
    left = (f"\nLeft out, because the rebuilt program did not pass with the canonical solution "
            f"(an output without a literal form): {', '.join(dropped)}.\n") if dropped else ""
    (folder / "SOURCE.md").write_text(f"""# {hub_id}: what is real here

The first {kept + len(dropped)} tasks of shared/data/evalplus/{release} (the real release),
in the Hub layout (shared/data/schemas/{hub_id.split('/')[1]}/schema.md). {columns}

`test` is REBUILT here, in the shape of the Hub's programs (numpy `assertion` helper, the
inputs and expected results embedded): no Hub-layout row could be copied. Inputs are the
release's base and plus inputs; results come from one run of the canonical solution in the
sandbox. evalplus' special oracles (find_zero's root check, MBPP's None checks) are not
reproduced: the canonical outputs are compared as the general assertion compares them, and
MBPP's set-valued tasks as sets.
{left}""")


# --------------------------------------------------------------------- LiveCodeBench

def _private(tests: list[dict]) -> str:
    """Encoded as the Hub encodes them: base64(zlib(pickle(JSON string))), pickle protocol 4,
    zlib's default level (byte for byte the real sample's encoding)."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests), protocol=4))).decode()


def _stdin(*pairs: tuple[str, str]) -> list[dict]:
    return [{"input": i, "output": o, "testtype": "stdin"} for i, o in pairs]


def _calls(*pairs: tuple[list, object]) -> list[dict]:
    return [{"input": "\n".join(json.dumps(a) for a in args), "output": json.dumps(out),
             "testtype": "functional"} for args, out in pairs]


def _made(file: str, qid: str, date: str, platform: str, title: str, content: str, tests: list,
          solution: str, func: str | None = None, signature: str = "") -> dict:
    return {"file": file, "question_title": title, "question_content": content + " (made here)",
            "platform": platform, "question_id": qid, "contest_id": qid.split("_")[0],
            "contest_date": f"{date}T00:00:00", "difficulty": "easy",
            "starter_code": f"class Solution:\n    def {func}(self, {signature}:\n        " if func else "",
            "tests": tests, "metadata": json.dumps({"func_name": func} if func else {}),
            "solution": solution}


# The made rows, dated so that each release file has one and the recipes' window
# (2024-08-01 .. 2025-01-31) holds a stdin and a LeetCode functional one.
LCB_MADE = [
    _made("test2.jsonl", "made01_a", "2023-11-05", "atcoder", "A. Sum Them",
          "Read N and then N integers on one line. Print their sum.",
          _stdin(("3\n1 2 3\n", "6\n"), ("1\n-4\n", "-4\n"), ("2\n1000000000 1000000000\n", "2000000000\n")),
          "n = int(input())\nprint(sum(map(int, input().split()[:n])))\n"),
    _made("test3.jsonl", "made02", "2024-03-10", "leetcode", "Count Even Numbers",
          "Given an integer array nums, return how many of its elements are even.",
          _calls(([[1, 2, 3, 4]], 2), ([[]], 0), ([[7, 9]], 0), ([[0, -2, 5]], 2)),
          "class Solution:\n    def countEven(self, nums):\n        return sum(1 for x in nums if x % 2 == 0)\n",
          func="countEven", signature="nums: List[int]) -> int"),
    _made("test4.jsonl", "made03_b", "2024-08-17", "atcoder", "B. Largest",
          "Read N and then N integers on one line. Print the largest of them.",
          _stdin(("4\n3 9 2 9\n", "9\n"), ("1\n-7\n", "-7\n"), ("3\n-1 -5 -3\n", "-1\n")),
          "input()\nprint(max(map(int, input().split())))\n"),
    _made("test5.jsonl", "made04", "2024-10-20", "leetcode", "Longest Run",
          "Given a string s, return the length of its longest run of equal adjacent characters.",
          _calls((["aabbbc"], 3), (["a"], 1), (["abab"], 1), (["zzzz"], 4)),
          "class Solution:\n    def longestRun(self, s):\n        best = cur = 1\n"
          "        for a, b in zip(s, s[1:]):\n            cur = cur + 1 if a == b else 1\n"
          "            best = max(best, cur)\n        return best\n",
          func="longestRun", signature="s: str) -> int"),
    _made("test5.jsonl", "made05_c", "2025-01-12", "codeforces", "C. Reverse Words",
          "Read T lines after the first (which holds T). Print each line with its words in "
          "reverse order, separated by single spaces.",
          _stdin(("2\nhello world\na b c\n", "world hello\nc b a\n"), ("1\nsolo\n", "solo\n")),
          "t = int(input())\nfor _ in range(t):\n    print(' '.join(reversed(input().split())))\n"),
    _made("test6.jsonl", "made06", "2025-03-02", "leetcode", "Sum of Squares",
          "Given an integer array nums, return the sum of the squares of its elements.",
          _calls(([[1, 2, 3]], 14), ([[]], 0), ([[-3]], 9)),
          "class Solution:\n    def sumSquares(self, nums):\n        return sum(x * x for x in nums)\n",
          func="sumSquares", signature="nums: List[int]) -> int"),
]
# A correct program for the one real row (Codeforces 1873A): at most one swap makes "abc"
# exactly when at most two positions differ from it.
LCB_SOLUTIONS = {
    "1873_A": "t = int(input())\nfor _ in range(t):\n    s = input().strip()\n"
              "    print('YES' if sum(a != b for a, b in zip(s, 'abc')) <= 2 else 'NO')\n",
    **{m["question_id"]: m["solution"] for m in LCB_MADE}}
LCB_COLUMNS = ["question_title", "question_content", "platform", "question_id", "contest_id",
               "contest_date", "starter_code", "difficulty", "public_test_cases",
               "private_test_cases", "metadata"]


def _livecodebench(folder: Path, shared: Path, n: int) -> None:
    files: dict[str, list[dict]] = {name: [] for name in LCB_FILES}
    files["test.jsonl"] += _read_jsonl(shared / "schemas" / "livecodebench-code_generation_lite"
                                       / "test.sample.jsonl")
    for m in LCB_MADE:
        # The first test is public, the rest private, as LiveCodeBench splits them.
        files[m["file"]].append({**{k: m.get(k) for k in LCB_COLUMNS},
                                 "public_test_cases": json.dumps(m["tests"][:1]),
                                 "private_test_cases": _private(m["tests"][1:])})
    for name, rows in files.items():
        _jsonl(folder / name, [{k: r[k] for k in LCB_COLUMNS} for r in rows])
    configs = [{"config_name": f"release_v{i}", "data_files": [
        {"split": "test", "path": LCB_FILES[:i]}]} for i in range(1, 7)]
    configs += [{"config_name": "release_latest", "data_files": [{"split": "test", "path": LCB_FILES}]}]
    configs += [{"config_name": f"v{i}", "data_files": [{"split": "test", "path": LCB_FILES[i - 1]}]}
                for i in range(1, 7)]
    _readme(folder, LIVECODEBENCH, configs, {c: "string" for c in LCB_COLUMNS})
    (folder / "SOURCE.md").write_text(f"""# {LIVECODEBENCH}: what is real here

The release files as the Hub repo names them ({', '.join(LCB_FILES)}), each one increment of
the releases (release_vN reads the first N files); the README's configs name them so that
`load_dataset(folder, "release_v5", split="test")` works too. All 11 columns are strings.

- test.jsonl: the 1 real row on hand (Codeforces 1873_A, shared/data/schemas/
  livecodebench-code_generation_lite/test.sample.jsonl);
- every other row is MADE HERE (question ids `made*`, "(made here)" in the text): {len(LCB_MADE)}
  easy problems dated one per file, the recipes' window 2024-08-01..2025-01-31 holding stdin
  and LeetCode functional ones (`class Solution` starter code, `metadata.func_name`). Their
  first test is public (a JSON string), the others private, encoded as the Hub encodes them:
  base64(zlib(pickle(JSON string))).
""")


# ------------------------------------------------------------------------------- GPQA

# Card order (shared/data/schemas/gpqa-diamond/schema.md); the per-validator columns that
# follow on the Hub were not captured and are left out.
GPQA_COLUMNS = [
    "Pre-Revision Question", "Pre-Revision Correct Answer", "Pre-Revision Incorrect Answer 1",
    "Pre-Revision Incorrect Answer 2", "Pre-Revision Incorrect Answer 3",
    "Pre-Revision Explanation", "Self-reported question-writing time (minutes)", "Question",
    "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3",
    "Explanation", "Revision Comments (from Question Writer)", "Subdomain",
    "Writer's Difficulty Estimate", "Extra Revised Question", "Extra Revised Explanation",
    "Extra Revised Correct Answer", "Extra Revised Incorrect Answer 1",
    "Extra Revised Incorrect Answer 2", "Extra Revised Incorrect Answer 3",
    "Non-Expert Validator Accuracy", "Majority Non-Expert Vals Incorrect",
    "Expert Validator Accuracy", "Record ID", "High-level domain"]
GPQA_FLOATS = {"Self-reported question-writing time (minutes)", "Non-Expert Validator Accuracy",
               "Majority Non-Expert Vals Incorrect", "Expert Validator Accuracy"}
# MADE HERE, easy on purpose: never GPQA's questions (its authors ask that they stay offline).
GPQA_MADE = [
    ("Physics", "Classical mechanics", "A stone falls from rest for 3 s with g = 10 m/s^2 and "
     "no air. What is its speed then?", "30 m/s", ["10 m/s", "45 m/s", "3 m/s"]),
    ("Physics", "Electromagnetism", "Two 4-ohm resistors are joined in parallel. What is the "
     "resistance of the pair?", "2 ohm", ["8 ohm", "4 ohm", "16 ohm"]),
    ("Chemistry", "Organic chemistry", "How many hydrogen atoms does one ethane molecule hold?",
     "6", ["4", "8", "2"]),
    ("Biology", "Molecular biology", "Which base pairs with adenine in DNA?", "thymine",
     ["uracil", "guanine", "cytosine"]),
]


def _gpqa(folder: Path, shared: Path, n: int) -> None:
    with open(folder / "gpqa_diamond.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, GPQA_COLUMNS)
        writer.writeheader()
        for i, (domain, sub, question, correct, wrong) in enumerate(GPQA_MADE, 1):
            writer.writerow({
                "Pre-Revision Question": question, "Pre-Revision Correct Answer": correct,
                **{f"Pre-Revision Incorrect Answer {j}": w for j, w in enumerate(wrong, 1)},
                "Pre-Revision Explanation": "made here",
                "Self-reported question-writing time (minutes)": 5.0, "Question": question,
                "Correct Answer": correct,
                **{f"Incorrect Answer {j}": w for j, w in enumerate(wrong, 1)},
                "Explanation": "made here", "Subdomain": sub,
                "Writer's Difficulty Estimate": "Easy undergraduate level (or easier)",
                "Non-Expert Validator Accuracy": 1.0, "Majority Non-Expert Vals Incorrect": 0.0,
                "Expert Validator Accuracy": 1.0, "Record ID": f"recMadeHere{i:02d}",
                "High-level domain": domain})
    _readme(folder, GPQA, [{"config_name": "gpqa_diamond", "data_files": [
        {"split": "train", "path": "gpqa_diamond.csv"}]}],
        {c: "float64" if c in GPQA_FLOATS else "string" for c in GPQA_COLUMNS})
    (folder / "SOURCE.md").write_text(f"""# {GPQA} (config `gpqa_diamond`): what is real here

Only the layout: the config, its one split `train` and the CSV's column names (card order,
shared/data/schemas/gpqa-diamond/schema.md; the per-validator columns that follow on the Hub
were not captured and are left out). All {len(GPQA_MADE)} rows are MADE HERE (record ids
`recMadeHere*`), easy questions written for this copy: GPQA's authors ask that its questions
never appear online, so none is kept anywhere here. Only `gpqa_diamond` is here (the Hub repo
also has gpqa_main, gpqa_extended and gpqa_experts).
""")


# ------------------------------------------------------------------------- the entry

BUILDERS = {NUMINA: _numina, MBPP: _mbpp, MBPP_PLUS: _mbpp_plus,
            HUMANEVAL_PLUS: _humaneval_plus, LIVECODEBENCH: _livecodebench, GPQA: _gpqa}


def build_hub_copies(root: Path, shared_data: Path, n: int) -> dict[str, Path]:
    """Writes a local copy of each Hub dataset the recipes read under `root/<owner>/<name>`
    (replacing an older one) and returns Hub id -> folder. `n` bounds the rows made from long
    sources: the GSM8K rows converted into NuminaMath's columns, and the MBPP+ and HumanEval+
    tasks (each rebuilt with one run of its canonical solution)."""
    out = {}
    for hub_id, build in BUILDERS.items():
        folder = Path(root) / hub_id
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        build(folder, Path(shared_data), n)
        out[hub_id] = folder
    return out


# ------------------------------------------------------------------------ answer key

def _parquet_rows(pattern: Path) -> list[dict]:
    import pyarrow.parquet as pq
    return [r for path in sorted(pattern.parent.glob(pattern.name))
            for r in pq.read_table(path).to_pylist()]


def _entries(hub_id: str, folder: Path) -> list[dict]:
    if hub_id == NUMINA:
        return [{"match": r["problem"].strip(), "kind": "math", "answer": r["answer"]}
                for r in _parquet_rows(folder / "data" / "train-*.parquet")]
    if hub_id == MBPP:
        # The benchmark shows a task's first test, a recipe all its tests; the configs rewrote
        # some tests and solutions, so a full-config prompt is matched by all of its tests
        # (the longer match wins) and answered with the full config's solution.
        return [{"match": r["test_list"][0], "kind": "code", "answer": r["code"]}
                for r in _parquet_rows(folder / "sanitized" / "*.parquet")] + \
               [{"match": "\n".join(r["test_list"]), "kind": "code", "answer": r["code"]}
                for r in _parquet_rows(folder / "full" / "*.parquet")]
    if hub_id == MBPP_PLUS:   # asked as text + first test (evals/mbpp_plus.py)
        return [{"match": r["prompt"].strip() + "\n" + r["test_list"][0], "kind": "code",
                 "answer": r["code"]} for r in _read_jsonl(folder / "test.jsonl")]
    if hub_id == HUMANEVAL_PLUS:
        return [{"match": r["prompt"], "kind": "code",
                 "answer": r["prompt"] + r["canonical_solution"]}
                for r in _read_jsonl(folder / "test.jsonl")]
    if hub_id == LIVECODEBENCH:
        return [{"match": r["question_content"], "kind": "code",
                 "answer": LCB_SOLUTIONS[r["question_id"]]}
                for name in LCB_FILES for r in _read_jsonl(folder / name)]
    if hub_id == GPQA:
        with open(folder / "gpqa_diamond.csv", newline="", encoding="utf-8") as f:
            return [{"match": r["Question"].strip(), "kind": "choice",
                     "answer": r["Correct Answer"].strip()} for r in csv.DictReader(f)]
    raise KeyError(f"no answer key for {hub_id!r}")


def answer_key(copies: dict[str, Path]) -> list[dict]:
    """One entry per row of the copies (as `build_hub_copies` returns them): `match`, a text
    that appears verbatim in the user prompt a recipe or benchmark renders from the row;
    `kind`: math | code | choice; `answer`: the gold answer, a correct program, or the
    correct option's text (the stand-in finds its letter in the prompt); `dataset`: the Hub id."""
    return [{**e, "dataset": hub_id} for hub_id, folder in copies.items()
            for e in _entries(hub_id, Path(folder))]


def lookup(key: list[dict], prompt: str) -> dict | None:
    """The entry for a prompt: of those whose `match` it holds, the longest (an MBPP+ question
    holds its MBPP task's first test too)."""
    return max((e for e in key if e["match"] in prompt), key=lambda e: len(e["match"]),
               default=None)
