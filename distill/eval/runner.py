"""The evaluate stage: reads benchmarks and run_dir/train/model, writes eval/ per-sample
records (EvalSample), eval/scores.json (with retention), eval/questions.json, eval/comparisons.json and,
while some samples could not be had, eval/failed.json.

Teacher, base student and distilled student answer the same questions with the same sampling
(the benchmark's defaults, cfg.eval, cfg.eval.benchmark.<name>), over the same
OpenAI-compatible client (distill/eval/answers.py); the shared scorer (filters.verify) grades
them. Each sample is one record keyed by (model, benchmark, version, task, sample, sampling
hash), where the sampling hash covers temperature, top-p, max tokens and the prompt itself: an
interrupted eval resumes with only the missing samples, more samples reuse the ones drawn, and a
changed prompt, sampling or model draws anew. A model this stage serves with vLLM gets the
context its prompts need (distill/eval/context.py); a request clamped to it has the max_tokens
it asked for in its key as well, so a longer context later draws anew.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from distill.config import Recipe
from distill.errors import InputError
from distill.eval import scoring
from distill.eval.answers import Ask, answer
from distill.eval.context import Context, flag_value, plan_context
from distill.eval.models import EvalModel, eval_models
from distill.records import RunDir, Stage, record_id

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
    from distill.grading.benchmarks import get_benchmark

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


def _sample_id(model: EvalModel, bench, problem: dict, sample: int, shash: str,
               clamped_to: int | None = None) -> str:
    # The role is part of the key: a recipe may name the same weights as teacher and base.
    # The prompt is too: a benchmark whose prompt changed must not reuse old answers.
    parts = [model.role, model.key, bench.name, bench.version, problem["id"], sample, shash,
             record_id(problem["messages"])]
    if clamped_to is not None:   # fewer new tokens than the sampling says: another sampling
        parts.append(("max_tokens", clamped_to))
    if model.request_fields:     # what else the server was told about sampling
        parts.append(("request", sorted(model.request_fields.items())))
    return record_id(*parts)


def _pinned(bench, data_file: str | None):
    """The benchmark with its version pinned to the local file's content hash, if any, so a
    changed data file never reuses old samples."""
    if data_file:
        return dataclasses.replace(bench, version=bench.resolved_version(data_file))
    return bench


def _context(cfg: Recipe, model: EvalModel, benches: list, problems: dict,
             sampling: dict) -> tuple[Context | None, int | None]:
    """For a model served here with vLLM (or a GGUF file with llama.cpp): its context and the
    --max-model-len to start it with (None when eval.server_args already carry one, which then
    is the context)."""
    if model.served not in ("vllm", "llama.cpp") or model.path is None:
        return None, None
    given = flag_value(cfg.eval.server_args, "--max-model-len") if model.served == "vllm" else None
    if given and cfg.eval.max_model_len and int(given) != cfg.eval.max_model_len:
        raise InputError(f"--max-model-len {given} in eval.server_args disagrees with "
                         f"eval.max_model_len {cfg.eval.max_model_len}", key="eval.max_model_len")
    everything = [p for b in benches for p in problems[b.name]]
    ctx = plan_context(model.path, model.revision, everything,
                       max(sampling[b.name].max_tokens for b in benches),
                       int(given) if given else cfg.eval.max_model_len)
    log.info("eval %s: %s context %d tokens (%s)", model.role, model.served, ctx.max_model_len,
             ctx.why)
    return ctx, None if given else ctx.max_model_len


def _asks(model: EvalModel, benches: list, problems: dict, sampling: dict,
          ctx: Context | None) -> list[Ask]:
    out = []
    for bench in benches:
        sp = sampling[bench.name]
        shash = sp.hash()
        for p in problems[bench.name]:
            asked = ctx.max_tokens(p["id"], sp.max_tokens) if ctx else sp.max_tokens
            clamped = asked if asked != sp.max_tokens else None
            out.append(Ask(bench, p, [_sample_id(model, bench, p, s, shash, clamped)
                                      for s in range(sp.samples)],
                           shash, sp.temperature, sp.top_p, asked, sp.max_tokens,
                           ctx.prompt_tokens[p["id"]] if ctx else None))
    return out


def _failed(stage: Stage, failures: list[dict]) -> RuntimeError:
    """Writes eval/failed.json and says what failed, with the commonest kind's own message."""
    path = stage.write_json("failed.json", failures)
    kinds = Counter(f["kind"] for f in failures)
    kind, count = kinds.most_common(1)[0]
    example = next(f for f in failures if f["kind"] == kind)
    graded = sum(f["kind"] == "grading" for f in failures)
    parts = []
    if len(failures) > graded:
        parts.append(f"{len(failures) - graded} eval requests failed after retries")
    if graded:
        parts.append(f"the answers to {graded} questions could not be graded (the grader "
                     "failed, not the answers)")
    return RuntimeError(f"{'; '.join(parts)}. Commonest: {kind} ({count} of {len(failures)}), "
                        f"e.g. {example['role']} on {example['benchmark']} {example['task']}: "
                        f"{example['reason']}. All in {path}; re-run the eval stage to retry "
                        "only those")


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
    from distill.grading.benchmarks import get_benchmark

    run_dir = Path(run_dir)
    models = eval_models(cfg, run_dir)
    stage = RunDir(run_dir).eval
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
    problems, options = {}, {}
    for b in benches:
        own = cfg.eval.benchmark.get(b.name)
        # The loader's options as scored (a LiveCodeBench release and date window) go into
        # the score rows and the manifest.
        options[b.name] = b.resolved_options(own.options if own else None,
                                             key=f"eval.benchmark.{b.name}.options")
        problems[b.name] = b.problems(cfg.eval.data_files.get(b.name), cfg.eval.limit,
                                      own.options if own else None)
        if not problems[b.name]:
            raise InputError(f"benchmark {b.name} has no questions", key="eval.benchmarks")
    sampling = {b.name: sampling_for(cfg, b) for b in benches}

    contexts = {m.role: _context(cfg, m, benches, problems, sampling) for m in models}
    asks = {m.role: _asks(m, benches, problems, sampling, contexts[m.role][0]) for m in models}
    failures, done = [], stage.ids()
    for model in models:
        failures += answer(cfg, stage, model, asks[model.role], done, contexts[model.role][1])
    if failures:
        raise _failed(stage, failures)
    (stage.path / "failed.json").unlink(missing_ok=True)

    by_id = {r["id"]: r for r in stage.read()}
    rows: list[dict] = []
    question_rows: list[dict] = []
    comparisons: list[dict] = []
    table: dict[tuple[str, str], list[scoring.Question]] = {}
    for bench in benches:
        for model in models:
            wanted = [i for a in asks[model.role] if a.bench is bench for i in a.ids]
            missing = [i for i in wanted if i not in by_id]
            if missing:
                raise RuntimeError(f"{len(missing)} {model.role} samples on {bench.name} "
                                   "have no record; re-run the eval stage")
            qs = scoring.questions_from(bench, problems[bench.name], [by_id[i] for i in wanted])
            table[(model.role, bench.name)] = qs
            rows.extend({**r, "options": options[bench.name]} for r in
                        scoring.score_rows(model.name, model.role, bench, qs, cfg.eval.pass_k))
            question_rows.extend(_question_rows(model, bench, qs))
        pairs = [("student", "base"), ("student", "teacher")]
        pairs += [(m.role, other) for m in models if m.role.startswith("student-")
                  for other in ("student", "teacher")]
        for a, b in pairs:
            comparisons.extend(scoring.comparison_rows(a, b, bench, table[(a, bench.name)],
                                                       table[(b, bench.name)]))
    scoring.add_retention(rows, table)
    stage.write_json("questions.json", question_rows)
    stage.write_json("comparisons.json", comparisons)
    path = stage.write_json("scores.json", rows)
    stage.complete(benchmarks={b.name: {"version": b.version,
                                        **dataclasses.asdict(sampling[b.name]),
                                        "options": options[b.name]} for b in benches},
                   models={m.role: m.name for m in models})
    from distill.tracking import log_scalars
    log_scalars(cfg, run_dir, {f"eval/{r['role']}/{r['benchmark']}/{r['category']}/{r['metric']}": r["score"]
                               for r in rows if isinstance(r.get("score"), (int, float))})
    return path
