"""The generate stage: reads prompt records (stage `prompts`), asks the teacher for
`samples_per_prompt` samples of each, writes one generation record per sample (stage
`generate`), and `generate/failed.json` when some requests still failed after their retries.

Each sample is written the moment its response arrives, so a kill -9 loses only the requests
in flight; a re-run asks only for the sample indices that have no record yet. Record ids are
record_id(prompt_id, sample_index, gen_hash): a change of teacher or sampling settings starts
a fresh set of samples beside the old ones.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from distill.records import RunDir, record_id
from distill.teacher.client import Job, Response, complete_all
from distill.teacher.local import teacher_endpoint

log = logging.getLogger(__name__)

# A server that ignores `n` (transformers serve, some hosted APIs) returns one choice per
# request; further rounds ask again for what is still missing.
MAX_ROUNDS = 64


def _token(t: str) -> int | str:
    return int(t[9:]) if t.startswith("token_id:") else t


def compact_logprobs(content: list[dict]) -> dict:
    """The teacher's per-token logprobs as three parallel arrays: the sampled tokens, and for
    each the top-k token ids and their logprobs (4 decimals). Tokens are vocabulary ids when the
    server returned them as "token_id:N" (vLLM, distill's server), else token strings."""
    return {"tokens": [_token(t["token"]) for t in content],
            "top_ids": [[_token(a["token"]) for a in t.get("top_logprobs") or []] for t in content],
            "top_logprobs": [[round(a["logprob"], 4) for a in t.get("top_logprobs") or []]
                             for t in content]}


def run_generate(cfg, run_dir: Path) -> Path:
    rd = RunDir(run_dir)
    prompts = list(rd.stage("prompts").read())
    if not prompts:
        raise RuntimeError(f"no prompt records in {rd.stage('prompts').path}; run the prompts stage first")
    stage = rd.stage("generate")
    stage.start()
    g = cfg.generate
    gen_hash = cfg.generation_hash()
    wanted = {record_id(p["id"], i, gen_hash) for p in prompts for i in range(g.samples_per_prompt)}
    done = stage.ids() & wanted
    totals = dict(requests=0, new_samples=0, prompt_tokens=0, completion_tokens=0, cost=0.0)
    failures: list[tuple[Job, str]] = []

    def missing(p: dict) -> list[int]:
        return [i for i in range(g.samples_per_prompt) if record_id(p["id"], i, gen_hash) not in done]

    if not any(missing(p) for p in prompts):  # nothing to ask: do not start or call a teacher
        rounds = range(0)
        endpoint = contextlib.nullcontext((None, cfg.teacher.model, None))
    else:
        rounds = range(MAX_ROUNDS)
        endpoint = teacher_endpoint(cfg.teacher)
    with endpoint as (base_url, model, api_key), stage.writer() as out:
        for round_ in rounds:
            todo = {p["id"]: (p, m) for p in prompts if (m := missing(p))}
            if not todo:
                break
            jobs = [Job(key=pid, messages=p["messages"], n=len(m), temperature=g.temperature,
                        top_p=g.top_p, max_tokens=g.max_tokens, top_logprobs=g.top_logprobs)
                    for pid, (p, m) in todo.items()]
            before = totals["new_samples"]

            def on_done(job: Job, resp: Response) -> None:
                problem, indices = todo[job.key]
                usage = resp.usage
                p_tok, c_tok = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
                cost = (p_tok * g.price_per_m_input + c_tok * g.price_per_m_output) / 1e6
                totals["requests"] += 1
                totals["prompt_tokens"] += p_tok
                totals["completion_tokens"] += c_tok
                totals["cost"] += cost
                for index, choice in zip(indices, resp.choices):
                    key = record_id(problem["id"], index, gen_hash)
                    rec = {**problem, "id": key, "prompt_id": problem["id"], "sample_index": index,
                           "gen_hash": gen_hash, "reasoning": choice.reasoning, "content": choice.content,
                           "finish_reason": choice.finish_reason,
                           # usage is the request's (n choices share one prompt); cost is this
                           # sample's share, so costs add up over records.
                           "usage": {**usage, "choices": len(resp.choices)},
                           "latency_s": round(resp.latency_s, 4), "cost": cost / len(resp.choices),
                           "teacher": cfg.teacher.model}
                    if g.top_logprobs and choice.logprobs is not None:
                        rec["teacher_logprobs"] = compact_logprobs(choice.logprobs)
                    out.write(rec)
                    done.add(key)
                    totals["new_samples"] += 1

            failures = complete_all(base_url, model, jobs, on_done, api_key=api_key,
                                    max_concurrency=g.max_concurrency, max_retries=g.max_retries,
                                    timeout_s=g.timeout_s, desc=f"generate ({model})")
            if failures or totals["new_samples"] == before:
                break

    short = [(p, m) for p in prompts if (m := missing(p))]
    if failures or short:
        reasons = {job.key: reason for job, reason in failures}
        report = [{"prompt_id": p["id"], "missing_samples": m,
                   "reason": reasons.get(p["id"], "the server returned fewer choices than asked")}
                  for p, m in short]
        path = stage.write_json("failed.json", report)
        raise RuntimeError(f"{len(report)} of {len(prompts)} prompts still miss samples after "
                           f"{g.max_retries} retries (see {path}); re-run the stage to retry them")
    (stage.path / "failed.json").unlink(missing_ok=True)
    records = [r for r in stage.read() if r.get("gen_hash") == gen_hash]
    stage.complete(samples=len(records), prompts=len(prompts), gen_hash=gen_hash,
                   teacher=cfg.teacher.model, failures=0, requests=totals["requests"],
                   new_samples=totals["new_samples"], prompt_tokens=totals["prompt_tokens"],
                   completion_tokens=totals["completion_tokens"], cost_this_run=totals["cost"],
                   cost=sum(float(r.get("cost") or 0) for r in records))
    log.info("generate: %d samples (%d new, %d requests)", len(records), totals["new_samples"],
             totals["requests"])
    return stage.path
