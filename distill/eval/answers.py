"""Asks one model for the samples it is missing and grades them: reads the questions to ask
(`Ask`: a problem, the record id of each of its samples, how to ask) and the ids already
written, writes one scored EvalSample per sample to eval/, and returns what could not be
done (requests that failed after their retries, answers the grader failed to grade).

Requests: a question's missing samples go out in requests of at most the model's
`max_n_per_request` samples, with the benchmark's sampling; for a model this stage serves with
vLLM, max_tokens is what fits in its context (distill/eval/context.py) and the record says so.
A server that returns fewer choices than asked (an API that ignores `n`) leaves samples
missing: they are asked again, round after round as the generate stage does, until a round
brings nothing new. Each request waits eval.timeout_s and is retried eval.max_retries times.

Grading runs in chunks, in worker processes and sandboxes (untrusted code with timeouts must
not stall the client's event loop; a crash loses at most one chunk). An answer whose grading
failed for the grader's own reasons (Verdict.infra) is graded again, up to eval.grade_retries
times; if it still fails it is not written, never scored as wrong: it stays missing and a
re-run asks for it again. Each record counts the failed request attempts before its answer
(`retried_attempts`, on the first sample of a request) and its failed gradings
(`grade_retries`): the score rows add them up as infrastructure errors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from distill.eval import scoring
from distill.grading.benchmarks import Benchmark
from distill.record_types import EvalSample
from distill.records import Stage, record_id

log = logging.getLogger(__name__)

# As the generate stage (distill/generate.py): rounds of asking again for what a server that
# returns fewer choices than asked left missing.
MAX_ROUNDS = 64


@dataclass
class Ask:
    """One question a model answers: its sample ids (by sample index) and how to ask."""
    bench: Benchmark
    problem: dict
    ids: list[str]
    sampling_hash: str
    temperature: float
    top_p: float
    max_tokens: int               # what a request asks for: clamped to a served context
    wanted_tokens: int            # the benchmark's max_tokens
    prompt_tokens: int | None     # counted with the served model's template; None: not served here


def _failure(model, ask: Ask, missing: list[int], reason: str, kind: str,
             attempts: int | None) -> dict:
    return {"model": model.name, "role": model.role, "benchmark": ask.bench.name,
            "task": ask.problem["id"], "samples": missing, "reason": reason, "kind": kind,
            "attempts": attempts}


def _record(model, ask: Ask, sample: int, choice, verdict, retried: int,
            graded_again: int) -> EvalSample:
    p, bench = ask.problem, ask.bench
    rec = EvalSample(id=ask.ids[sample], role=model.role, model=model.name,
                     benchmark=bench.name, version=bench.version, task_id=p["id"],
                     categories=p.get("categories") or {}, sample=sample,
                     correct=bool(verdict.ok), reason=verdict.reason,
                     answer=scoring.voted_answer(p, choice.content or ""),
                     content=choice.content, reasoning=choice.reasoning,
                     finish_reason=choice.finish_reason, sampling_hash=ask.sampling_hash,
                     max_tokens=ask.max_tokens, retried_attempts=retried,
                     grade_retries=graded_again)
    if ask.prompt_tokens is not None:
        rec["prompt_tokens"] = ask.prompt_tokens
        rec["clamped"] = ask.max_tokens < ask.wanted_tokens
    return rec


def _grade_and_write(cfg, stage: Stage, model, asks: list[Ask], sent: dict, answered: list,
                     done: set[str], failures: dict[int, dict]) -> int:
    """Grades the answers of one chunk and writes them; returns how many were written."""
    items, meta = [], []
    for n, (job, resp) in enumerate(answered):
        k, indices = sent[job.key]
        for sample, choice in zip(indices, resp.choices):
            items.append((asks[k].problem, choice.content or ""))
            meta.append((n, k, sample, choice, resp.attempts - 1))
    # The filter stage's scorer settings: a student is graded as its teacher's traces were.
    verdicts, failed = scoring.grade(items, retries=cfg.eval.grade_retries,
                                     workers=cfg.filter.workers,
                                     timeout_s=cfg.filter.code_timeout_s,
                                     memory_mb=cfg.filter.code_memory_mb)
    written, counted = 0, set()
    with stage.writer() as w:
        for (n, k, sample, choice, retried), verdict, fails in zip(meta, verdicts, failed):
            if verdict.infra:
                f = failures.setdefault(k, _failure(model, asks[k], [], verdict.reason,
                                                    "grading", fails))
                f["samples"].append(sample)
                continue
            # A request's retried attempts count once, on the first of its samples written.
            rec = _record(model, asks[k], sample, choice, verdict,
                          0 if n in counted else retried, fails)
            counted.add(n)
            w.write(rec)
            done.add(rec["id"])
            written += 1
    return written


def _request_fields(model) -> dict:
    fields = dict(model.request_fields)
    if model.stop_token_ids:
        fields["stop_token_ids"] = model.stop_token_ids
    return fields


def answer(cfg, stage: Stage, model, asks: list[Ask], done: set[str],
           max_model_len: int | None = None) -> list[dict]:
    """Asks `model` for every missing sample of `asks`, grades and writes them; returns one
    failure per question that still misses samples. `max_model_len` goes to `vllm serve`."""
    from distill.teacher.client import Job, complete_all

    def missing(k: int) -> list[int]:
        return [s for s, i in enumerate(asks[k].ids) if i not in done]

    todo = [k for k in range(len(asks)) if missing(k)]
    if not todo:
        log.info("eval %s: all samples done", model.role)
        return []
    failures: dict[int, dict] = {}
    for k in todo:
        if asks[k].max_tokens < 1:   # the prompt alone fills the served context
            failures[k] = _failure(model, asks[k], missing(k),
                                   f"the prompt has {asks[k].prompt_tokens} tokens and the "
                                   f"context is {max_model_len}: nothing fits after it",
                                   "context", 0)
    if all(k in failures for k in todo):     # nothing to ask: do not start a server for it
        return list(failures.values())
    chunk = max(64, 4 * cfg.eval.max_concurrency)
    with model.endpoint(max_model_len) as (base_url, served, api_key):
        for round_ in range(MAX_ROUNDS):
            jobs, sent = [], {}
            for k in todo:
                if k in failures or not (m := missing(k)):
                    continue
                a, step = asks[k], model.max_n_per_request or len(m)
                for i in range(0, len(m), step):
                    key = record_id(k, m[i:i + step], round_)
                    sent[key] = (k, m[i:i + step])
                    jobs.append(Job(key=key, messages=a.problem["messages"], n=len(sent[key][1]),
                                    temperature=a.temperature, top_p=a.top_p,
                                    max_tokens=a.max_tokens,
                                    extra_body=_request_fields(model)))
            if not jobs:
                break
            written = 0
            for start in range(0, len(jobs), chunk):
                answered: list[tuple] = []
                failed = complete_all(base_url, served, jobs[start:start + chunk],
                                      lambda job, resp: answered.append((job, resp)),
                                      api_key=api_key, max_concurrency=cfg.eval.max_concurrency,
                                      timeout_s=cfg.eval.timeout_s,
                                      max_retries=cfg.eval.max_retries,
                                      desc=f"eval {model.role}")
                for f in failed:
                    assert f.job is not None  # complete_all's failures name their request
                    k = sent[f.job.key][0]
                    failures.setdefault(k, _failure(model, asks[k], missing(k), f.reason,
                                                    f.kind, f.attempts))
                written += _grade_and_write(cfg, stage, model, asks, sent, answered, done,
                                            failures)
            if not written:
                break
    for k in todo:
        if k not in failures and missing(k):
            failures[k] = _failure(model, asks[k], [], "the server returned fewer choices than "
                                   "asked, round after round", "short", None)
        if k in failures:
            failures[k]["samples"] = missing(k)
    return list(failures.values())
