"""The generate stage's spend caps over its run directory: reads what the stage spent there
(the `cost` of every generate record; the GPU-hours of every managed `vllm serve`, kept in
`generate/serving/*.json`), writes the GPU time of the serving under way, builds the cap the
teacher client checks before each request (`distill.teacher.budget`) and words the line a run
that reached it ends with.

Both caps are on the run directory's total, not one run's: `generate.max_usd` counts the
records of any generation settings and any prompt (samples of dropped prompts were paid for
too), `generate.max_gpu_hours` every serving the stage ran there. A serving's GPU-hours are its
wall time, from the moment distill starts `vllm serve` (loading the model included) until it
has stopped, x the tensor x pipeline x data parallel GPUs the recipe starts it with: the GPUs
held, whatever share of them the requests kept busy. The plan's layout (`plan.teacher_gpus`,
the layout on `plan.hardware`) is a recommendation, not what runs, so it is not used here.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from typing import Callable, Iterator

from distill.records import Stage
from distill.teacher.budget import Cap, GpuHourCap, SpendCap

# How often a serving's GPU time so far is written down: a kill -9 loses at most this much.
SAVE_EVERY_S = 30.0


def usd_spent(stage: Stage) -> float:
    """Dollars of every generate record in the run directory, of any settings and prompt."""
    return sum(float(r.get("cost") or 0) for r in stage.read_index(("cost",)))


def gpu_hours_spent(stage: Stage) -> float:
    """GPU-hours of every managed vllm serve the stage ran in the run directory."""
    return sum(float(stage.read_json(f"serving/{p.name}")["gpu_hours"])
               for p in sorted((stage.path / "serving").glob("*.json")))


def spent(cfg, stage: Stage) -> float:
    """What counts against the recipe's cap so far, in its unit."""
    return usd_spent(stage) if cfg.generate.max_usd is not None else gpu_hours_spent(stage)


def stage_cap(cfg, stage: Stage, share: float | None, price: Callable[[dict], float]) -> Cap | None:
    """The recipe's spend cap (None: none). `share`: what this call may spend, a shard's part;
    None: the cap less what the run directory spent already. `price(usage)`: the dollars of an
    answered request. A GPU-hour cap's clock starts now."""
    g = cfg.generate
    if g.max_usd is not None:
        cap, before = (g.max_usd, usd_spent(stage)) if share is None else (share, 0.0)
        worst = (max(g.price_per_m_input, g.price_per_m_cached_input or 0.0),
                 max(g.price_per_m_output, g.price_per_m_reasoning or 0.0))
        return SpendCap(cap, before, worst, price)
    if g.max_gpu_hours is not None:
        from distill.serving.vllm_serve import STOP_TIMEOUT_S
        v = cfg.teacher.vllm
        cap, before = (g.max_gpu_hours, gpu_hours_spent(stage)) if share is None else (share, 0.0)
        gpus = v.tensor_parallel_size * v.pipeline_parallel_size * v.data_parallel_size
        return GpuHourCap(cap, before, gpus, g.timeout_s, STOP_TIMEOUT_S)
    return None


@contextlib.contextmanager
def serving_session(stage: Stage, cap: Cap | None) -> Iterator[None]:
    """Keeps the GPU time of the serving started inside the block in
    generate/serving/<start>-<host>-<pid>-<random>.json: every SAVE_EVERY_S, on a thread
    (loading a large model answers nothing for many minutes), and once it has stopped. One file
    per serving, so that shards on several machines never write the same file."""
    if not isinstance(cap, GpuHourCap):
        yield
        return
    gpu_cap = cap
    name = (f"serving/{time.strftime('%Y%m%dT%H%M%S')}-{socket.gethostname()}-{os.getpid()}-"
            f"{uuid.uuid4().hex[:6]}.json")
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    def save() -> None:
        hours = gpu_cap.hours
        stage.write_json(name, {"started": started, "gpus": gpu_cap.gpus, "hours": hours,
                                "gpu_hours": hours * gpu_cap.gpus})

    stop = threading.Event()

    def keep() -> None:
        while not stop.wait(SAVE_EVERY_S):
            save()

    save()
    thread = threading.Thread(target=keep, name="serving-hours", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        save()


def cap_reached(cfg, stage: Stage, outcome: dict, failed: list[dict]) -> str:
    """The one line a run that reached its spend cap ends with; the spend is read from the run
    directory afresh (every shard's included)."""
    g = cfg.generate
    total = spent(cfg, stage)
    if g.max_usd is not None:
        key, used = "generate.max_usd", f"${total:,.2f} spent of generate.max_usd = ${g.max_usd:,.2f}"
    else:
        key, used = "generate.max_gpu_hours", (f"{total:,.2f} GPU-hours used of "
                                              f"generate.max_gpu_hours = {g.max_gpu_hours:,.2f}")
        if cfg.plan.hourly_usd is not None:
            used += f" (${total * cfg.plan.hourly_usd:,.2f} at plan.hourly_usd)"
    not_asked = sum(len(f["missing_samples"]) for f in failed if f["kind"] == "spend_cap")
    other = sum(len(f["missing_samples"]) for f in failed) - not_asked
    counts = (f"{outcome['samples']:,} of {outcome['prompts'] * g.samples_per_prompt:,} samples "
              f"stored; {not_asked:,} not asked" + (f", {other:,} failed (see failed.json)" if other else ""))
    return f"spend cap reached: {used} ({counts}); raise {key} and re-run to resume"
