"""From per-sample verdicts to score rows: reads graded samples grouped by question, writes
rows of pass@1 / pass@k / maj@k with 95% intervals per benchmark and category, retention of the
teacher's score with its interval, and paired comparisons of two models. Each row also says
what could make it differ from a published score: the share of its answers cut at the length
cap (finish_reason "length"), the share caught in a repetition loop (grading.repetition:
what a model broken by quantization or export does) and the infrastructure errors behind it (failed request attempts
that were retried, gradings the grader failed and did again).

Shared by the eval stage (three models) and `distill score` (one model's samples). Every
statistic comes from `metrics`; this module only groups questions into categories and names
the metrics a benchmark reports:
- pass@1, always, with the clustered Wilson interval;
- pass@n (n = samples per question) and pass@k for the recipe's `pass_k`, when n > 1;
- maj@n, when n > 1 and the scorer extracts an answer to vote on (math, multiple choice).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from distill.eval import metrics
from distill.grading.repetition import repetition

VOTING_SCORERS = ("math", "choice")


@dataclass
class Question:
    task_id: str
    labels: list[str]                     # categories it is scored in (Benchmark.category_labels)
    verdicts: list[bool] = field(default_factory=list)        # in sample order
    answers: list[str | None] = field(default_factory=list)   # extracted, for maj@k
    truncated: int | None = 0     # samples cut at the length cap; None: finish reasons unknown
    infra_errors: int = 0         # retried request attempts and failed gradings
    repetitive: int = 0           # samples in a repetition loop (grading.repetition)


def voted_answer(problem: dict, content: str) -> str | None:
    """The answer a sample votes for in maj@k: the scorer's own extraction."""
    kind = problem.get("verifier")
    if kind == "math":
        from distill.grading.verify import extract_answer
        return extract_answer(content or "")
    if kind == "choice":
        from distill.grading.verify import extract_choice
        return extract_choice(content or "", "ABCDEFGHIJ"[:len(problem.get("choices") or "ABCD")])
    return None


def _grade_once(items: list[tuple[dict, str]], **kw) -> list:
    from distill.grading.verify import verify_many

    order = sorted(range(len(items)), key=lambda i: -sum(items[i][0].get("reference_times_s") or ()))
    verdicts = verify_many([items[i] for i in order], **kw) if items else []
    out: list = [None] * len(items)
    for i, v in zip(order, verdicts):
        out[i] = v
    return out


def grade(items: list[tuple[dict, str]], *, retries: int = 0, **kw) -> tuple[list, list[int]]:
    """`verify_many` with the slowest problems first (by their reference solution's time), so
    that with a few workers one long task does not run alone at the end. An item the grader
    failed to grade (`Verdict.infra`: a sandbox that died, a crashed math worker) is graded
    again, up to `retries` more times. Returns the verdicts in the order of `items` (still
    infra where every grading failed) and, per item, how many of its gradings failed."""
    verdicts = _grade_once(items, **kw)
    failed = [0] * len(items)
    for _ in range(retries):
        again = [i for i, v in enumerate(verdicts) if v.infra]
        if not again:
            break
        for i, v in zip(again, _grade_once([items[i] for i in again], **kw)):
            failed[i] += 1
            verdicts[i] = v
    for i, v in enumerate(verdicts):
        failed[i] += v.infra
    return verdicts, failed


def questions_from(bench, problems: list[dict], samples: list[dict]) -> list[Question]:
    """Questions in the benchmark's order, each with its samples' verdicts and answers sorted
    by sample index. `samples` are records with task_id, sample, correct and answer."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    for s in samples:
        by_task[s["task_id"]].append(s)
    out = []
    for p in problems:
        rs = sorted(by_task.get(p["id"], []), key=lambda r: r["sample"])
        if rs:
            known = all("finish_reason" in r for r in rs)
            out.append(Question(p["id"], bench.category_labels(p),
                                [bool(r["correct"]) for r in rs], [r.get("answer") for r in rs],
                                sum(r["finish_reason"] == "length" for r in rs) if known else None,
                                sum(int(r.get("retried_attempts") or 0)
                                    + int(r.get("grade_retries") or 0) for r in rs),
                                sum(repetition(r) is not None for r in rs)))
    return out


def metric_names(bench, n: int, pass_k: list[int] | tuple = ()) -> list[str]:
    names = ["pass@1"]
    if n > 1:
        names += [f"pass@{k}" for k in sorted(set(pass_k)) if 1 < k < n] + [f"pass@{n}"]
        if bench.scorer in VOTING_SCORERS:
            names.append(f"maj@{n}")
    return names


def metric_value(q: Question, metric: str) -> float:
    """One question's value of `metric` (pass@1 is the mean of its verdicts)."""
    kind, k = metric.split("@")
    if kind == "pass":
        return metrics.pass_at_k(len(q.verdicts), sum(q.verdicts), int(k))
    if kind == "maj":
        return metrics.majority_vote(list(zip(q.verdicts, q.answers)), int(k))
    raise ValueError(f"unknown metric {metric!r}")


def groups(questions: list[Question]) -> dict[str, list[Question]]:
    """category label -> its questions, the benchmark's own category first."""
    out: dict[str, list[Question]] = {}
    for q in questions:
        for label in q.labels:
            out.setdefault(label, []).append(q)
    return out


def estimate(questions: list[Question], metric: str) -> metrics.Estimate:
    if metric == "pass@1":
        return metrics.score_interval([q.verdicts for q in questions])
    return metrics.bootstrap_mean([metric_value(q, metric) for q in questions])


def score_rows(model: str, role: str, bench, questions: list[Question],
               pass_k: list[int] | tuple = ()) -> list[dict]:
    """One row per category and metric: score, 95% interval, questions, samples per question."""
    if not questions:
        return []
    n = min(len(q.verdicts) for q in questions)
    rows = []
    for label, qs in groups(questions).items():
        answers = sum(len(q.verdicts) for q in qs)
        cut = None if any(q.truncated is None for q in qs) else \
            sum(q.truncated or 0 for q in qs) / answers
        infra = sum(q.infra_errors for q in qs)
        loops = sum(q.repetitive for q in qs) / answers
        for metric in metric_names(bench, n, pass_k):
            est = estimate(qs, metric)
            rows.append({"model": model, "role": role, "benchmark": bench.name,
                         "category": label, "metric": metric, "score": est.value,
                         "ci_low": est.ci_low, "ci_high": est.ci_high, "n": est.n,
                         "samples": n, "truncated": cut, "repetitive": loops,
                         "infra_errors": infra})
    return rows


def _paired(a: list[Question], b: list[Question], label: str, metric: str):
    """Per-question values of both models on the questions both answered, in a's order."""
    b_by = {q.task_id: q for q in b if label in q.labels}
    common = [q for q in a if label in q.labels and q.task_id in b_by]
    return ([metric_value(q, metric) for q in common],
            [metric_value(b_by[q.task_id], metric) for q in common],
            [q.task_id for q in common])


def add_retention(rows: list[dict], questions: dict[tuple[str, str], list[Question]]) -> None:
    """Fills retention = score / teacher score, with a paired-bootstrap 95% interval over the
    questions both answered, on every row (`questions`: (role, benchmark) -> questions).
    Teacher rows get 1; rows where the teacher scored 0 get None."""
    for r in rows:
        r.update(retention=None, retention_ci_low=None, retention_ci_high=None)
        if r["role"] == "teacher":
            r.update(retention=1.0, retention_ci_low=1.0, retention_ci_high=1.0)
            continue
        teacher = questions.get(("teacher", r["benchmark"]))
        mine = questions.get((r["role"], r["benchmark"]))
        if not teacher or not mine:
            continue
        s, t, _ = _paired(mine, teacher, r["category"], r["metric"])
        est = metrics.retention(s, t) if s else None
        if est is not None:
            r.update(retention=est.value, retention_ci_low=est.ci_low, retention_ci_high=est.ci_high)
        # A quantized student (student-q4_k_m) against the unquantized one, paired the same way.
        unquantized = questions.get(("student", r["benchmark"]))
        if r["role"].startswith("student-") and unquantized:
            s, u, _ = _paired(mine, unquantized, r["category"], r["metric"])
            est = metrics.retention(s, u) if s else None
            r.update(retention_student=est and est.value, retention_student_ci_low=est and est.ci_low,
                     retention_student_ci_high=est and est.ci_high)


def comparison_rows(a_role: str, b_role: str, bench, a: list[Question],
                    b: list[Question]) -> list[dict]:
    """pass@1 of a minus b per category: the paired difference with its interval, the
    questions that flipped (solved by one and not the other) and McNemar's p-value."""
    rows = []
    for label in groups(a):
        x, y, ids = _paired(a, b, label, "pass@1")
        if not ids:
            continue
        c = metrics.compare(x, y, ids)
        rows.append({"benchmark": bench.name, "category": label, "metric": "pass@1",
                     "a": a_role, "b": b_role, "difference": c.difference.value,
                     "ci_low": c.difference.ci_low, "ci_high": c.difference.ci_high,
                     "n": c.difference.n, "gained": c.gained, "lost": c.lost,
                     "p_value": c.p_value})
    return rows
