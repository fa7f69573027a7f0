"""The evaluate stage: reads benchmarks and run_dir/train/model, writes Stage("eval") per-sample
records and eval/scores.json.

Teacher, base student and distilled student answer the same questions with the same sampling
(cfg.eval), over the same OpenAI-compatible client; the shared scorer (filters.verify) grades
them. Each sample is one record keyed by (model, benchmark, version, task, sample, sampling
hash), so a re-run asks only for the samples that are missing: an interrupted eval resumes.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Iterator

from distill.config import Recipe
from distill.errors import InputError
from distill.eval import metrics
from distill.records import Stage, record_id

log = logging.getLogger(__name__)

@dataclass
class _Model:
    role: str      # teacher | base | student
    name: str      # what the leaderboard shows
    key: str       # what identifies its weights in record ids
    endpoint: Callable[[], ContextManager[tuple[str, str, str | None]]]  # (base_url, model, key)


def sampling_hash(cfg: Recipe) -> str:
    """What makes two samples comparable. `samples` and `limit` stay out: raising either
    reuses the samples already drawn instead of drawing them again."""
    e = cfg.eval
    return record_id("eval-sampling", e.temperature, e.top_p, e.max_tokens)


def _served(model: str, base_url: str | None, revision: str | None = None) -> Callable:
    @contextlib.contextmanager
    def endpoint() -> Iterator[tuple[str, str, str | None]]:
        if base_url:  # students already served elsewhere (cfg.eval.base_url)
            yield base_url, model, None
            return
        from distill.teacher.local import serve_local
        with serve_local(model, revision=revision) as (url, served_name):
            yield url, served_name, None
    return endpoint


def _models(cfg: Recipe, run_dir: Path) -> list[_Model]:
    from distill.teacher.local import teacher_endpoint

    train = Stage(run_dir, "train")
    if not train.is_complete():
        raise InputError("the train stage is not complete: the distilled student does not "
                         "exist yet (run `distill train` first)", file=str(train.path))
    student_path = str(Path(run_dir).resolve() / "train" / "model")
    # A re-trained student lives at the same path: its manifest tells the weights apart. The
    # key leaves the absolute path out, so a moved run directory keeps its records.
    student_key = f"run:train/model@{record_id(train.manifest())}"
    teacher = cfg.teacher
    return [
        _Model("teacher", teacher.model, f"{teacher.model}@{teacher.revision or ''}",
               lambda: teacher_endpoint(teacher)),
        _Model("base", cfg.train.student, f"{cfg.train.student}@{cfg.train.revision or ''}",
               _served(cfg.train.student, cfg.eval.base_url, cfg.train.revision)),
        _Model("student", cfg.publish.hub_repo or f"{cfg.run.name}-distilled", student_key,
               _served(student_path, cfg.eval.base_url)),
    ]


def _sample_id(model: _Model, bench, task_id: str, sample: int, shash: str) -> str:
    # The role is part of the key: a recipe may name the same weights as teacher and base.
    return record_id(model.role, model.key, bench.name, bench.version, task_id, sample, shash)


def _pinned(bench, data_file: str | None):
    """The benchmark with its version pinned to the local file's content hash, if any, so a
    changed data file never reuses old samples."""
    if data_file and hasattr(bench, "resolved_version"):
        import dataclasses
        return dataclasses.replace(bench, version=bench.resolved_version(data_file))
    return bench


def _evaluate_model(cfg: Recipe, stage: Stage, model: _Model, benches: list, problems: dict,
                    shash: str, done: set[str]) -> int:
    """Asks `model` for every missing sample and writes one scored record per sample.
    Returns the number of samples that failed to generate."""
    from distill.filters.verify import verify_many
    from distill.teacher.client import Job, complete_all

    e = cfg.eval
    pending: dict[str, tuple] = {}  # job key -> (bench, problem, sample indices)
    for bench in benches:
        for p in problems[bench.name]:
            missing = [s for s in range(e.samples)
                       if _sample_id(model, bench, p["id"], s, shash) not in done]
            if missing:
                pending[record_id(bench.name, p["id"], missing)] = (bench, p, missing)
    if not pending:
        log.info("eval %s: all samples done", model.role)
        return 0

    failures = 0
    with model.endpoint() as (base_url, served, api_key):
        jobs = [Job(key=k, messages=p["messages"], n=len(missing), temperature=e.temperature,
                    top_p=e.top_p, max_tokens=e.max_tokens)
                for k, (_, p, missing) in pending.items()]
        # Generate in chunks and grade each chunk in parallel worker processes: grading runs
        # untrusted code with timeouts, which must not stall the client's event loop, and a
        # crash loses at most one chunk of samples.
        chunk = max(64, 4 * e.max_concurrency)
        for start in range(0, len(jobs), chunk):
            answered: list[tuple] = []
            failed = complete_all(base_url, served, jobs[start:start + chunk],
                                  lambda job, resp: answered.append((job, resp)),
                                  api_key=api_key, max_concurrency=e.max_concurrency,
                                  desc=f"eval {model.role}")
            failures += len(failed)
            items, meta = [], []
            for job, resp in answered:
                bench, p, missing = pending[job.key]
                for sample, choice in zip(missing, resp.choices):
                    items.append((p, choice.content or ""))
                    meta.append((bench, p, sample, choice))
            # The filter stage's scorer settings: a student is graded as its teacher's traces were.
            verdicts = verify_many(items, workers=cfg.filter.workers,
                                   timeout_s=cfg.filter.code_timeout_s,
                                   memory_mb=cfg.filter.code_memory_mb) if items else []
            with stage.writer() as w:
                for (bench, p, sample, choice), verdict in zip(meta, verdicts):
                    w.write({
                        "id": _sample_id(model, bench, p["id"], sample, shash),
                        "role": model.role, "model": model.name, "benchmark": bench.name,
                        "version": bench.version, "task_id": p["id"],
                        "category": p.get("category") or bench.category,
                        "subcategory": p.get("subcategory"), "sample": sample,
                        "correct": bool(verdict.ok), "reason": verdict.reason,
                        "content": choice.content, "reasoning": choice.reasoning,
                        "finish_reason": choice.finish_reason, "sampling_hash": shash,
                    })
    return failures


def _score_rows(model: _Model, bench, records: list[dict]) -> list[dict]:
    """pass@1 (and pass@k for k = samples when > 1) for the benchmark's category overall and
    for each subcategory."""
    by_task: dict[str, list[bool]] = defaultdict(list)
    sub_of: dict[str, str | None] = {}
    for r in sorted(records, key=lambda r: r["sample"]):
        by_task[r["task_id"]].append(bool(r["correct"]))
        sub_of[r["task_id"]] = r.get("subcategory")
    groups: dict[str, list[str]] = {bench.category: list(by_task)}
    for task, sub in sub_of.items():
        if sub:
            groups.setdefault(f"{bench.category}/{sub}", []).append(task)
    rows = []
    for category, tasks in groups.items():
        verdicts = [by_task[t] for t in tasks]
        est = metrics.score_interval(verdicts)
        base = {"model": model.name, "role": model.role, "benchmark": bench.name,
                "category": category}
        rows.append({**base, "metric": "pass@1", "score": est.value, "ci_low": est.ci_low,
                     "ci_high": est.ci_high, "n": est.n})
        k = min(len(v) for v in verdicts)
        if k > 1:  # reported only when every question has k samples
            pk = metrics.bootstrap_mean([metrics.pass_at_k(len(v), sum(v), k) for v in verdicts])
            rows.append({**base, "metric": f"pass@{k}", "score": pk.value, "ci_low": pk.ci_low,
                         "ci_high": pk.ci_high, "n": pk.n})
    return rows


def _question_rows(model: _Model, bench, records: list[dict]) -> list[dict]:
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_task[r["task_id"]].append(r)
    return [{"role": model.role, "model": model.name, "benchmark": bench.name,
             "category": bench.category, "subcategory": rs[0].get("subcategory"), "task_id": task,
             "score": sum(bool(r["correct"]) for r in rs) / len(rs), "samples": len(rs)}
            for task, rs in by_task.items()]


def run_evaluate(cfg: Recipe, run_dir: Path) -> Path:
    from distill.eval.benchmark import get_benchmark

    run_dir = Path(run_dir)
    models = _models(cfg, run_dir)
    stage = Stage(run_dir, "eval")
    stage.start()
    try:
        benches = [_pinned(get_benchmark(name), cfg.eval.data_files.get(name))
                   for name in cfg.eval.benchmarks]
    except KeyError as e:
        raise InputError(str(e.args[0]), key="eval.benchmarks") from None
    problems = {b.name: b.load(cfg.eval.data_files.get(b.name), cfg.eval.limit) for b in benches}
    for b in benches:
        if not problems[b.name]:
            raise InputError(f"benchmark {b.name} has no questions", key="eval.benchmarks")
    shash = sampling_hash(cfg)

    failures = 0
    for model in models:
        failures += _evaluate_model(cfg, stage, model, benches, problems, shash, stage.ids())
    if failures:
        raise RuntimeError(f"{failures} eval requests failed after retries; re-run the eval "
                           "stage to retry only those")

    by_id = {r["id"]: r for r in stage.read()}
    rows, questions = [], []
    for model in models:
        for bench in benches:
            wanted = [_sample_id(model, bench, p["id"], s, shash)
                      for p in problems[bench.name] for s in range(cfg.eval.samples)]
            missing = [i for i in wanted if i not in by_id]
            if missing:
                raise RuntimeError(f"{len(missing)} {model.role} samples on {bench.name} "
                                   "have no record; re-run the eval stage")
            records = [by_id[i] for i in wanted]
            rows.extend(_score_rows(model, bench, records))
            questions.extend(_question_rows(model, bench, records))
    # Per-question pass@1 of exactly the samples scored above: publish pairs models on it
    # (retention and differences with intervals) without re-deriving record ids.
    stage.write_json("questions.json", questions)
    path = stage.write_json("scores.json", rows)
    stage.complete(sampling_hash=shash, benchmarks=[b.name for b in benches],
                   models={m.role: m.name for m in models}, samples=cfg.eval.samples)
    return path
