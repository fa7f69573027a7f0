"""Sharding the generate stage across machines with Ray (`generate.shards > 1`): the prompt set
is split by a hash of each prompt id into `shards` parts, and each part runs as one Ray task
doing generate's ordinary resumable loop (handed in by `distill.generate`) into the run directory (which every node must
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
from typing import Callable

from distill.records import record_id

log = logging.getLogger(__name__)


def shard_of(prompt_id: str, shards: int) -> int:
    return int(record_id("shard", prompt_id), 16) % shards


def _run_shard(part: Callable, recipe: dict, run_dir: str, index: int, shards: int,
               kwargs: dict) -> dict:
    """One Ray task: the prompts of shard `index`, generated as a single-machine run would."""
    from distill.config import Recipe
    from distill.records import RunDir
    cfg = Recipe.model_validate(recipe)
    prompts = [p for p in RunDir(run_dir).prompts.read() if shard_of(p["id"], shards) == index]
    if not prompts:
        return {"prompts": 0, "samples": 0, "failed": [], "errors": {}}
    return part(cfg, Path(run_dir), prompts, label=f" [shard {index + 1}/{shards}]", **kwargs)


def run_sharded(cfg, run_dir: Path, part: Callable, **kwargs) -> tuple[list[dict], list[str]]:
    """Runs `part(cfg, run_dir, prompts, label=..., **kwargs)` (generate's own single-machine
    loop) once per shard as Ray tasks. Returns the outcomes of the shards that finished and one line per
    shard that crashed: its prompts stay missing, for the caller to report."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("generate.shards > 1 runs on Ray: pip install 'distill[ray]'") from None
    g = cfg.generate
    started_here = not ray.is_initialized()
    if started_here:
        # Workers import distill as the driver does (a source checkout on PYTHONPATH included).
        env = {k: os.environ[k] for k in ("PYTHONPATH", "DISTILL_CACHE") if k in os.environ}
        where = {"address": g.ray_address} if g.ray_address else {"num_cpus": g.shards}
        ray.init(runtime_env={"env_vars": env} if env else None, log_to_driver=True, **where)
    try:
        task = ray.remote(num_cpus=1, num_gpus=g.gpus_per_shard, max_retries=0)(_run_shard)
        recipe = cfg.model_dump(mode="json")
        refs = [task.remote(part, recipe, str(Path(run_dir).resolve()), i, g.shards, kwargs)
                for i in range(g.shards)]
        outcomes, errors = [], []
        for i, ref in enumerate(refs):
            try:
                outcomes.append(ray.get(ref))
            except Exception as e:  # a task that crashed: its prompts stay missing, reported below
                errors.append(f"shard {i + 1}/{g.shards}: {type(e).__name__}: {str(e).splitlines()[0]}")
                log.debug("generate shard %d/%d: %s", i + 1, g.shards, e)   # the remote traceback
                log.error("generate %s", errors[-1])
    finally:
        if started_here:
            ray.shutdown()
    return outcomes, errors
