"""`distill score BENCHMARK --samples FILE`: grades completions a user already has.

Reads a JSONL file, one completion per line: `task_id` (the benchmark's own id such as
`HumanEval/0`, or distill's `humaneval_plus/0`) and the text under `completion`, `solution`,
`response` or `content` (evalplus' and lighteval's spellings). Several lines with one task id
are several samples of it, in file order. Grades them with the benchmark's scorer (the filter
stage's, in the sandbox), writes `<FILE stem>.<benchmark>.results.json` beside the samples (a
verdict per sample, the score rows) and returns the score rows.

The results file is also a cache: a re-run grades only the completions whose (benchmark
version, task, sample, completion text) it has not graded before. A completion the grader
failed to grade (a sandbox that died, a crashed math worker) is graded again up to
GRADE_RETRIES times and never scored as wrong: if it still fails, the others are cached and
the run stops saying so, and a re-run grades only what is left.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from distill.errors import InputError
from distill.eval import scoring
from distill.jsonl import numbered_rows
from distill.records import write_json

TEXT_FIELDS = ("completion", "solution", "response", "content")
GRADE_RETRIES = 2   # as eval.grade_retries


def read_samples(path: Path) -> list[dict]:
    """[{task_id, text, line}] in file order; a line without a task id or a text is bad input."""
    if not path.is_file():
        raise InputError("samples file not found", file=str(path))
    out = []
    for n, row in numbered_rows(path):
        if not isinstance(row, dict) or "task_id" not in row:
            raise InputError("a sample needs a task_id", file=str(path), line=n)
        text = next((row[f] for f in TEXT_FIELDS if isinstance(row.get(f), str)), None)
        if text is None:
            raise InputError(f"a sample needs its text in one of: {', '.join(TEXT_FIELDS)}",
                             file=str(path), line=n)
        out.append({"task_id": str(row["task_id"]), "text": text, "line": n})
    return out


def results_path(samples: Path, benchmark: str) -> Path:
    return samples.with_name(f"{samples.name.removesuffix('.jsonl')}.{benchmark}.results.json")


def _key(version: str, task: str, sample: int, text: str) -> str:
    return hashlib.sha256(json.dumps([version, task, sample, text]).encode()).hexdigest()[:24]


def score_samples(benchmark: str, samples: Path, *, data_file: str | None = None,
                  options: dict | None = None, subset: bool = False, workers: int = 2,
                  pass_k: list[int] | tuple = ()) -> tuple[list[dict], Path]:
    from distill.grading.benchmarks import get_benchmark
    try:
        bench = get_benchmark(benchmark)
    except KeyError as e:
        raise InputError(str(e.args[0]), key="BENCHMARK") from None
    bench.resolved_options(options, key="--option")
    rows = read_samples(Path(samples))     # before the benchmark's data, which may download
    version = bench.resolved_version(data_file)
    problems = bench.problems(data_file, None, options, data_key="--data-file")
    by_id: dict[str, dict] = {}
    for p in problems:
        by_id[p["id"]] = p
        if p.get("task_id") is not None:
            by_id.setdefault(str(p["task_id"]), p)

    per_task: dict[str, int] = {}
    graded = []
    for r in rows:
        problem = by_id.get(r["task_id"])
        if problem is None:
            raise InputError(f"unknown task id {r['task_id']!r} for benchmark {benchmark}",
                             file=str(samples), line=r["line"])
        sample = per_task.get(problem["id"], 0)
        per_task[problem["id"]] = sample + 1
        graded.append({"task_id": problem["id"], "sample": sample, "line": r["line"],
                       "key": _key(version, problem["id"], sample, r["text"]), "text": r["text"],
                       "problem": problem})
    missing = [p["id"] for p in problems if p["id"] not in per_task]
    if missing and not subset:
        raise InputError(f"{len(missing)} of {len(problems)} tasks have no sample (first: "
                         f"{missing[0]}); pass --subset to score only the tasks present",
                         file=str(samples))
    if not graded:
        raise InputError("no samples to score", file=str(samples))

    cached = {}
    out_path = results_path(Path(samples), benchmark)
    if out_path.is_file():
        try:
            cached = {s["key"]: s for s in json.loads(out_path.read_text()).get("samples", [])}
        except (json.JSONDecodeError, AttributeError, KeyError, TypeError):
            cached = {}  # a damaged results file is only a cache: grade again
    todo = [g for g in graded if g["key"] not in cached]
    verdicts, failed = scoring.grade([(g["problem"], g["text"]) for g in todo],
                                     retries=GRADE_RETRIES, workers=workers)
    not_graded = []
    for g, v, fails in zip(todo, verdicts, failed):
        if v.infra:
            not_graded.append((g, v))
            continue
        cached[g["key"]] = {"key": g["key"], "task_id": g["task_id"], "sample": g["sample"],
                            "correct": bool(v.ok), "reason": v.reason,
                            "answer": scoring.voted_answer(g["problem"], g["text"]),
                            "grade_retries": fails}
    if not_graded:
        write_json(out_path, {"benchmark": benchmark, "version": version,
                              "samples": list(cached.values())})
        g, v = not_graded[0]
        raise RuntimeError(f"{len(not_graded)} completions could not be graded (the grader "
                           f"failed, not the answer), e.g. line {g['line']}: {v.reason}; the "
                           f"others are kept in {out_path}: re-run to grade the rest")
    results = [{**cached[g["key"]], "line": g["line"]} for g in graded]

    present = [p for p in problems if p["id"] in per_task]
    questions = scoring.questions_from(bench, present, results)
    scores = scoring.score_rows(str(samples), "samples", bench, questions, pass_k)
    write_json(out_path, {"benchmark": benchmark, "version": version,
                          "tasks": len(present), "of_tasks": len(problems),
                          "scores": scores, "samples": results})
    return scores, out_path
