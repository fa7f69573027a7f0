"""Prefect flow `distill-sweep`: variants of a recipe (distill/sweep/), their steps as Prefect
tasks, and the distillation map as an artifact; the same plan and steps as `distill sweep`.

    prefect deployment run distill-sweep/r1-to-7b-data \\
        -p recipe=r1-to-7b -p 'over=["train.max_examples=1000,4000,16000", "train.student=Qwen/Qwen2.5-1.5B,Qwen/Qwen2.5-7B"]'

Each step (one stage of one variant) is a task, started when the steps it waits for have
succeeded, `sweep.concurrency` at a time; it runs the stage in a process of its own. The tasks
run in a subflow whose task runner the recipe chooses: `sweep.task_runner: threads` (Prefect's
thread pool, on this worker's machine) or `ray` (prefect-ray's RayTaskRunner, on the Ray cluster
at `sweep.ray_address`, or a local one; `pip install 'distill[ray]'`). With Ray, every Ray node
must see the sweep directory (shared storage) and distill's checkout.

A failed step is retried once unless it failed on bad input; steps after it do not run, the
others go on, and the flow fails at the end naming every failed step, after writing the map of
the variants that finished. A re-run resumes: finished stages return at once.
"""

from __future__ import annotations

import re
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from distill.config import default_run_dir
from distill.errors import InputError
from distill.recipes import read_recipe
from distill.sweep.plan import SweepPlan, plan_sweep, prepare
from distill.sweep.run import Step, execute, finish, raise_failures, run_step, steps, threads_per_step
from flows.distill_flow import distill_logs, retry_unless_bad_input


@task(retries=1, retry_delay_seconds=10, cache_policy=NO_CACHE,
      retry_condition_fn=retry_unless_bad_input)
def sweep_step(step: Step, log_dir: str, threads: int) -> None:
    run_step(step, Path(log_dir), threads)


def task_runner(plan: SweepPlan):
    if plan.task_runner == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError:
            raise InputError("sweep.task_runner ray needs prefect-ray: pip install 'distill[ray]'",
                             key="sweep.task_runner") from None
        return RayTaskRunner(address=plan.ray_address) if plan.ray_address else RayTaskRunner()
    # execute() holds the concurrency; the pool only needs a thread for each running step.
    return ThreadPoolTaskRunner(max_workers=plan.concurrency)


def _plan(recipe: str, over: list[str], sweep_dir: str, overrides: list[str]) -> SweepPlan:
    return plan_sweep(recipe, over, Path(sweep_dir), overrides)


@flow(name="distill-sweep-steps")
def walk_steps(recipe: str, over: list[str], sweep_dir: str, overrides: list[str]) -> list[str]:
    """The steps of the sweep as tasks of this flow's task runner; returns the failures."""
    plan = _plan(recipe, over, sweep_dir, overrides)
    log_dir, threads = str(plan.sweep_dir / "logs"), threads_per_step(plan)

    def submit(step: Step):
        return sweep_step.with_options(name=step.label).submit(step, log_dir, threads)

    def done(future) -> bool:
        return future.state.is_final()

    failed = execute(steps(plan), submit, done, lambda f: f.result(), plan.concurrency)
    return [str(e) for e in failed.values()]


@flow(name="distill-sweep", log_prints=True)
@distill_logs()
def distill_sweep(recipe: str = "smoke", over: list[str] | None = None,
                  run_dir: str | None = None, overrides: list[str] | None = None) -> str:
    """Variants of a recipe, and the map of where the student keeps the teacher's quality.

    Args:
        recipe: a recipe in configs/ (smoke, r1-to-7b, ...) or a recipe file
        over: `KEY=V1,V2` per swept key, as `distill sweep --over` (several make a grid); adds
            to the recipe's sweep.over
        run_dir: the sweep directory (default runs/<recipe name>-sweep in the checkout)
        overrides: dotted overrides of every variant, as `distill -o`
    """
    over, overrides = list(over or []), list(overrides or [])
    base = read_recipe(recipe, overrides)
    sweep_dir = str(Path(run_dir or f"{default_run_dir(base)}-sweep").resolve())
    plan = _plan(recipe, over, sweep_dir, overrides)
    prepare(plan)
    failures = walk_steps.with_options(task_runner=task_runner(plan))(recipe, over, sweep_dir, overrides)
    path = finish(plan)
    slug = re.sub(r"[^a-z0-9-]+", "-", base.run.name.lower())
    create_markdown_artifact(path.read_text(), key=f"{slug}-sweep-map",
                             description=f"distillation map: {path}")
    if failures:
        raise_failures({(str(i), ""): RuntimeError(f) for i, f in enumerate(failures)})
    print(f"map: {path}")
    return str(path)


if __name__ == "__main__":
    distill_sweep()
