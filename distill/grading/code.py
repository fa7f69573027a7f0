"""Grades code in the sandbox: reads a problem dict and a candidate program, returns a
`Verdict`. Three kinds of tests, any mix of them in one problem:

- `tests`: an assert program run after the candidate (HumanEval / MBPP style);
- `functional_tests`: {"inputs": [[args...], ...], "outputs": [...] (or "outputs_packed", an
  opaque blob from `record_outputs`), "atol": 0.0, "mode": "evalplus" | "exact" | "not_none",
  "checker": optional source of `check(inp, out, exp, atol) -> bool`, which may call
  `match(out, exp, atol)` for the mode's comparison}: the entry point (a function, or a
  method of class `Solution` as in LeetCode / LiveCodeBench) is called on each input inside
  the sandbox and its output compared there, against the full expected value: "evalplus" is
  `==`, then allclose with rtol 1e-7 and `atol` (1e-6 for float outputs when atol is 0), as
  evalplus does; "exact" is LiveCodeBench's `==` with tuples read as lists; "not_none" (MBPP+'s
  regex tasks) compares only whether the output is None;
- `stdio_tests`: [{"input": str, "output": str}, ...]: the program reads stdin and its stdout
  is compared by LiveCodeBench's rule (`compare_stdout`); one sandboxed run per test.

Time limits per test: with `reference_times_s` (one per functional or stdio test, from
`reference_times` on a reference solution), max(MIN_TEST_S, TIME_FACTOR x reference time), as
evalplus scales from its ground truth; otherwise `test_timeout_s` (default 6 s, as
LiveCodeBench). All functional tests and the asserts of one problem run in one sandboxed
process; grading stops at the first failing test.

A program passes only when the harness reaches its end and prints a per-run token: a
candidate that calls `sys.exit(0)` or `os._exit(0)` before the tests does not pass. Not
contained: a candidate that reads its own source for the token, or patches the harness's
functions, on purpose.
"""

from __future__ import annotations

import ast
import base64
import json
import pickle
import secrets
import zlib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

from distill.grading import sandbox
from distill.grading.extract import extract_code
from distill.grading.harness import HARNESS

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_MB = 1024
DEFAULT_TEST_TIMEOUT_S = 6.0   # LiveCodeBench's per-test limit, used without reference times
TIME_FACTOR = 4.0              # evalplus: a candidate may take 4x the reference solution...
# ...and at least this long per test. evalplus' floor is 1 s; on a loaded machine that fails
# correct solutions (Mbpp/255's 0.14 s inputs took over 1 s here, and evalplus itself failed
# canonical solutions under load), so the floor is 4 s. The whole run is still bounded by
# max(timeout_s, 4 x the reference's total + 5 s).
MIN_TEST_S = 4.0
SPEC_FILE = "functional_tests.pkl"


@dataclass
class Verdict:
    ok: bool
    reason: str
    # The grader failed, not the answer (the sandbox died or could not set up; a math-verify
    # worker crashed): never a final verdict. Graded again, never scored as wrong.
    infra: bool = False


# ------------------------------------------------------------------------------ programs

def _defines(code: str, name: str) -> bool:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name
                                                for t in node.targets):
            return True
    return False


def candidate_program(problem: dict, content: str) -> str:
    """The candidate's code as it will run: the problem's `preamble` (imports, as
    LiveCodeBench prepends), then the last code block of `content`. A problem with
    `code_prefix` (a HumanEval signature and docstring, with its imports and helper functions)
    accepts a bare function body: when the entry point is not defined the body continues the
    prefix; when it is, the prefix still goes first, since the function may use its imports
    and helpers (a def whose body is only a docstring is valid Python, and the candidate's def
    replaces it)."""
    code = extract_code(content or "")
    prefix = problem.get("code_prefix")
    entry = problem.get("entry_point")
    if prefix:
        if entry and not _defines(code, entry):
            if not code.strip("\n").startswith((" ", "\t")):    # a body written flush left
                code = "".join("    " + ln for ln in code.strip("\n").splitlines(True))
            code = prefix + code
        else:
            code = prefix + "\n" + code
    if problem.get("preamble"):
        code = problem["preamble"] + "\n" + code
    return code


def build_program(problem: dict, content: str) -> str:
    """Candidate code followed by the problem's assert tests."""
    return candidate_program(problem, content) + "\n" + (problem.get("tests") or "")


def _limits(problem: dict, n: int) -> list[float]:
    ref = problem.get("reference_times_s")
    if ref is not None and len(ref) == n:
        return [max(MIN_TEST_S, TIME_FACTOR * t) for t in ref]
    return [float(problem.get("test_timeout_s") or DEFAULT_TEST_TIMEOUT_S)] * n


def _functional_spec(problem: dict, limits: list[float], record: bool) -> bytes:
    ft = problem["functional_tests"]
    outputs_packed = ft.get("outputs_packed")
    return pickle.dumps({
        "entry_point": ft.get("entry_point") or problem.get("entry_point"),
        "inputs": list(ft["inputs"]),
        "outputs": None if record else ft.get("outputs"),
        "outputs_packed": None if record else outputs_packed,
        "atol": float(ft.get("atol") or 0.0), "mode": ft.get("mode") or "evalplus",
        "checker": ft.get("checker"), "limits": limits}, protocol=4)


def compare_stdout(got: str, want: str) -> bool:
    """LiveCodeBench's rule: the stripped lines must match in number; each pair must be equal,
    or else both lines split into tokens that all parse as Decimal and are equal
    (so `0.50` equals `0.5`, and `1 2` does not equal `12`)."""
    got_lines = [ln.strip() for ln in got.strip().split("\n")]
    want_lines = [ln.strip() for ln in want.strip().split("\n")]
    if len(got_lines) != len(want_lines):
        return False
    for g, w in zip(got_lines, want_lines):
        if g == w:
            continue
        try:
            if [Decimal(t) for t in g.split()] != [Decimal(t) for t in w.split()]:
                return False
        except (InvalidOperation, ValueError):
            return False
    return True


# ------------------------------------------------------------------------------- grading

def shorten(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _infra(result: sandbox.Result) -> bool:
    """Whether the sandbox failed rather than the program: it died during the run or could not
    place the program (an error with no exit code), or stopped answering past the program's
    wall limit plus its grace (run_python's "sandbox stopped answering"). A program that ran
    out of time (the sandbox stopped it and answered) or died of a signal failed on its own."""
    if result.status == "error":
        return result.exit_code is None
    return result.status == "timeout" and result.stderr == "sandbox stopped answering"


def _failed(result: sandbox.Result, suffix: str = "") -> Verdict:
    return Verdict(False, _reason(result) + suffix, infra=_infra(result))


def _reason(result: sandbox.Result) -> str:
    if _infra(result):
        return result.stderr or "sandbox error"
    if result.status in ("timeout", "memory"):
        return result.status
    if result.status == "output":
        return "output limit"
    if result.status == "error":
        return f"killed by signal {(result.exit_code or 128) - 128}"
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    if not lines:
        return f"exit code {result.exit_code}"
    return shorten(lines[-1].strip())


def _resources(problem: dict, timeout_s: float | None, memory_mb: int | None) -> tuple[float, int]:
    # A problem may raise the limits (evalplus tasks with heavy inputs), never lower them.
    timeout = max(timeout_s or DEFAULT_TIMEOUT_S, problem.get("timeout_s") or 0)
    memory = max(memory_mb or DEFAULT_MEMORY_MB, problem.get("memory_mb") or 0)
    return timeout, memory


def _run_in_process_tests(problem: dict, code: str, timeout: float, memory: int,
                          record: bool = False) -> tuple[sandbox.Result, str]:
    """Candidate + asserts + functional tests in one sandboxed process."""
    token = secrets.token_hex(16)
    program = code + "\n" + (problem.get("tests") or "")
    files: dict[str, bytes] = {}
    wall = timeout
    if problem.get("functional_tests"):
        n = len(problem["functional_tests"]["inputs"])
        limits = _limits(problem, n)
        files[SPEC_FILE] = _functional_spec(problem, limits, record)
        ref = problem.get("reference_times_s")
        if ref is not None and len(ref) == n:
            wall = max(timeout, TIME_FACTOR * sum(ref) + 5)
        else:
            wall = max(timeout, sum(limits) + 5)
        program += HARNESS + f"\n_distill_functional({SPEC_FILE!r}, {token!r})\n"
    program += f"\nprint({token!r})\n"
    out_bytes = (1 << 30) if record else 1 << 16
    # The tmpfs must hold the tests (HumanEval/15's expected outputs are 60 MB packed).
    # Powers of two, so that a few pools of warm sandboxes (one per size) serve every problem.
    need_mb = 2 * (sum(len(v) for v in files.values()) >> 20) + 16
    file_mb = 64
    while file_mb < need_mb or (record and file_mb < 1024):
        file_mb *= 2
    result = sandbox.run_python(program, timeout_s=wall, memory_mb=memory, files=files,
                                output_bytes=out_bytes, file_mb=file_mb)
    return result, token


def verify_code(problem: dict, content: str, timeout_s: float | None = None,
                memory_mb: int | None = None) -> Verdict:
    """Grades one candidate against every kind of test the problem has."""
    if not (content or "").strip():
        return Verdict(False, "no code")
    timeout, memory = _resources(problem, timeout_s, memory_mb)
    code = candidate_program(problem, content)
    if problem.get("tests") or problem.get("functional_tests") or not problem.get("stdio_tests"):
        result, token = _run_in_process_tests(problem, code, timeout, memory)
        if not result.ok:
            return _failed(result)
        if token not in result.stdout.rsplit("\n", 2)[-2:]:
            return Verdict(False, "exited before the tests finished")
    tests = problem.get("stdio_tests") or []
    limits = _limits(problem, len(tests))
    for i, (test, limit) in enumerate(zip(tests, limits)):
        want = test["output"]
        r = sandbox.run_python(code, stdin=test["input"], timeout_s=limit, memory_mb=memory,
                               output_bytes=max(1 << 16, 2 * len(want) + 4096))
        if not r.ok:
            return _failed(r, f" on test {i}")
        if r.truncated:
            return Verdict(False, f"output limit on test {i}")
        if not compare_stdout(r.stdout, want):
            return Verdict(False, f"wrong answer on test {i}: got {shorten(r.stdout, 60)!r}, "
                                  f"want {shorten(want, 60)!r}")
    return Verdict(True, "ok")


# ---------------------------------------------------------------------- reference runs

class Recorded(NamedTuple):
    blob: str             # the outputs, packed: functional_tests["outputs_packed"]
    times_s: list[float]  # the reference's time per input: problem["reference_times_s"]
    wall_s: float         # the whole sandboxed run: start, loading the inputs, packing outputs


def record_outputs(problem: dict, solution: str, *, timeout_s: float = 300.0,
                   memory_mb: int = 4096) -> Recorded:
    """Runs a reference solution on the problem's functional inputs; returns its outputs as an
    opaque packed blob (pass it back as `functional_tests["outputs_packed"]`; it is unpickled
    only inside a sandbox), its time per input and the whole run's time. Grading a candidate
    unpacks the expected outputs and compares them, work the per-input times leave out (for
    Mbpp/255's gigabyte of outputs, 6 of the 9 s), so the whole run is what a problem's
    overall limit scales from. Raises RuntimeError if it fails."""
    code = candidate_program(problem, solution)
    result, token = _run_in_process_tests(problem, code, timeout_s, memory_mb, record=True)
    lines = result.stdout.rstrip("\n").rsplit("\n", 3)
    if not result.ok or result.truncated or len(lines) < 3 or lines[-1] != token:
        raise RuntimeError(f"reference solution of {problem.get('id')!r} failed "
                           f"({result.status}): {_reason(result)}")
    blob, times = lines[-3], json.loads(lines[-2])
    base64.b64decode(blob, validate=True)    # only ever an opaque base64 string
    return Recorded(blob, [float(t) for t in times], result.duration_s)


def reference_times(problem: dict, solution: str, *, timeout_s: float = 300.0,
                    memory_mb: int = 4096) -> list[float]:
    """Seconds a reference solution takes on each functional test (or, for a problem with
    only stdin tests, on each stdin test); store them as `problem["reference_times_s"]` to
    scale the candidates' per-test limits. Raises RuntimeError if the reference fails."""
    if problem.get("functional_tests"):
        return record_outputs(problem, solution, timeout_s=timeout_s, memory_mb=memory_mb).times_s
    code = candidate_program(problem, solution)
    times = []
    for i, test in enumerate(problem.get("stdio_tests") or []):
        r = sandbox.run_python(code, stdin=test["input"], timeout_s=timeout_s,
                               memory_mb=memory_mb,
                               output_bytes=max(1 << 16, 2 * len(test["output"]) + 4096))
        if not r.ok or not compare_stdout(r.stdout, test["output"]):
            raise RuntimeError(f"reference solution of {problem.get('id')!r} fails stdin "
                               f"test {i}: {_reason(r) if not r.ok else 'wrong answer'}")
        times.append(r.duration_s)
    return times


def livecodebench_tests(test_cases: list[dict], fn_name: str | None = None) -> dict:
    """LiveCodeBench's test cases ({"input", "output", "testtype": "stdin" | "functional"})
    as problem fields: `stdio_tests`, or `functional_tests` in "exact" mode, where each input is
    one JSON value per line (the method's arguments) and the output one JSON value, as
    LiveCodeBench parses them."""
    if any(t.get("testtype") == "functional" for t in test_cases):
        if not fn_name:
            raise ValueError("functional LiveCodeBench tests need the method name (func_name)")
        return {"functional_tests": {
            "entry_point": fn_name, "mode": "exact",
            "inputs": [[json.loads(line) for line in t["input"].split("\n") if line.strip()]
                       for t in test_cases],
            "outputs": [json.loads(t["output"]) for t in test_cases]}}
    return {"stdio_tests": [{"input": t["input"], "output": t["output"]} for t in test_cases]}


def pack(obj) -> str:
    """Packs trusted values for `functional_tests["outputs_packed"]`."""
    return base64.b64encode(zlib.compress(pickle.dumps(obj, 4))).decode()
