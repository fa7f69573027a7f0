"""Sharding the generate stage across machines with Ray (`generate.shards > 1`): the prompt set
is split by a hash of each prompt id into `shards` parts, and each part runs as one Ray task
doing the ordinary resumable `generate_prompts` into the run directory (which every node must
see: a shared filesystem). Each task writes its own record shards through `distill.records`,
reaches its teacher as the recipe says (a remote endpoint, or its own `vllm serve` on its node
with `generate.gpus_per_shard` GPUs), and hands back its counts; the driver adds them up and
writes the marker. A killed task or a killed driver loses only requests in flight: a re-run
skips every stored sample, whichever shard wrote it.

Ray is an optional extra (`pip install 'distill[ray]'`), imported here only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from distill.records import record_id

log = logging.getLogger(__name__)


def shard_of(prompt_id: str, shards: int) -> int:
    return int(record_id("shard", prompt_id), 16) % shards


def _run_shard(recipe: dict, run_dir: str, index: int, shards: int) -> dict:
    """One Ray task: the prompts of shard `index`, generated as a single-machine run would."""
    from distill.config import Recipe
    from distill.generate import generate_prompts
    from distill.records import RunDir
    cfg = Recipe.model_validate(recipe)
    prompts = [p for p in RunDir(run_dir).stage("prompts").read() if shard_of(p["id"], shards) == index]
    if not prompts:
        return {"prompts": 0, "samples": 0, "failed": [], "errors": {}}
    return generate_prompts(cfg, Path(run_dir), prompts, label=f" [shard {index + 1}/{shards}]")


def generate_sharded(cfg, run_dir: Path, prompts: list[dict]) -> dict:
    try:
        import ray
    except ImportError:
        raise RuntimeError("generate.shards > 1 runs on Ray: pip install 'distill[ray]'") from None
    from distill.generate import merge_outcomes
    g = cfg.generate
    started_here = not ray.is_initialized()
    if started_here:
        # Workers import distill as the driver does (a source checkout on PYTHONPATH included).
        env = {k: os.environ[k] for k in ("PYTHONPATH", "DISTILL_CACHE") if k in os.environ}
        kwargs = {"address": g.ray_address} if g.ray_address else {"num_cpus": g.shards}
        ray.init(runtime_env={"env_vars": env} if env else None, log_to_driver=True, **kwargs)
    try:
        task = ray.remote(num_cpus=1, num_gpus=g.gpus_per_shard, max_retries=0)(_run_shard)
        recipe = cfg.model_dump(mode="json")
        refs = [task.remote(recipe, str(Path(run_dir).resolve()), i, g.shards) for i in range(g.shards)]
        outcomes, errors = [], []
        for i, ref in enumerate(refs):
            try:
                outcomes.append(ray.get(ref))
            except Exception as e:  # a task that crashed: its prompts stay missing, reported below
                errors.append(f"shard {i + 1}/{g.shards}: {type(e).__name__}: {str(e).splitlines()[0]}")
                log.error("generate %s", errors[-1])
    finally:
        if started_here:
            ray.shutdown()
    total = merge_outcomes(outcomes)
    if errors:  # which prompts the crashed shards left: whatever has no record now
        from distill.generate import RESUME_FIELDS
        from distill.records import RunDir
        gen_hash = cfg.generation_hash()
        stored = {r["id"] for r in RunDir(run_dir).stage("generate").read_index(RESUME_FIELDS)
                  if r.get("gen_hash") == gen_hash}
        reported = {f["prompt_id"] for f in total["failed"]}
        for p in prompts:
            miss = [i for i in range(g.samples_per_prompt) if record_id(p["id"], i, gen_hash) not in stored]
            if miss and p["id"] not in reported:
                total["failed"].append({"prompt_id": p["id"], "missing_samples": miss,
                                        "reason": "; ".join(errors), "kind": "shard_crashed",
                                        "attempts": None, "retryable": True})
    for k in ("requests", "answered", "new_samples", "prompt_tokens", "completion_tokens",
              "reasoning_tokens", "empty_responses", "truncated", "truncated_total", "cost",
              "cost_this_run", "samples"):
        total.setdefault(k, 0)
    total["prompts"] = len(prompts)
    return total
