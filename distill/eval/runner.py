"""The evaluate stage: reads benchmarks and run_dir/train/model, writes Stage("eval") per-sample
records, eval/scores.json (with retention), eval/questions.json and eval/comparisons.json.

Teacher, base student and distilled student answer the same questions with the same sampling
(the benchmark's defaults, cfg.eval, cfg.eval.benchmark.<name>), over the same
OpenAI-compatible client; the shared scorer (filters.verify) grades them. Each sample is one
record keyed by (model, benchmark, version, task, sample, sampling hash), where the sampling
hash covers temperature, top-p, max tokens and the prompt itself: an interrupted eval resumes
with only the missing samples, more samples reuse the ones drawn, and a changed prompt, sampling
or model draws anew.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from distill.config import Recipe
from distill.errors import InputError
from distill.eval import scoring
from distill.eval.models import EvalModel, eval_models
from distill.records import Stage, record_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sampling:
    samples: int
    temperature: float
    top_p: float
    max_tokens: int

    def hash(self) -> str:
        """What makes two samples comparable. `samples` stays out: raising it reuses the
        samples already drawn instead of drawing them again."""
        return record_id("eval-sampling", self.temperature, self.top_p, self.max_tokens)


def sampling_for(cfg: Recipe, bench) -> Sampling:
    """eval.benchmark.<name> wins over eval.<field>, which wins over the benchmark's default."""
    e, own = cfg.eval, cfg.eval.benchmark.get(bench.name)

    def pick(name: str):
        for value in (getattr(own, name, None), getattr(e, name)):
            if value is not None:
                return value
        return getattr(bench, name)
    return Sampling(pick("samples"), pick("temperature"), pick("top_p"), pick("max_tokens"))


def sampling_summary(cfg: Recipe) -> str:
    """The recipe's eval sampling in words, per benchmark when they differ."""
    from distill.eval.benchmark import get_benchmark

    def words(sp: Sampling) -> str:
        return (f"{sp.samples} sample(s) per question, temperature {sp.temperature}, top-p "
                f"{sp.top_p}, at most {sp.max_tokens} new tokens")
    per = {}
    for name in cfg.eval.benchmarks:
        try:
            per[name] = words(sampling_for(cfg, get_benchmark(name)))
        except KeyError:  # a benchmark file removed since the run: say nothing about it
            continue
    if len(set(per.values())) == 1:
        return next(iter(per.values()))
    return "; ".join(f"{name}: {w}" for name, w in per.items())


def _sample_id(model: EvalModel, bench, problem: dict, sample: int, shash: str) -> str:
    # The role is part of the key: a recipe may name the same weights as teacher and base.
    # The prompt is too: a benchmark whose prompt changed must not reuse old answers.
    return record_id(model.role, model.key, bench.name, bench.version, problem["id"], sample,
                     shash, record_id(problem["messages"]))


def _pinned(bench, data_file: str | None):
    """The benchmark with its version pinned to the local file's content hash, if any, so a
    changed data file never reuses old samples."""
    if data_file:
        return dataclasses.replace(bench, version=bench.resolved_version(data_file))
    return bench


def _evaluate_model(cfg: Recipe, stage: Stage, model: EvalModel, benches: list, problems: dict,
                    sampling: dict, done: set[str]) -> int:
    """Asks `model` for every missing sample and writes one scored record per sample.
    Returns the number of requests that failed after retries."""
    from distill.teacher.client import Job, complete_all

    pending: dict[str, tuple] = {}  # job key -> (bench, problem, sample indices)
    for bench in benches:
        sp = sampling[bench.name]
        for p in problems[bench.name]:
            missing = [s for s in range(sp.samples)
                       if _sample_id(model, bench, p, s, sp.hash()) not in done]
            if missing:
                pending[record_id(bench.name, p["id"], missing)] = (bench, p, missing)
    if not pending:
        log.info("eval %s: all samples done", model.role)
        return 0

    failures = 0
    with model.endpoint() as (base_url, served, api_key):
        jobs = []
        for k, (bench, p, missing) in pending.items():
            sp = sampling[bench.name]
            jobs.append(Job(key=k, messages=p["messages"], n=len(missing),
                            temperature=sp.temperature, top_p=sp.top_p, max_tokens=sp.max_tokens))
        # Generate in chunks and grade each chunk in parallel worker processes: grading runs
        # untrusted code with timeouts, which must not stall the client's event loop, and a
        # crash loses at most one chunk of samples.
        chunk = max(64, 4 * cfg.eval.max_concurrency)
        for start in range(0, len(jobs), chunk):
            answered: list[tuple] = []
            failed = complete_all(base_url, served, jobs[start:start + chunk],
                                  lambda job, resp: answered.append((job, resp)),
                                  api_key=api_key, max_concurrency=cfg.eval.max_concurrency,
                                  desc=f"eval {model.role}")
            failures += len(failed)
            items, meta = [], []
            for job, resp in answered:
                bench, p, missing = pending[job.key]
                for sample, choice in zip(missing, resp.choices):
                    items.append((p, choice.content or ""))
                    meta.append((bench, p, sample, choice))
            # The filter stage's scorer settings: a student is graded as its teacher's traces were.
            verdicts = scoring.grade(items, workers=cfg.filter.workers,
                                     timeout_s=cfg.filter.code_timeout_s,
                                     memory_mb=cfg.filter.code_memory_mb)
            with stage.writer() as w:
                for (bench, p, sample, choice), verdict in zip(meta, verdicts):
                    shash = sampling[bench.name].hash()
                    w.write({
                        "id": _sample_id(model, bench, p, sample, shash),
                        "role": model.role, "model": model.name, "benchmark": bench.name,
                        "version": bench.version, "task_id": p["id"],
                        "categories": p.get("categories") or {}, "sample": sample,
                        "correct": bool(verdict.ok), "reason": verdict.reason,
                        "answer": scoring.voted_answer(p, choice.content or ""),
                        "content": choice.content, "reasoning": choice.reasoning,
                        "finish_reason": choice.finish_reason, "sampling_hash": shash,
                    })
    return failures


def _question_rows(model: EvalModel, bench, questions: list[scoring.Question]) -> list[dict]:
    """Per-question pass@1 of exactly the samples scored: publish pairs models on them."""
    rows = []
    for q in questions:
        sub = q.labels[1].split("/", 1)[1] if len(q.labels) > 1 else None
        rows.append({"role": model.role, "model": model.name, "benchmark": bench.name,
                     "category": bench.category, "subcategory": sub, "categories": q.labels,
                     "task_id": q.task_id, "score": sum(q.verdicts) / len(q.verdicts),
                     "samples": len(q.verdicts)})
    return rows


def run_evaluate(cfg: Recipe, run_dir: Path) -> Path:
    from distill.eval.benchmark import get_benchmark

    run_dir = Path(run_dir)
    models = eval_models(cfg, run_dir)
    stage = Stage(run_dir, "eval")
    stage.start()
    try:
        benches = [_pinned(get_benchmark(name), cfg.eval.data_files.get(name))
                   for name in cfg.eval.benchmarks]
    except KeyError as e:
        raise InputError(str(e.args[0]), key="eval.benchmarks") from None
    unknown = sorted(set(cfg.eval.benchmark) - {b.name for b in benches})
    if unknown:
        raise InputError(f"settings for {unknown[0]!r}, which is not in eval.benchmarks",
                         key=f"eval.benchmark.{unknown[0]}")
    problems = {}
    for b in benches:
        own = cfg.eval.benchmark.get(b.name)
        problems[b.name] = b.problems(cfg.eval.data_files.get(b.name), cfg.eval.limit,
                                      own.options if own else None)
        if not problems[b.name]:
            raise InputError(f"benchmark {b.name} has no questions", key="eval.benchmarks")
    sampling = {b.name: sampling_for(cfg, b) for b in benches}

    failures = 0
    for model in models:
        failures += _evaluate_model(cfg, stage, model, benches, problems, sampling, stage.ids())
    if failures:
        raise RuntimeError(f"{failures} eval requests failed after retries; re-run the eval "
                           "stage to retry only those")

    by_id = {r["id"]: r for r in stage.read()}
    rows, question_rows, comparisons = [], [], []
    table: dict[tuple[str, str], list[scoring.Question]] = {}
    for bench in benches:
        sp = sampling[bench.name]
        for model in models:
            wanted = [_sample_id(model, bench, p, s, sp.hash())
                      for p in problems[bench.name] for s in range(sp.samples)]
            missing = [i for i in wanted if i not in by_id]
            if missing:
                raise RuntimeError(f"{len(missing)} {model.role} samples on {bench.name} "
                                   "have no record; re-run the eval stage")
            qs = scoring.questions_from(bench, problems[bench.name], [by_id[i] for i in wanted])
            table[(model.role, bench.name)] = qs
            rows.extend(scoring.score_rows(model.name, model.role, bench, qs, cfg.eval.pass_k))
            question_rows.extend(_question_rows(model, bench, qs))
        for a, b in (("student", "base"), ("student", "teacher")):
            comparisons.extend(scoring.comparison_rows(a, b, bench, table[(a, bench.name)],
                                                       table[(b, bench.name)]))
    scoring.add_retention(rows, table)
    stage.write_json("questions.json", question_rows)
    stage.write_json("comparisons.json", comparisons)
    path = stage.write_json("scores.json", rows)
    stage.complete(benchmarks={b.name: {"version": b.version, **dataclasses.asdict(sampling[b.name])}
                               for b in benches},
                   models={m.role: m.name for m in models})
    return path
