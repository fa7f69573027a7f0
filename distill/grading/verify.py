"""The shared scorer: reads a problem dict and an answer text, returns a `Verdict`.

The filter stage grades teacher traces and the eval stage grades students with these same
functions, so a benchmark score and a kept trace mean the same thing. `problem["verifier"]`
picks the check:

- math: the last `\\boxed{...}` of the answer (or a final-answer line) against the gold
  `answer` with math-verify (gold wrapped in `\\boxed{}` so it parses; a timeout per check);
- choice: the multiple-choice letter (GPQA: "Answer: C", `\\boxed{C}`, ...) against the gold
  letter `answer`; `choices` (the options, A first) sets how many letters there are;
- code: the last fenced code block, run in the sandbox against the problem's `tests`
  (asserts), `functional_tests` (inputs and expected outputs, with tolerances) and
  `stdio_tests` (stdin / expected stdout); see distill/grading/code.py for their shapes;
- none: always kept.

Public functions (used by distill/filters, distill/eval and evals/):
- `verify(problem, content, *, timeout_s, memory_mb) -> Verdict` grades one answer;
- `verify_many(items, workers, *, timeout_s, memory_mb) -> list[Verdict]` grades (problem,
  answer) pairs in parallel, in order, with hard timeouts (math in killable worker processes,
  code in parallel sandboxes);
- `check_golds(answers, workers) -> list[str | None]`: why each math gold cannot be checked
  (`GOLD_ISSUES`), None when it can; the prompts stage skips such rows;
- `extract_answer(text)`, `last_boxed(text)`, `extract_choice(text, letters)`,
  `extract_code(text)`: what a grader reads out of a model's text;
- `compare_stdout(got, want) -> bool`: LiveCodeBench's stdout comparison;
- `livecodebench_tests(test_cases, fn_name) -> dict`: LiveCodeBench's test cases as the
  `stdio_tests` or `functional_tests` of a problem;
- `candidate_program(problem, content)`, `build_program(problem, content)`: the code as it runs;
- `record_outputs(problem, solution)`, `reference_times(problem, solution)`: run a reference
  solution to get expected outputs (an opaque blob) and per-test times for the limits.
"""

from __future__ import annotations

import collections
import functools
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from distill.grading.code import (DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S, Verdict,  # noqa: F401
                                  shorten, build_program, candidate_program, compare_stdout,
                                  livecodebench_tests,
                                  record_outputs, reference_times, verify_code)
from distill.grading.extract import extract_answer, extract_choice, extract_code, last_boxed  # noqa: F401
from distill.grading.pool import Pool, Worker, WorkerDied

MATH_TIMEOUT_S = 5           # math-verify's own SIGALRM limits, per parse and per comparison
MATH_HARD_TIMEOUT_S = 30.0   # outer limit on a worker process, which is killed past it
MATH_WINDOW = 8              # questions in flight per worker
# Why a gold answer cannot be checked (NuminaMath-1.5 writes "proof" and "notfound" in its
# `answer` column, and leaves some empty; a choice gold must be one of the letters).
GOLD_ISSUES = ("empty", "proof", "notfound", "unparsable", "choice", "timeout")


class GoldError(ValueError):
    """The problem's gold answer cannot be checked: raised by `verify` (one problem, the caller
    should know), turned by `verify_many` into a rejection naming the gold, so one bad row
    never aborts a batch. `kind` is one of GOLD_ISSUES."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind

    def verdict(self) -> "Verdict":
        return Verdict(False, f"bad gold: {self.kind}: {self}")


# ----------------------------------------------------------------------------------- math

@functools.lru_cache(maxsize=4096)
def _parse_gold(gold_text: str, timeout: int | None):
    """Parsed once per gold answer: a prompt's n samples share it."""
    from math_verify import parse

    # The gold is wrapped in \boxed{}: bare LaTeX such as `3\sqrt{13}` or `(3, \frac{\pi}{2})`
    # parses to nothing or to a prefix, and math-verify then compares garbage.
    return parse("\\boxed{" + gold_text + "}", parsing_timeout=timeout)


def _checked_gold(gold_text: str | None, timeout: int | None):
    """The parsed gold, or GoldError: empty, a proof or "notfound" (which math-verify would
    read as products of symbols, f*o*o*p*r, and match an answer of the same letters), or
    nothing math-verify can compare (no expression, or only the raw string back, which would
    make the check a string comparison)."""
    text = (gold_text or "").strip()
    if not text:
        raise GoldError("empty", "the answer is empty")
    if text.lower() == "proof":
        raise GoldError("proof", f"answer {gold_text!r} is a proof, not an answer to check")
    if text.lower() == "notfound":
        raise GoldError("notfound", f"answer {gold_text!r} is not an answer to check")
    gold = _parse_gold(gold_text, timeout)
    if all(isinstance(g, str) for g in gold):
        raise GoldError("unparsable", f"answer {gold_text!r} does not parse")
    return gold


def _verify_math(problem: dict, content: str, timeouts: bool) -> Verdict:
    from math_verify import parse, verify as math_equal

    pt = MATH_TIMEOUT_S if timeouts else None
    gold_text = problem.get("answer")
    gold = _checked_gold(None if gold_text is None else str(gold_text), pt)
    answer = extract_answer(content or "")
    if answer is None:
        return Verdict(False, "no \\boxed answer")
    pred = parse("\\boxed{" + answer + "}", parsing_timeout=pt)
    if not pred:
        return Verdict(False, f"unparsable answer: {shorten(answer)}")
    # Gold first: math-verify's comparison is not symmetric.
    if math_equal(gold, pred, timeout_seconds=pt):
        return Verdict(True, "ok")
    return Verdict(False, f"wrong answer: got {shorten(answer)}, want {shorten(str(gold_text))}")


# --------------------------------------------------------------------------------- choice

def _verify_choice(problem: dict, content: str) -> Verdict:
    gold = str(problem.get("answer") or "").strip().upper()
    n = len(problem.get("choices") or []) or 4
    letters = "ABCDEFGHIJ"[:n]
    if gold not in letters or len(gold) != 1:
        raise GoldError("choice", f"answer {problem.get('answer')!r} is not one of the letters "
                                  f"{letters}")
    got = extract_choice(content or "", letters)
    if got is None:
        return Verdict(False, "no choice letter")
    if got == gold:
        return Verdict(True, "ok")
    return Verdict(False, f"wrong choice: got {got}, want {gold}")


# -------------------------------------------------------------------------------- public

def verify(problem: dict, content: str, *, timeout_s: float | None = None,
           memory_mb: int | None = None) -> Verdict:
    """Grades one answer. Math uses math-verify's SIGALRM timeouts when called on the main
    thread (they cannot work elsewhere); `verify_many` adds a hard outer limit. A gold answer
    that cannot be checked raises GoldError (a ValueError)."""
    kind = problem.get("verifier") or "none"
    if kind == "math":
        return _verify_math(problem, content, threading.current_thread() is threading.main_thread())
    if kind == "code":
        return verify_code(problem, content, timeout_s, memory_mb)
    if kind == "choice":
        return _verify_choice(problem, content)
    if kind == "none":
        return Verdict(True, "not verified")
    raise ValueError(f"unknown verifier {kind!r} in problem {problem.get('id')!r}")


class _MathWorker(Worker):
    """A `python -m distill.grading.verify` child answering one JSON line per problem; a
    separate interpreter (not multiprocessing) so no caller needs a `__main__` guard."""

    def __init__(self, argv: list[str] | None = None) -> None:
        argv = argv or [sys.executable, "-m", "distill.grading.verify"]
        super().__init__(subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL))

    def ask(self, problem: dict, content: str) -> None:
        """Sends one question; a worker that died is found out by `answer`."""
        self.send((json.dumps({"problem": problem, "content": content}) + "\n").encode())

    def answer(self, timeout: float) -> Verdict:
        """The reply to the oldest question asked; TimeoutError when the worker takes longer
        than `timeout` on it, WorkerDied when it exits first."""
        reply = json.loads(self.readline(time.monotonic() + timeout))
        return Verdict(reply["ok"], reply["reason"])


# Warm workers are kept between calls (each costs an interpreter and a math-verify import,
# seconds on a busy machine); they are killed at exit.
_workers = Pool(lambda _key: _MathWorker())


def close_math_workers() -> None:
    _workers.close()


def _serve() -> None:
    for line in sys.stdin:
        job = json.loads(line)
        try:
            v = _verify_math(job["problem"], job["content"], timeouts=True)
            reply = {"ok": v.ok, "reason": v.reason}
        except GoldError as e:
            reply = {"ok": False, "reason": e.verdict().reason}
        except Exception as e:  # noqa: BLE001  (math-verify's own timeouts and crashes)
            reply = {"ok": False, "reason": shorten(f"verifier error: {type(e).__name__}: {e}")}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def _verify_math_many(jobs: list[tuple[int, dict, str]], workers: int) -> dict[int, Verdict]:
    """Math checks in worker processes, where math-verify's SIGALRM limits work (main thread);
    a worker stuck past MATH_HARD_TIMEOUT_S (sympy can ignore the alarm) is killed and
    replaced, and its item is marked timeout. A worker that dies is replaced too, and its item
    gets an `infra` verdict: the grader failed, not the answer."""
    done: dict[int, Verdict] = {}
    queue = list(reversed(jobs))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def drain() -> None:
        # Up to WINDOW questions in flight per worker, so it never waits for the next one
        # (on a busy machine each round trip costs a scheduling delay); the worker answers in
        # order, so the hard limit applies to the question it is working on.
        worker = _workers.take()
        healthy = True
        pending: collections.deque = collections.deque()
        try:
            while True:
                with lock:
                    while len(pending) < MATH_WINDOW and queue and not errors:
                        i, problem, content = queue.pop()
                        # Only what the check reads: a generation record also carries its
                        # messages, reasoning and logprobs.
                        pending.append((i, {"id": problem.get("id"),
                                            "answer": problem.get("answer")}, content))
                        worker.ask(pending[-1][1], content)
                    if not pending:
                        return
                    if errors:      # unread replies: this worker must not serve anyone else
                        healthy = False
                        return
                try:
                    v = worker.answer(MATH_HARD_TIMEOUT_S)
                    done[pending.popleft()[0]] = v
                except (TimeoutError, WorkerDied) as e:
                    done[pending.popleft()[0]] = Verdict(False, "timeout") \
                        if isinstance(e, TimeoutError) \
                        else Verdict(False, "math verification worker died", infra=True)
                    worker = _workers.replace(worker)
                    for _, slim, content in pending:
                        worker.ask(slim, content)
                except BaseException as e:  # noqa: BLE001  (re-raised in the caller)
                    errors.append(e)
                    healthy = False
                    return
        finally:
            if healthy:
                _workers.give(worker)
            else:
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
            try:
                out[i] = verify(problem, content)
            except GoldError as e:
                out[i] = e.verdict()
    if code_jobs:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            verdicts = pool.map(lambda i: verify_code(items[i][0], items[i][1], timeout_s,
                                                      memory_mb), code_jobs)
            for i, v in zip(code_jobs, verdicts):
                out[i] = v
    if math_jobs:
        for i, v in _verify_math_many(math_jobs, max(1, workers)).items():
            out[i] = v
    return out  # type: ignore[return-value]


def check_golds(answers: list[str | None], workers: int = 2) -> list[str | None]:
    """Why each math gold answer cannot be checked (one of GOLD_ISSUES), None when it can.
    Parsed as `verify_many` parses golds, in the killable worker processes (math-verify can
    hang on odd LaTeX; a parse past the hard limit is a "timeout"): a worker's check starts
    with the gold, and with no answer to compare stops right after it."""
    out: list[str | None] = [None] * len(answers)
    jobs = []
    for i, text in enumerate(answers):
        try:    # the cheap cases here, without a round trip to a worker
            if not (text or "").strip() or (text or "").strip().lower() in ("proof", "notfound"):
                _checked_gold(text, None)
        except GoldError as e:
            out[i] = e.kind
            continue
        jobs.append((i, {"id": f"gold-{i}", "answer": text}, ""))
    for i, v in (_verify_math_many(jobs, max(1, workers)).items() if jobs else ()):
        if v.reason == "timeout":
            out[i] = "timeout"
        elif v.reason.startswith("bad gold: "):
            out[i] = v.reason.split(": ", 2)[1]
    return out


if __name__ == "__main__":
    _serve()
