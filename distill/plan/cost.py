"""Compute and cost: FLOPs per token, the projected cost of a recipe's generation, and what a
run used. Reads `Arch` / `Params`, the recipe and, after a run, the records of prompts/ and
the current traces of generate/ (`distill.records.current_traces`); writes nothing.

FLOPs per generated token = 2 x the active parameters that multiply (`Params.matmul`) plus the
attention over the context: per layer 2 x heads x (d_qk + d_v) x the positions attended
(`sliding_window` at most on sliding layers). Generated tokens sit on average at position
prompt + completion / 2, so that is the context used.

Throughput measured in a run follows Little's law: with C requests in flight, C = rate x mean
latency, so output tokens/s = C x (sum of completion tokens) / (sum of request latencies). It
holds while the client keeps `max_concurrency` requests in flight, which the generate stage does
until its queue runs dry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distill.plan.params import Arch, Params


def attention_flops(a: Arch, context: int) -> float:
    """FLOPs of the attention scores and the weighted sum for one token at `context`."""
    if a.mla:  # per head: q.k over the nope + rope dims, the weighted sum over v_head_dim
        d = a.qk_nope_head_dim + a.qk_rope_head_dim + a.v_head_dim
    else:
        d = 2 * a.head_dim
    full = a.layers - a.sliding_layers
    positions = full * context + a.sliding_layers * min(context, a.sliding_window or context)
    return 2.0 * a.heads * d * positions


def flops_per_token(a: Arch, p: Params, context: int) -> float:
    return 2.0 * p.matmul + attention_flops(a, context)


@dataclass
class Usage:
    """What the teacher's samples of one generation config used, from their records."""
    samples: int
    prompts: int
    requests: float
    prompt_tokens: float
    completion_tokens: float
    reasoning_tokens: float
    cost_usd: float              # as recorded, at the prices of the recipe that ran
    latency_s: float             # summed over requests

    @property
    def mean_completion(self) -> float:
        return self.completion_tokens / self.samples if self.samples else 0.0

    @property
    def mean_prompt(self) -> float:
        return self.prompt_tokens / self.requests if self.requests else 0.0

    def tokens_per_s(self, concurrency: int) -> float | None:
        in_flight = min(concurrency, self.requests)
        return in_flight * self.completion_tokens / self.latency_s if self.latency_s else None


def recorded_usage(run_dir: Path | None, gen_hash: str | None = None) -> Usage | None:
    """Usage of the generate stage's current records (`current_traces`: of `gen_hash` when
    given, else of any settings). A request with n choices is stored as n records sharing its
    usage: each carries 1/n of it."""
    from distill.records import RunDir, current_traces
    if run_dir is None or not RunDir(run_dir).generate.path.is_dir():
        return None
    n = 0
    prompts: set = set()
    req = p_tok = c_tok = r_tok = cost = lat = 0.0
    for rec in current_traces(run_dir, gen_hash or None):
        u = rec.get("usage") or {}
        share = 1.0 / max(1, int(u.get("choices") or 1))
        n += 1
        prompts.add(rec.get("prompt_id"))
        req += share
        p_tok += share * float(u.get("prompt_tokens") or 0)
        c_tok += share * float(u.get("completion_tokens") or 0)
        details = u.get("completion_tokens_details") or {}
        r_tok += share * float(details.get("reasoning_tokens") or 0)
        cost += float(rec.get("cost") or 0.0)
        lat += share * float(rec.get("latency_s") or 0.0)
    if not n:
        return None
    return Usage(n, len(prompts), req, p_tok, c_tok, r_tok, cost, lat)


def prompt_count(cfg, run_dir: Path | None) -> tuple[int | None, str]:
    """How many prompts the recipe generates for: the prompts stage's records when it is done,
    else the sum of the sources' `count` (None when a source takes all of an unknown dataset)."""
    from distill.records import RunDir
    if run_dir is not None and RunDir(run_dir).prompts.is_complete():
        return sum(1 for _ in RunDir(run_dir).prompts.read()), "the prompts stage"
    counts = [s.count for s in cfg.prompts.sources]
    unknown = [s.name for s in cfg.prompts.sources if s.count is None]
    known = sum(c for c in counts if c is not None)
    if unknown:
        return (known or None), (f"the recipe's counts; {', '.join(unknown)} takes all of its "
                                 "dataset, counted once the prompts stage has run")
    return known, "the recipe's counts"


def prices(cfg) -> tuple[float, float, float | None]:
    """$ per million input, output and (where the recipe prices them apart) reasoning tokens."""
    g = cfg.generate
    return g.price_per_m_input, g.price_per_m_output, getattr(g, "price_per_m_reasoning", None)


def api_cost(cfg, input_tokens: float, output_tokens: float, reasoning_tokens: float = 0.0) -> float:
    p_in, p_out, p_reason = prices(cfg)
    if p_reason is None:
        return (input_tokens * p_in + output_tokens * p_out) / 1e6
    return (input_tokens * p_in + (output_tokens - reasoning_tokens) * p_out
            + reasoning_tokens * p_reason) / 1e6


def gpu_hours(output_tokens: float, tokens_per_s: float | None, gpus: int) -> float | None:
    return output_tokens / tokens_per_s / 3600 * gpus if tokens_per_s else None


def usd_per_m_tokens(tokens_per_s: float | None, devices: int, hourly: float | None) -> float | None:
    """$ per million generated tokens of a deployment of `devices` at `hourly` $ each."""
    if not tokens_per_s or hourly is None:
        return None
    return devices * hourly / (tokens_per_s * 3600) * 1e6
