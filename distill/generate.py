"""The generate stage: reads prompt records (stage `prompts`), asks the teacher for
`samples_per_prompt` samples of each, writes one generation record per sample (stage
`generate`), and `generate/failed.json` naming every prompt that still misses samples after
the retries, with the reason.

Each sample is written the moment its response arrives, so a kill -9 loses only the requests
in flight; a re-run asks only for the sample indices that have no record yet (failed ones
included). Record ids are record_id(prompt_id, sample_index, gen_hash): a change of teacher or
sampling settings starts a fresh set of samples beside the old ones.

The teacher is reached through `distill.teacher` (HTTP client with limits and retries, a managed
`vllm serve`, or the vLLM offline engine); with `generate.shards > 1` the prompt set is split
by id across Ray tasks (`distill.shard`), each running `generate_prompts` into its own shards.

A spend cap (`generate.max_usd`, `generate.max_gpu_hours`) is checked before each request is
sent (`distill.teacher.budget`) against the run directory's total (`distill.spend`). A run that
reaches it keeps what it stored, writes `failed.json`, leaves the stage incomplete and raises
`InputError`; a re-run with a higher cap resumes. With shards, each shard may spend an equal
share of what the cap left when the stage started: shards run on other machines and do not see
each other's spend, so one stops at its share even while another leaves part of its own unspent
(a re-run hands that out again).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections import Counter
from pathlib import Path
from typing import cast

from distill.errors import InputError
from distill.record_types import Prompt, TeacherLogprobs, Trace, Usage
from distill.records import RunDir, current_traces, record_id
from distill.spend import cap_reached, serving_session, spent, stage_cap
from distill.teacher.budget import Cap
from distill.teacher.client import Failure, Job, Response
from distill.teacher.progress import Progress

log = logging.getLogger(__name__)

# A server that ignores `n` (transformers serve, some hosted APIs) returns one choice per
# request; further rounds ask again for what is still missing.
MAX_ROUNDS = 64
# What a resume needs of a stored sample; kept in each shard's index (distill/records.py).
RESUME_FIELDS = ("prompt_id", "gen_hash", "cost", "finish_reason")


def _token(t: str) -> int | str:
    return int(t[9:]) if t.startswith("token_id:") else t


def compact_logprobs(content: list[dict]) -> TeacherLogprobs:
    """The teacher's per-token logprobs as three parallel arrays: the sampled tokens, and for
    each the top-k token ids and their logprobs (4 decimals). Tokens are vocabulary ids when the
    server returned them as "token_id:N" (vLLM, distill's server), else token strings."""
    return TeacherLogprobs(
        tokens=[_token(t["token"]) for t in content],
        top_ids=[[_token(a["token"]) for a in t.get("top_logprobs") or []] for t in content],
        top_logprobs=[[round(a["logprob"], 4) for a in t.get("top_logprobs") or []]
                      for t in content])


def usage_of(raw: dict, choices: int) -> Usage:
    """One request's usage in one shape, whatever the server's dialect: OpenAI and vLLM put
    reasoning and cached tokens in *_details, DeepSeek reports prompt_cache_hit_tokens."""
    details = raw.get("completion_tokens_details") or {}
    cached = (raw.get("prompt_tokens_details") or {}).get("cached_tokens") or raw.get("prompt_cache_hit_tokens")
    return Usage(prompt_tokens=int(raw.get("prompt_tokens") or 0),
                 completion_tokens=int(raw.get("completion_tokens") or 0),
                 reasoning_tokens=int(details.get("reasoning_tokens") or 0),
                 cached_prompt_tokens=int(cached or 0), choices=choices)


def cost_of(g, usage: Usage) -> float:
    """Dollars for one request from the recipe's per-million prices."""
    cached = usage["cached_prompt_tokens"]
    p_cached = g.price_per_m_input if g.price_per_m_cached_input is None else g.price_per_m_cached_input
    reasoning = usage["reasoning_tokens"]
    p_reason = g.price_per_m_output if g.price_per_m_reasoning is None else g.price_per_m_reasoning
    return ((usage["prompt_tokens"] - cached) * g.price_per_m_input + cached * p_cached
            + (usage["completion_tokens"] - reasoning) * g.price_per_m_output + reasoning * p_reason) / 1e6


@contextlib.contextmanager
def _teacher(cfg, log_dir: Path, cap: Cap | None = None):
    """Yields (model name, complete(jobs, on_done, progress) -> failures)."""
    t, g = cfg.teacher, cfg.generate
    if t.backend == "vllm_offline":
        from distill.teacher.offline import OfflineEngine
        engine = OfflineEngine(t)
        yield t.model, engine.complete_all
        return
    from distill.teacher.client import complete_all
    from distill.serving.endpoint import teacher_endpoint
    with teacher_endpoint(t, log_dir=log_dir) as (base_url, model, api_key):
        yield model, functools.partial(
            complete_all, base_url, model, api_key=api_key, max_concurrency=g.max_concurrency,
            requests_per_minute=g.requests_per_minute, tokens_per_minute=g.tokens_per_minute,
            max_retries=g.max_retries, timeout_s=g.timeout_s, backoff_s=g.backoff_s,
            max_backoff_s=g.max_backoff_s, cap=cap)


def _seed(g, prompt_id: str, index: int) -> dict:
    # One seed per request, derived from the recipe's: requests for different sample indices
    # of a prompt must not repeat each other.
    return {} if g.seed is None else {"seed": int(record_id(g.seed, prompt_id, index), 16) % (1 << 31)}


def generate_prompts(cfg, run_dir: Path, prompts: list[dict], label: str = "",
                     cap_share: float | None = None) -> dict:
    """Generates every missing sample of `prompts` into the generate stage and returns what
    happened (JSON-able, so a Ray task can hand it back): counts, cost, failures per prompt.
    `cap_share`: what a shard may spend of the recipe's spend cap (None: all that is left)."""
    g = cfg.generate
    stage = RunDir(run_dir).generate
    gen_hash = cfg.generation_hash()
    done: set[str] = set()
    cost_before, truncated_before = 0.0, 0
    # The stored samples of these prompts under these settings, from the shards' indexes:
    # a resume reads a few fields per sample, not every trace.
    stored = current_traces(run_dir, gen_hash, prompt_ids={p["id"] for p in prompts},
                            fields=RESUME_FIELDS)
    for r in stored:
        done.add(r["id"])
        cost_before += float(r.get("cost") or 0)
        truncated_before += r.get("finish_reason") == "length"
    records_before = len(done) + stored.other
    wanted = len(prompts) * g.samples_per_prompt
    t = Counter(requests=0, answered=0, new_samples=0, prompt_tokens=0, completion_tokens=0,
                reasoning_tokens=0, empty_responses=0, truncated=0)
    cost_now = 0.0
    given_up: dict[str, Failure] = {}
    empty_strikes: Counter = Counter()

    def missing(p: dict) -> list[int]:
        return [i for i in range(g.samples_per_prompt) if record_id(p["id"], i, gen_hash) not in done]

    cap: Cap | None = None
    errors: dict = {}
    asking = any(missing(p) for p in prompts)  # nothing to ask: do not start or call a teacher
    if asking:
        cap = stage_cap(cfg, stage, cap_share, lambda raw: cost_of(g, usage_of(raw, 1)))
    if cap is not None and cap.exhausted():  # not even one request fits: start nothing
        cap.reached = True
        for p in prompts:
            if missing(p):
                given_up[p["id"]] = Failure(None, cap.refusal(), "spend_cap", 0, True)
    elif asking:
        log_dir = stage.path / "logs"
        with serving_session(stage, cap), _teacher(cfg, log_dir, cap) as (model, complete), \
                stage.writer(index=RESUME_FIELDS) as out:
            progress = Progress(wanted, f"generate ({model}){label}", initial=len(done),
                                cost_before=cost_before, cap=cap)
            try:
                for _ in range(MAX_ROUNDS):
                    todo: dict[str, tuple[dict, list[int]]] = {}
                    step = g.max_n_per_request or g.samples_per_prompt
                    for p in prompts:
                        if p["id"] in given_up or not (m := missing(p)):
                            continue
                        for k in range(0, len(m), step):
                            todo[f"{p['id']}:{m[k]}"] = (p, m[k:k + step])
                    if not todo:
                        break
                    jobs = [Job(key=key, messages=p["messages"], n=len(idx), temperature=g.temperature,
                                top_p=g.top_p, max_tokens=g.max_tokens, top_logprobs=g.top_logprobs,
                                extra_body={**_seed(g, p["id"], idx[0]), **g.extra_body})
                            for key, (p, idx) in todo.items()]
                    before = t["new_samples"]

                    def on_done(job: Job, resp: Response) -> None:
                        nonlocal cost_now
                        problem, indices = todo[job.key]
                        usage = usage_of(resp.usage, len(resp.choices))
                        cost = cost_of(g, usage)
                        t["answered"] += 1
                        for f in ("prompt_tokens", "completion_tokens", "reasoning_tokens"):
                            t[f] += usage[f]
                        cost_now += cost
                        stored = 0
                        for index, choice in zip(indices, resp.choices):
                            if choice.empty:  # asked again in the next round
                                t["empty_responses"] += 1
                                empty_strikes[problem["id"]] += 1
                                continue
                            key = record_id(problem["id"], index, gen_hash)
                            rec: Trace = {  # the prompt's fields, then the sample's
                                   **cast(Prompt, problem), "id": key, "prompt_id": problem["id"],
                                   "sample_index": index, "gen_hash": gen_hash, "reasoning": choice.reasoning,
                                   "content": choice.content, "finish_reason": choice.finish_reason,
                                   # usage is the request's (n choices share one prompt); cost is
                                   # this sample's share, so costs add up over records.
                                   "usage": usage, "latency_s": round(resp.latency_s, 4),
                                   "attempts": resp.attempts, "cost": cost / len(resp.choices),
                                   "teacher": cfg.teacher.model}
                            if g.top_logprobs and choice.logprobs is not None:
                                rec["teacher_logprobs"] = compact_logprobs(choice.logprobs)
                            out.write(rec)
                            done.add(key)
                            stored += 1
                            t["truncated"] += choice.finish_reason == "length"
                        t["new_samples"] += stored
                        progress.advance(stored, usage["completion_tokens"], cost)

                    failures = complete(jobs, on_done, progress=progress)
                    for f in failures:
                        given_up[todo[f.job.key][0]["id"]] = f
                    for pid, strikes in empty_strikes.items():
                        if strikes > g.max_retries and pid not in given_up:
                            given_up[pid] = Failure(None, f"empty response {strikes} times", "empty",
                                                    strikes, True)
                    if t["new_samples"] == before or (cap is not None and cap.reached):
                        break
            finally:
                t["requests"] = progress.sent
                errors = dict(progress.errors)
                progress.close()

    failed = []
    for p in prompts:
        if m := missing(p):
            f = given_up.get(p["id"])
            if f is None and empty_strikes[p["id"]]:
                f = Failure(None, f"empty response {empty_strikes[p['id']]} times", "empty",
                            empty_strikes[p["id"]], True)
            failed.append({"prompt_id": p["id"], "missing_samples": m,
                           "reason": f.reason if f else "the server returned fewer choices than asked",
                           "kind": f.kind if f else "short", "attempts": f.attempts if f else None,
                           "retryable": f.retryable if f else True})
    return {**t, "samples": len(done), "prompts": len(prompts), "cost_this_run": cost_now,
            "cap_reached": int(cap is not None and cap.reached),
            "records": records_before + t["new_samples"],
            "cost": cost_before + cost_now, "truncated_total": truncated_before + t["truncated"],
            "errors": errors, "failed": failed}


def merge_outcomes(outcomes: list[dict]) -> dict:
    """Adds up the outcomes of several shards."""
    total: dict = {"errors": Counter(), "failed": []}
    for o in outcomes:
        for k, v in o.items():
            if k == "errors":
                total["errors"].update(v)
            elif k == "failed":
                total["failed"] += v
            else:
                total[k] = total.get(k, 0) + v
    total["errors"] = dict(total["errors"])
    return total


def _generate_sharded(cfg, run_dir: Path, prompts: list[dict]) -> dict:
    """`generate.shards` Ray tasks (`distill.shard`); the prompts a crashed shard left are
    reported as failed, found by what has no record now."""
    from distill.shard import run_sharded
    g = cfg.generate
    share: dict[str, float] = {}
    limit = g.max_usd if g.max_usd is not None else g.max_gpu_hours
    if limit is not None:  # an equal share each of what is left: see the module docstring
        share["cap_share"] = max(0.0, limit - spent(cfg, RunDir(run_dir).generate)) / g.shards
    outcomes, errors = run_sharded(cfg, run_dir, generate_prompts, **share)
    total = merge_outcomes(outcomes)
    if errors:
        gen_hash = cfg.generation_hash()
        stored = {r["id"] for r in current_traces(run_dir, gen_hash, prompt_ids={p["id"] for p in prompts},
                                                  fields=RESUME_FIELDS)}
        reported = {f["prompt_id"] for f in total["failed"]}
        for p in prompts:
            miss = [i for i in range(g.samples_per_prompt) if record_id(p["id"], i, gen_hash) not in stored]
            if miss and p["id"] not in reported:
                total["failed"].append({"prompt_id": p["id"], "missing_samples": miss,
                                        "reason": "; ".join(errors), "kind": "shard_crashed",
                                        "attempts": None, "retryable": True})
    for k in ("requests", "answered", "new_samples", "prompt_tokens", "completion_tokens",
              "reasoning_tokens", "empty_responses", "truncated", "truncated_total", "cost",
              "cost_this_run", "samples", "cap_reached"):
        total.setdefault(k, 0)
    total["prompts"] = len(prompts)
    return total


def run_generate(cfg, run_dir: Path) -> Path:
    rd = RunDir(run_dir)
    prompts = list(rd.require("prompts").read())
    stage = rd.generate
    stage.start()
    g = cfg.generate
    if g.shards > 1:
        o = _generate_sharded(cfg, Path(run_dir), prompts)
    else:
        o = generate_prompts(cfg, Path(run_dir), prompts)
    failed = o.pop("failed")
    counts = {k: o[k] for k in ("requests", "answered", "new_samples", "prompt_tokens",
                                "completion_tokens", "reasoning_tokens", "empty_responses", "errors")}
    summary = (f"{o['samples']} samples ({o['new_samples']} new) from {o['requests']} requests "
               f"({o['requests'] - o['answered']} failed attempts: {o['errors'] or 'none'}), "
               f"${o['cost_this_run']:.4f} this run, ${o['cost']:.4f} in all")
    if failed:
        path = stage.write_json("failed.json", failed)
        if o["cap_reached"]:
            log.info("generate: %s", summary)
            raise InputError(cap_reached(cfg, stage, o, failed))
        kinds = Counter(f["kind"] for f in failed)
        raise RuntimeError(f"{len(failed)} of {len(prompts)} prompts still miss samples "
                           f"({', '.join(f'{k}: {v}' for k, v in kinds.most_common())}; see {path}); "
                           f"re-run the stage to retry them. {summary}")
    (stage.path / "failed.json").unlink(missing_ok=True)
    if g.shards > 1:  # each shard counted the whole stage: count again
        o.pop("records", None)
    else:
        counts["records"] = o["records"]
    stage.complete(samples=o["samples"], prompts=len(prompts), gen_hash=cfg.generation_hash(),
                   teacher=cfg.teacher.model, failures=0, truncated=o["truncated_total"],
                   cost_this_run=o["cost_this_run"], cost=o["cost"],
                   wasted_requests=o["requests"] - o["answered"], **counts)
    log.info("generate: %s", summary)
    return stage.path
