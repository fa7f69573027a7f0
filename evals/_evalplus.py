"""Shared by humaneval_plus and mbpp_plus: reads EvalPlus rows, writes the expected outputs
of the canonical solutions to a cache file, and builds the differential functional tests.

Two layouts are read. The release files (shared/data/evalplus, evalplus' own loaders) carry
`canonical_solution`, `base_input` and `plus_input`: the functional tests below are built
from them. The Hub datasets (evalplus/mbppplus, evalplus/humanevalplus) carry instead a `test`
program with the inputs and expected results embedded, which runs as it is (`hub_program`).

Expected outputs come from running each canonical solution once in the sandbox on all base and
plus inputs (`distill.grading.verify.record_outputs`); they are cached under $DISTILL_CACHE
(or ~/.cache/distill)/evalplus, keyed by the dataset's content and the harness, and reused
only when both match. The host never unpickles what a sandbox printed: the outputs stay an
opaque blob that is unpickled inside the sandbox that grades a candidate, where each output is
compared in full with the expected value as evalplus compares it (`==`, then allclose with the
task's atol, 1e-6 for float outputs, rtol 1e-7), with evalplus' special oracles for find_zero
and eight MBPP tasks. A candidate gets 4 x the canonical time per input (at least 4 s;
evalplus' floor is 1 s), 4 x the canonical solution's whole run overall, and 4 GiB of address
space, as in evalplus.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from distill.grading.harness import HARNESS
from distill.grading.verify import record_outputs
from distill.records import write_json

# A candidate gets at least this long in all, or 4x the canonical solution's whole sandboxed
# run (start, loading inputs and outputs, the calls) + 5 s.
MIN_TIMEOUT_S = 10.0
# evalplus' address-space limit: some plus inputs build outputs of a gigabyte (Mbpp/255).
MEMORY_MB = 4096

# A Hub `test` program runs every base and plus input in one process, with no reference
# times to scale from (the release layout's functional tests have them).
HUB_TIMEOUT_S = 60.0

# The sandbox runs the standard library only (distill/sandbox.py), and the Hub's test
# programs import numpy for np.allclose, np.testing.assert_allclose and np.ndarray (in
# isinstance checks). This stands in for those with numpy's rule, |a - b| <= atol + rtol *
# |b| element-wise over sequences of one length (equal values, infinities too, are close).
NUMPY_STAND_IN = """
class _DistillNumpy:
    class ndarray:
        pass
    float32 = float64 = float

    @staticmethod
    def allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
        def close(x, y):
            if isinstance(x, (list, tuple)) or isinstance(y, (list, tuple)):
                return (isinstance(x, (list, tuple)) and isinstance(y, (list, tuple))
                        and len(x) == len(y) and all(close(i, j) for i, j in zip(x, y)))
            if x == y:
                return True
            if equal_nan and x != x and y != y:
                return True
            return abs(x - y) <= atol + rtol * abs(y)
        return close(a, b)

    class testing:
        @staticmethod
        def assert_allclose(actual, desired, rtol=1e-07, atol=0, equal_nan=True, **_):
            if not _DistillNumpy.allclose(actual, desired, rtol=rtol, atol=atol,
                                          equal_nan=equal_nan):
                raise AssertionError("not close: %.80r != %.80r" % (actual, desired))


np = _DistillNumpy
"""

MBPP_OUTPUT_NOT_NONE_TASKS = ["check_str", "text_match_three", "text_starta_endb"]
_SET_EQ = {"similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly",
           "larg_nnum", "intersection_array", "find_dissimilar", "Diff"}

# evalplus' special oracles (evalplus/eval/__init__.py), as checkers run in the sandbox.
# `match` is the default comparison (== then allclose), which evalplus applies after them.
_CHECKERS = {
    ("humaneval", "find_zero"): '''
import math
def check(inp, out, exp, atol):
    return abs(sum(c * math.pow(out, i) for i, c in enumerate(inp[0]))) <= atol
''',
    ("mbpp", "are_equivalent"): "def check(inp, out, exp, atol):\n    return True\n",
    ("mbpp", "sum_div"): '''
def check(inp, out, exp, atol):
    return out == 0 or match(out, exp, atol)
''',
    ("mbpp", "surface_Area"): '''
import math
def check(inp, out, exp, atol):
    base_edge, height = inp
    slant = math.sqrt((base_edge / 2) ** 2 + height ** 2)
    want = round(base_edge ** 2 + 4 * (base_edge * slant) / 2)
    try:
        if abs(out - want) <= atol:
            return True
    except Exception:
        pass
    return match(out, exp, atol)
''',
    ("mbpp", "digit_distance_nums"): '''
def check(inp, out, exp, atol):
    a, b = str(inp[0]), str(inp[1])
    n = max(len(a), len(b))
    if out == sum(abs(int(x) - int(y)) for x, y in zip(a.zfill(n), b.zfill(n))):
        return True
    return match(out, exp, atol)
''',
}
_SET_EQ_CHECKER = '''
def check(inp, out, exp, atol):
    try:
        if set(out) == set(exp):
            return True
    except Exception:
        return False
    return atol != 0 and match(out, exp, atol)
'''


def hub_program(test: str) -> str:
    """A Hub layout's `test` program as it runs in the sandbox: numpy's import replaced by
    the stand-in above."""
    return re.sub(r"^import numpy as np[ \t]*$", lambda _: NUMPY_STAND_IN, test, count=1,
                  flags=re.M)


def entry_point(code: str, first_test: str | None) -> str | None:
    """The function a Hub MBPP+ row is about: the one its code defines, or among several the
    one its first test calls (else the last defined, helpers come first)."""
    from evals.mbpp import _entry_point
    try:
        defs = [n.name for n in ast.parse(code).body
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    except SyntaxError:
        defs = []
    called = _entry_point(first_test) if first_test else None
    if called and (called in defs or not defs):
        return called
    return defs[-1] if defs else None


def parse_inputs(value) -> list:
    return json.loads(value) if isinstance(value, str) else list(value or [])


def _cache_dir() -> Path:
    root = os.environ.get("DISTILL_CACHE") or Path.home() / ".cache" / "distill"
    return Path(root) / "evalplus"


def _mode(dataset: str, entry_point: str) -> str:
    return "not_none" if dataset == "mbpp" and entry_point in MBPP_OUTPUT_NOT_NONE_TASKS \
        else "evalplus"


def _checker(dataset: str, entry_point: str) -> str | None:
    if dataset == "mbpp" and entry_point in _SET_EQ:
        return _SET_EQ_CHECKER
    return _CHECKERS.get((dataset, entry_point))


def expected_outputs(name: str, tasks: list[dict], workers: int = 2) -> dict[str, dict]:
    """task_id -> {"expected": packed outputs, "times_s": per input, "wall_s": the whole run}
    for tasks with fields task_id, code (canonical program), entry_point, inputs (list); cached
    on disk."""
    dataset = "mbpp" if name.startswith("mbpp") else "humaneval"
    key = hashlib.sha256(json.dumps([HARNESS, "wall_s"] + [
        [t["task_id"], t["code"], t["inputs"], _mode(dataset, t["entry_point"])]
        for t in tasks], sort_keys=True, default=repr).encode()).hexdigest()[:16]
    path = _cache_dir() / f"{name}-{key}.json"
    if path.is_file():
        return json.loads(path.read_text())

    def one(t: dict) -> dict:
        problem = {"id": t["task_id"], "entry_point": t["entry_point"],
                   "functional_tests": {"inputs": t["inputs"],
                                        "mode": _mode(dataset, t["entry_point"])}}
        rec = record_outputs(problem, t["code"], memory_mb=MEMORY_MB)
        return {"expected": rec.blob, "times_s": rec.times_s, "wall_s": rec.wall_s}

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(one, tasks))
    out = {t["task_id"]: r for t, r in zip(tasks, results)}
    write_json(path, out)
    return out


def functional_tests(entry_point: str, dataset: str, inputs: list, expected: str,
                     atol: float) -> dict:
    """The `functional_tests` of a problem: every base and plus input, the canonical outputs
    (packed), the task's tolerance and evalplus' oracle for the task, if it has one."""
    return {"inputs": inputs, "outputs_packed": expected, "atol": atol,
            "mode": _mode(dataset, entry_point), "checker": _checker(dataset, entry_point)}


def timeout_for(expected: dict) -> float:
    """A candidate's overall limit from its task's entry in `expected_outputs`: 4x the canonical
    solution's whole sandboxed run + 5 s (the run holds its time on the inputs). The time on
    the inputs alone leaves out unpacking and comparing the expected outputs: Mbpp/255's
    canonical solution took 3.3 s on its inputs and 9.4 s in all, so a limit of 18 s from the
    inputs' time timed it out in CI under load; from the whole run it is about 40 s."""
    return max(MIN_TIMEOUT_S, 4 * expected["wall_s"] + 5)
