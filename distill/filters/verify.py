"""The shared scorer: reads a problem dict and an answer text, returns a `Verdict`.

The filter stage grades teacher traces and the eval stage grades students with these same
functions, so a benchmark score and a kept trace mean the same thing.

- math: the last `\\boxed{...}` of the answer (or a final "the answer is X" line) against the
  gold answer with math-verify;
- code: the last fenced code block (or the whole text) followed by the problem's tests, run in
  the sandbox; correct iff the program exits 0;
- none: always kept.
"""

from __future__ import annotations

import ast
import json
import re
import select
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from distill import sandbox

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_MB = 1024
MATH_TIMEOUT_S = 5           # math-verify's own SIGALRM limits, per parse and per comparison
MATH_HARD_TIMEOUT_S = 30.0   # outer limit on a worker process, which is killed past it


@dataclass
class Verdict:
    ok: bool
    reason: str


# ------------------------------------------------------------------------------ extraction

def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (or \\fbox{...}), braces balanced."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
    return None


_ANSWER_LINE = re.compile(r"answer\s+is\s*:?\s*(.+?)\s*$", re.IGNORECASE)


def extract_answer(text: str) -> str | None:
    """The last \\boxed{} answer, else the value of a final "the answer is X" line."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    for line in reversed([ln for ln in text.strip().splitlines() if ln.strip()][-3:]):
        m = _ANSWER_LINE.search(line)
        if m:
            value = m.group(1).strip().rstrip(".").strip()
            return value.strip("$").strip() or None
    return None


def extract_code(text: str) -> str:
    """The last ```python block, else the last ``` block, else the whole text."""
    blocks = re.findall(r"```[ \t]*(\w*)[^\n]*\n(.*?)```", text, re.DOTALL)
    python = [code for lang, code in blocks if lang.lower() in ("python", "py", "python3")]
    if python:
        return python[-1]
    if blocks:
        return blocks[-1][1]
    return text


# ----------------------------------------------------------------------------------- math

def _verify_math(problem: dict, content: str, timeouts: bool) -> Verdict:
    from math_verify import parse, verify as math_equal

    pt = MATH_TIMEOUT_S if timeouts else None
    gold_text = problem.get("answer")
    if gold_text is None or not str(gold_text).strip():
        raise ValueError(f"problem {problem.get('id')!r} has verifier 'math' but no answer")
    # The gold is wrapped in \boxed{}: bare LaTeX such as `3\sqrt{13}` or `(3, \frac{\pi}{2})`
    # parses to nothing or to a prefix, and math-verify then compares garbage.
    gold = parse("\\boxed{" + str(gold_text) + "}", parsing_timeout=pt)
    if not gold:
        raise ValueError(f"gold answer of problem {problem.get('id')!r} does not parse: "
                         f"{gold_text!r}")
    answer = extract_answer(content or "")
    if answer is None:
        return Verdict(False, "no \\boxed answer")
    pred = parse("\\boxed{" + answer + "}", parsing_timeout=pt)
    if not pred:
        return Verdict(False, f"unparsable answer: {_short(answer)}")
    # Gold first: math-verify's comparison is not symmetric.
    if math_equal(gold, pred, timeout_seconds=pt):
        return Verdict(True, "ok")
    return Verdict(False, f"wrong answer: got {_short(answer)}, want {_short(str(gold_text))}")


# ----------------------------------------------------------------------------------- code

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


def build_program(problem: dict, content: str) -> str:
    """Candidate code + tests. A problem with `code_prefix` (a HumanEval signature and
    docstring, with its imports and helper functions) accepts a bare function body: when the
    entry point is not defined the body continues the prefix; when it is, the prefix still
    goes first, since the function may use its imports and helpers (a def whose body is only
    a docstring is valid Python, and the candidate's def replaces it)."""
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
    return code + "\n" + (problem.get("tests") or "")


def _reason(result: sandbox.Result) -> str:
    if result.status in ("timeout", "memory"):
        return result.status
    if result.status == "error":
        return f"killed by signal {(result.exit_code or 128) - 128}"
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    if not lines:
        return f"exit code {result.exit_code}"
    return _short(lines[-1].strip())


def _verify_code(problem: dict, content: str, timeout_s: float | None,
                 memory_mb: int | None) -> Verdict:
    if not (content or "").strip():
        return Verdict(False, "no code")
    # A problem may raise the limits (evalplus tasks with heavy inputs), never lower them.
    timeout = max(timeout_s or DEFAULT_TIMEOUT_S, problem.get("timeout_s") or 0)
    memory = max(memory_mb or DEFAULT_MEMORY_MB, problem.get("memory_mb") or 0)
    result = sandbox.run_python(build_program(problem, content), timeout_s=timeout,
                                memory_mb=memory)
    return Verdict(True, "ok") if result.ok else Verdict(False, _reason(result))


# -------------------------------------------------------------------------------- public

def verify(problem: dict, content: str, *, timeout_s: float | None = None,
           memory_mb: int | None = None) -> Verdict:
    """Grades one answer. Math uses math-verify's SIGALRM timeouts when called on the main
    thread (they cannot work elsewhere); `verify_many` adds a hard outer limit."""
    kind = problem.get("verifier") or "none"
    if kind == "math":
        return _verify_math(problem, content, threading.current_thread() is threading.main_thread())
    if kind == "code":
        return _verify_code(problem, content, timeout_s, memory_mb)
    if kind == "none":
        return Verdict(True, "not verified")
    raise ValueError(f"unknown verifier {kind!r} in problem {problem.get('id')!r}")


class _MathWorker:
    """A `python -m distill.filters.verify` child answering one JSON line per problem; a
    separate interpreter (not multiprocessing) so no caller needs a `__main__` guard."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "distill.filters.verify"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)

    def ask(self, problem: dict, content: str, timeout: float) -> Verdict:
        self.proc.stdin.write((json.dumps({"problem": problem, "content": content}) + "\n").encode())
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("math verification worker died")
        reply = json.loads(line)
        if "error" in reply:
            raise ValueError(reply["error"])
        return Verdict(reply["ok"], reply["reason"])

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _serve() -> None:
    for line in sys.stdin:
        job = json.loads(line)
        try:
            v = _verify_math(job["problem"], job["content"], timeouts=True)
            reply = {"ok": v.ok, "reason": v.reason}
        except ValueError as e:
            reply = {"error": str(e)}
        except Exception as e:  # noqa: BLE001  (math-verify's own timeouts and crashes)
            reply = {"ok": False, "reason": _short(f"verifier error: {type(e).__name__}: {e}")}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def _verify_math_many(jobs: list[tuple[int, dict, str]], workers: int) -> dict[int, Verdict]:
    """Math checks in worker processes, where math-verify's SIGALRM limits work (main thread);
    a worker stuck past MATH_HARD_TIMEOUT_S (sympy can ignore the alarm) is killed and
    replaced, and its item is marked timeout."""
    done: dict[int, Verdict] = {}
    queue = list(reversed(jobs))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def drain() -> None:
        worker = _MathWorker()
        try:
            while True:
                with lock:
                    if not queue or errors:
                        return
                    i, problem, content = queue.pop()
                try:
                    done[i] = worker.ask(problem, content, MATH_HARD_TIMEOUT_S)
                except TimeoutError:
                    done[i] = Verdict(False, "timeout")
                    worker.close()
                    worker = _MathWorker()
                except BaseException as e:  # noqa: BLE001  (re-raised in the caller)
                    errors.append(e)
                    return
        finally:
            worker.close()

    threads = [threading.Thread(target=drain) for _ in range(min(workers, len(jobs)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return done


def verify_many(items: list[tuple[dict, str]], workers: int = 2, *,
                timeout_s: float | None = None, memory_mb: int | None = None) -> list[Verdict]:
    """Grades many (problem, answer) pairs in parallel, in order, with hard timeouts: code
    runs in sandboxes (killed at their wall limit), math in killable worker processes."""
    out: list[Verdict | None] = [None] * len(items)
    math_jobs = []
    code_jobs = []
    for i, (problem, content) in enumerate(items):
        kind = problem.get("verifier") or "none"
        if kind == "math":
            math_jobs.append((i, problem, content))
        elif kind == "code":
            code_jobs.append(i)
        else:
            out[i] = verify(problem, content)
    if code_jobs:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            verdicts = pool.map(lambda i: _verify_code(items[i][0], items[i][1], timeout_s,
                                                       memory_mb), code_jobs)
            for i, v in zip(code_jobs, verdicts):
                out[i] = v
    if math_jobs:
        for i, v in _verify_math_many(math_jobs, max(1, workers)).items():
            out[i] = v
    return out  # type: ignore[return-value]


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


if __name__ == "__main__":
    _serve()
