"""LiveCodeBench code generation (livecodebench/code_generation_lite: contest problems from
LeetCode, AtCoder and Codeforces, each with its contest date). Options: `release` picks the
version tag (release_v1 ... release_v6 are cumulative, 400 to 1,055 problems; v1 ... v6 are one
increment each) and `start_date` / `end_date` (ISO dates, inclusive) keep only the problems
published inside a window, so a model is scored on contests after its training cutoff.

Two kinds of tests, as LiveCodeBench grades them: stdin/stdout programs (AtCoder, Codeforces)
and functional calls of a LeetCode `class Solution` method (`metadata.func_name`), public and
private tests together. Categories: difficulty and platform.

A local copy: `eval.data_files.livecodebench` names one release file, or a folder holding the
release files as the Hub repo names them (test.jsonl, test2.jsonl, ... test6.jsonl), of which
the release's files are read.

Private tests are stored as base64(zlib(pickle(json))). They are unpickled here with an
unpickler that refuses every global, so a tampered file can only fail to load, never run code
on the host.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import zlib
from datetime import date, datetime
from pathlib import Path

from distill.grading.benchmarks import Benchmark, fill, hub_access, read_rows, user
from distill.errors import InputError
from distill.grading.verify import livecodebench_tests

HUB = "livecodebench/code_generation_lite"
TEST_TIMEOUT_S = 6.0   # LiveCodeBench's limit per test
# What LiveCodeBench's harness puts before every candidate: LeetCode starter code uses
# `List[int]` without importing it, and solutions lean on these modules.
_MODULES = ["string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math",
            "random", "statistics", "itertools", "functools", "operator", "io", "sys", "json"]
PREAMBLE = ("".join(f"from {m} import *\n" for m in _MODULES + ["builtins", "typing"])
            + "".join(f"import {m}\n" for m in _MODULES) + "sys.setrecursionlimit(50000)\n")
_FILES = ["test.jsonl"] + [f"test{i}.jsonl" for i in range(2, 7)]
RELEASES = {f"release_v{i}": _FILES[:i] for i in range(1, 7)}
RELEASES |= {"release_latest": _FILES} | {f"v{i}": [_FILES[i - 1]] for i in range(1, 7)}

SYSTEM = ("You are an expert Python programmer. You will be given a question (problem "
          "specification) and will generate a correct Python program that matches the "
          "specification and passes all tests.")
PROMPT = "### Question:\n{question}\n\n{format}### Answer: (use the provided format with backticks)\n\n"
STDIN_FORMAT = ("### Format: Read the inputs from stdin solve the problem and write the answer to "
                "stdout (do not directly test on the sample inputs). Enclose your code within "
                "delimiters as follows. Ensure that when the python program runs, it reads the "
                "inputs, runs the algorithm and writes output to STDOUT.\n```python\n"
                "# YOUR CODE HERE\n```\n\n")
STARTER_FORMAT = ("### Format: You will use the following starter code to write the solution to "
                  "the problem and enclose your code within delimiters.\n```python\n{starter}\n"
                  "```\n\n")


class _StringsOnly(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a test file")


def decode_tests(blob: str) -> list[dict]:
    """Public tests are JSON; private ones JSON, or base64(zlib(pickle(JSON string)))."""
    try:
        return json.loads(blob)
    except json.JSONDecodeError:
        pass
    text = _StringsOnly(io.BytesIO(zlib.decompress(base64.b64decode(blob)))).load()
    if not isinstance(text, str):
        raise ValueError("private tests did not decode to a JSON string")
    return json.loads(text)


def _hub_rows(release: str) -> list[dict]:
    from huggingface_hub import hf_hub_download
    rows = []
    for name in RELEASES[release]:
        with hub_access(HUB):
            path = hf_hub_download(HUB, name, repo_type="dataset")
        rows.extend(read_rows(path, HUB))
    return rows


def _folder_rows(folder: Path, release: str) -> list[dict]:
    """The release's files from a folder laid out as the Hub repo is."""
    rows = []
    for name in RELEASES[release]:
        if not (folder / name).is_file():
            raise InputError(f"{name} is missing; {release} reads "
                             f"{', '.join(RELEASES[release])}", file=str(folder),
                             key="eval.data_files.livecodebench")
        rows.extend(read_rows(str(folder / name), HUB))
    return rows


def _day(value, key: str) -> date | None:
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        raise InputError(f"not an ISO date: {value!r}", key=key) from None


def load(data_file: str | None = None, limit: int | None = None, release: str = "release_v6",
         start_date: str | None = None, end_date: str | None = None) -> list[dict]:
    if release not in RELEASES:
        raise InputError(f"unknown LiveCodeBench release {release!r}; known: "
                         f"{', '.join(RELEASES)}", key="eval.benchmark.livecodebench.options.release")
    start = _day(start_date, "eval.benchmark.livecodebench.options.start_date")
    end = _day(end_date, "eval.benchmark.livecodebench.options.end_date")
    if data_file and Path(data_file).is_dir():
        rows = _folder_rows(Path(data_file), release)
    else:
        rows = read_rows(data_file, HUB) if data_file else _hub_rows(release)
    problems = []
    for row in rows:
        day = datetime.fromisoformat(str(row["contest_date"])).date()
        if (start and day < start) or (end and day > end):
            continue
        meta = json.loads(row.get("metadata") or "{}")
        starter = (row.get("starter_code") or "").strip()
        fmt = fill(STARTER_FORMAT, starter=starter) if starter else STDIN_FORMAT
        tests = decode_tests(row["public_test_cases"]) + decode_tests(row["private_test_cases"])
        problem = {
            "id": f"livecodebench/{row['question_id']}",
            "task_id": row["question_id"],
            "source": "livecodebench",
            "messages": [{"role": "system", "content": SYSTEM},
                         *user(fill(PROMPT, question=row["question_content"], format=fmt))],
            "verifier": "code",
            "answer": None,
            "tests": None,
            "entry_point": meta.get("func_name"),
            "test_timeout_s": TEST_TIMEOUT_S,
            "preamble": PREAMBLE,
            # stdin/stdout programs, or LeetCode calls compared with == (exact mode)
            **livecodebench_tests(tests, meta.get("func_name")),
        }
        problems.append({
            **problem,
            "contest_date": day.isoformat(),
            "categories": {"difficulty": row.get("difficulty"), "platform": row.get("platform")},
        })
    return problems[:limit]


# open-r1 takes 16 samples per LiveCodeBench problem.
BENCHMARK = Benchmark(name="livecodebench", version="code_generation_lite", category="coding",
                      hub=HUB, load=load, scorer="code", prompt=PROMPT,
                      categories=("difficulty", "platform"),
                      options={"release": "release_v6", "start_date": None, "end_date": None},
                      choices={"release": tuple(RELEASES)}, samples=16)
