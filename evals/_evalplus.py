"""Shared by humaneval_plus and mbpp_plus: reads EvalPlus rows, writes the expected outputs
of the canonical solutions to a cache file, and builds differential tests.

Expected outputs come from running each canonical solution once in the sandbox on all base and
plus inputs; they are cached under $DISTILL_CACHE (or ~/.cache/distill)/evalplus, keyed by the
dataset's content and this harness, and reused only when both match. The host never unpickles
what a sandbox printed: the pickled outputs stay an opaque base64 string that is embedded in
the test program and unpickled inside the next sandbox. Outputs above ~4 KB are stored as a
digest of their repr (HumanEval/15 alone would otherwise embed 60 MB in its tests).

Comparison follows evalplus (`==`, then allclose with the task's atol, 1e-6 for float outputs,
rtol 1e-7; its special oracles for find_zero and eight MBPP tasks), in plain Python because
the sandbox has no numpy. A candidate's time limit is max(10 s, 4 x canonical time + 5 s) and
its address space 4 GiB, as in evalplus.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import re
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from distill import sandbox
from distill.records import write_json

# A candidate gets at least this long, or 4x the canonical solution's time (evalplus' rule).
MIN_TIMEOUT_S = 10.0
# evalplus' address-space limit: some plus inputs build outputs of a gigabyte (Mbpp/255).
MEMORY_MB = 4096

MBPP_OUTPUT_NOT_NONE_TASKS = ["check_str", "text_match_three", "text_starta_endb"]
# Tasks compared by an oracle rather than by equality: their outputs are never digested.
SPECIAL_ORACLES = {"are_equivalent", "sum_div", "surface_Area", "digit_distance_nums",
                   "find_zero", "similar_elements", "find_char_long", "common_in_nested_lists",
                   "extract_singly", "larg_nnum", "intersection_array", "find_dissimilar",
                   "Diff", *MBPP_OUTPUT_NOT_NONE_TASKS}

_ORACLES = '''
import math as _distill_math
import sys as _distill_sys

_DISTILL_SET_EQ = {"similar_elements", "find_char_long", "common_in_nested_lists",
                   "extract_singly", "larg_nnum", "intersection_array", "find_dissimilar", "Diff"}
_DISTILL_NOT_NONE = {"check_str", "text_match_three", "text_starta_endb"}


def _distill_poly(xs, x):
    return sum(c * _distill_math.pow(x, i) for i, c in enumerate(xs))


def _distill_surface_area(base_edge, height):
    slant = _distill_math.sqrt((base_edge / 2) ** 2 + height ** 2)
    return round(base_edge ** 2 + 4 * (base_edge * slant) / 2)


def _distill_digit_distance(a, b):
    a, b = str(a), str(b)
    n = max(len(a), len(b))
    return sum(abs(int(x) - int(y)) for x, y in zip(a.zfill(n), b.zfill(n)))


def _distill_is_floats(x):
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(i, float) for i in x)
    return False


def _distill_close(a, b, atol):
    if isinstance(b, (list, tuple)):
        return isinstance(a, (list, tuple)) and len(a) == len(b) and all(
            _distill_close(x, y, atol) for x, y in zip(a, b))
    return abs(a - b) <= atol + 1e-7 * abs(b)


def _distill_match(name, dataset, inp, out, exp, atol):
    if _distill_is_digest(exp):
        try:
            return _distill_digest(out) == exp
        except Exception:
            return False
    exact = out == exp
    if dataset == "mbpp":
        if name == "are_equivalent":
            exact = True
        elif name == "sum_div":
            exact = exact or out == 0
        elif name == "surface_Area":
            exact = exact or abs(out - _distill_surface_area(*inp)) <= atol
        elif name == "digit_distance_nums":
            exact = exact or out == _distill_digit_distance(*inp)
        elif name in _DISTILL_SET_EQ:
            exact = set(out) == set(exp)
        elif name in _DISTILL_NOT_NONE:
            exact = out == exp if isinstance(out, bool) else exp == (out is not None)
    if dataset == "humaneval" and name == "find_zero":
        return abs(_distill_poly(*inp, out)) <= atol
    if atol == 0 and _distill_is_floats(exp):
        atol = 1e-6
    if not exact and atol != 0:
        return type(out) == type(exp) and _distill_close(out, exp, atol)
    return bool(exact)


# Huge outputs (HumanEval/15 returns strings of megabytes, Mbpp/255 lists of a gigabyte) are
# kept as a digest of their repr, 1024 items at a time: exact and type-sensitive (2 and 2.0
# differ there), streamed so that no second copy of the output is built.
_DISTILL_DIGEST = "__distill_digest__"
_distill_sys.set_int_max_str_digits(0)   # repr of HumanEval/139's factorials


def _distill_is_big(x, limit=4096):
    stack, size = [x], 0
    while stack:
        y = stack.pop()
        size += 1
        if isinstance(y, str):
            size += len(y)
        elif isinstance(y, int):
            size += y.bit_length() // 8
        elif isinstance(y, (list, tuple, set, frozenset, dict)):
            if len(y) > limit:
                return True
            stack.extend(y.items() if isinstance(y, dict) else y)
        if size > limit:
            return True
    return False


def _distill_digest(x):
    import hashlib
    h = hashlib.sha256()
    if type(x) is int:
        # Bytes, not repr: int -> str is quadratic (HumanEval/83 returns 10 ** 999998).
        h.update(b"int:" + x.to_bytes(x.bit_length() // 8 + 1, "little", signed=True))
    elif isinstance(x, (list, tuple)):
        h.update(("%s%d[" % (type(x).__name__, len(x))).encode())
        for i in range(0, len(x), 1024):
            h.update(repr(x[i:i + 1024]).encode("utf-8", "surrogatepass"))
    else:
        h.update(repr(x).encode("utf-8", "surrogatepass"))
    return (_DISTILL_DIGEST, h.hexdigest())


def _distill_is_digest(x):
    return type(x) is tuple and len(x) == 2 and x[0] == _DISTILL_DIGEST


def _distill_unpack(blob):
    import base64, pickle, zlib
    return pickle.loads(zlib.decompress(base64.b64decode(blob)))
'''

_RECORD = '''
def _distill_record(entry, blob, not_none, special):
    import base64, copy, pickle, sys, time, zlib
    fn = globals()[entry]
    outs = []
    took = 0.0
    for inp in _distill_unpack(blob):
        # Timed with the digest: checking a candidate does the same work.
        start = time.perf_counter()
        out = fn(*copy.deepcopy(inp))
        if not_none:
            out = out is not None
        if not special and _distill_is_big(out):
            out = _distill_digest(out)
        took += time.perf_counter() - start
        outs.append(out)
    sys.stdout.write(base64.b64encode(zlib.compress(pickle.dumps(outs, 4))).decode())
    sys.stdout.write("\\n%.6f\\n" % took)


_distill_record({entry!r}, {blob!r}, {not_none!r}, {special!r})
'''

_CHECK = '''
def _distill_check(entry, dataset, inputs, expected, atol):
    import copy
    fn = globals()[entry]
    inputs, expected = _distill_unpack(inputs), _distill_unpack(expected)
    assert len(inputs) == len(expected)
    for i, (inp, exp) in enumerate(zip(inputs, expected)):
        out = fn(*copy.deepcopy(inp))
        if not _distill_match(entry, dataset, inp, out, exp, atol):
            raise AssertionError("wrong answer on input %d: got %.80r, want %.80r" % (i, out, exp))


_distill_check({entry!r}, {dataset!r}, {inputs!r}, {expected!r}, {atol!r})
'''


def pack(obj) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(obj, 4))).decode()


def parse_inputs(value) -> list:
    return json.loads(value) if isinstance(value, str) else list(value or [])


def _cache_dir() -> Path:
    root = os.environ.get("DISTILL_CACHE") or Path.home() / ".cache" / "distill"
    return Path(root) / "evalplus"


def _expected_one(program: str) -> dict:
    r = sandbox.run_python(program, timeout_s=300, memory_mb=MEMORY_MB, output_bytes=64 << 20)
    if not r.ok:
        raise RuntimeError(f"canonical solution failed ({r.status}): {r.stderr[-500:]}")
    blob, took = r.stdout.strip().splitlines()[-2:]
    if not re.fullmatch(r"[A-Za-z0-9+/=]+", blob):
        raise RuntimeError("canonical run printed something other than its outputs")
    return {"expected": blob, "time_s": float(took)}


def expected_outputs(name: str, tasks: list[dict], workers: int = 2) -> dict[str, dict]:
    """task_id -> {"expected": packed outputs, "time_s"} for tasks with fields task_id,
    code (canonical program), entry_point, inputs (list), not_none; cached on disk."""
    key = hashlib.sha256(json.dumps([_ORACLES, _RECORD] + [[t["task_id"], t["code"], t["inputs"]]
                                                           for t in tasks],
                                    sort_keys=True, default=repr).encode()).hexdigest()[:16]
    path = _cache_dir() / f"{name}-{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    programs = [t["code"] + "\n" + _ORACLES + _RECORD.format(
        entry=t["entry_point"], blob=pack(t["inputs"]), not_none=t["not_none"],
        special=t["entry_point"] in SPECIAL_ORACLES) for t in tasks]
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(_expected_one, programs))
    out = {t["task_id"]: r for t, r in zip(tasks, results)}
    write_json(path, out)
    return out


def differential_tests(entry_point: str, dataset: str, inputs: list, expected: str,
                       atol: float) -> str:
    return _ORACLES + _CHECK.format(entry=entry_point, dataset=dataset, inputs=pack(inputs),
                                    expected=expected, atol=atol)


def timeout_for(time_s: float) -> float:
    return max(MIN_TIMEOUT_S, 4 * time_s + 5)
