"""Running a sweep: its stages as a graph of steps, each step one stage of one variant run as
`distill <stage> <variant>/recipe.yaml --run-dir <variant> --wait` in a process of its own.

A process per step, not a thread: two trainers in one Python process share accelerate's state,
the GIL and torch's thread pool; in their own processes they share only the cores, split
between them by OMP_NUM_THREADS (`sweep.threads_per_variant`, default cores / concurrency). Its
log is `<sweep_dir>/logs/<variant slug>.<stage>.log`.

`steps(plan)` is the graph: a step waits for the step that ran its previous stage for it (its
own, or its lead's when shared), and a variant's evaluate for its donor's, whose teacher and
base answers it starts from (`seed_answers`). `execute(steps, submit, done, concurrency)` walks
it with any executor: `run_sweep` with a thread pool (the CLI), flows/sweep_flow.py with
Prefect tasks. Every stage resumes from its records, so a second run of a finished sweep runs
each step once more and each returns at once: nothing is generated or trained again.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from distill.errors import InputError
from distill.records import RunDir
from distill.sweep.plan import STAGE_ORDER, SweepPlan, Variant, prepare

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    variant: Variant
    stage: str
    after: tuple[tuple[str, str], ...]     # (variant name, stage) of the steps it waits for
    donor_dir: Path | None = None          # evaluate: the run directory to take answers from

    @property
    def key(self) -> tuple[str, str]:
        return (self.variant.name, self.stage)

    @property
    def label(self) -> str:
        return f"{self.variant.run_dir.name}.{self.stage}"


def steps(plan: SweepPlan, stages: list[str] | None = None) -> list[Step]:
    """The steps in an order where every step comes after those it waits for."""
    chosen = [s for s in STAGE_ORDER if stages is None or s in stages]
    out: list[Step] = []
    for stage in chosen:
        i = STAGE_ORDER.index(stage)
        for v in plan.leads(stage):
            after: list[tuple[str, str]] = []
            # the nearest earlier stage of those chosen (train, with quantize left out)
            prev = next((s for s in reversed(STAGE_ORDER[:i]) if s in chosen), None)
            if prev is not None:
                after.append((v.shares[prev], prev))
            donor = None
            if stage == "evaluate" and v.donor != v.name:
                d = plan.variant(v.donor)
                donor = d.run_dir
                if "evaluate" in chosen:
                    after.append((d.shares["evaluate"], "evaluate"))
            out.append(Step(v, stage, tuple(dict.fromkeys(after)), donor))
    return out


def seed_answers(donor_dir: Path, run_dir: Path) -> int:
    """The teacher's and the base student's graded answers of `donor_dir` that `run_dir` does
    not hold yet, copied into its eval/ records: its evaluate then asks only for the rest. The
    records' ids carry the weights, benchmark and sampling, so an answer that does not fit is
    never read as one that does."""
    source, target = RunDir(donor_dir).eval, RunDir(run_dir).eval
    have = target.ids()
    fresh = [r for r in source.read() if r["role"] in ("teacher", "base") and r["id"] not in have]
    if fresh:
        with target.writer() as w:
            for r in fresh:
                w.write(r)
    return len(fresh)


def threads_per_step(plan: SweepPlan) -> int:
    return plan.threads_per_variant or max(1, (os.cpu_count() or 1) // plan.concurrency)


def run_step(step: Step, log_dir: Path, threads: int) -> None:
    """One stage of one variant in a process of its own; its output goes to its log file. Bad
    input (exit 2) is raised as InputError with the command's last line, any other failure as
    RuntimeError naming the log."""
    v = step.variant
    if step.donor_dir is not None:
        n = seed_answers(step.donor_dir, v.run_dir)
        if n:
            log.info("sweep: %s starts from %d teacher and base answers of %s", v.name, n,
                     step.donor_dir.name)
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{step.label}.log"
    cmd = [sys.executable, "-m", "distill.cli", step.stage, str(v.recipe_file.resolve()),
           "--run-dir", str(v.run_dir.resolve()), "--wait"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.time()
    log.info("sweep: %s: %s ...", v.name, step.stage)
    with open(path, "ab") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    lines = path.read_text(errors="replace").strip().splitlines() or [""]
    if rc == 2:
        raise InputError(f"variant {v.name}: {step.stage}: {lines[-1].removeprefix('error: ')}",
                         file=str(path))
    if rc != 0:
        raise RuntimeError(f"variant {v.name}: {step.stage} failed (exit {rc}): {lines[-1]} "
                           f"(log: {path})")
    log.info("sweep: %s: %s done in %.0f s", v.name, step.stage, time.time() - t0)


def execute(all_steps: list[Step], submit: Callable[[Step], Any], done: Callable[[Any], bool],
            result: Callable[[Any], None], concurrency: int, poll_s: float = 0.5) -> dict[tuple[str, str], BaseException]:
    """Runs the steps, at most `concurrency` at once, each when those it waits for succeeded.
    A failed step fails the steps after it; the others go on. Returns the failures by step."""
    pending = list(all_steps)
    running: dict[tuple[str, str], Any] = {}
    ok: set[tuple[str, str]] = set()
    failed: dict[tuple[str, str], BaseException] = {}
    while pending or running:
        for key, handle in list(running.items()):
            if done(handle):
                del running[key]
                try:
                    result(handle)
                    ok.add(key)
                except BaseException as e:  # noqa: BLE001  (a step's failure is reported, not raised here)
                    failed[key] = e
        for step in list(pending):
            if any(a in failed for a in step.after):
                pending.remove(step)
                failed[step.key] = RuntimeError(f"variant {step.variant.name}: {step.stage} not "
                                                "run: a step it waits for failed")
            elif len(running) < concurrency and all(a in ok for a in step.after):
                pending.remove(step)
                running[step.key] = submit(step)
        if running:
            time.sleep(poll_s)
    return failed


def raise_failures(failed: dict[tuple[str, str], BaseException]) -> None:
    """One error naming every failed step; bad input when every failure was bad input."""
    if not failed:
        return
    first = [e for e in failed.values() if not str(e).endswith("a step it waits for failed")]
    text = "; ".join(str(e) for e in first or failed.values())
    if first and all(isinstance(e, InputError) for e in first):
        raise InputError(f"{len(failed)} step(s) of the sweep did not run: {text}")
    raise RuntimeError(f"{len(failed)} step(s) of the sweep did not run: {text}")


def finish(plan: SweepPlan) -> Path:
    """The distillation map of every variant evaluated so far."""
    from distill.sweep.report import Variant as MapVariant, write_map
    variants = [MapVariant(v.name, v.run_dir, v.values) for v in plan.variants]
    return write_map(plan.sweep_dir, variants, plan.reference)


def run_sweep(plan: SweepPlan, stages: list[str] | None = None) -> Path:
    """The sweep (the stages named, default all) in this process's thread pool (`distill
    sweep`); returns the map."""
    prepare(plan)
    threads = threads_per_step(plan)
    log.info("sweep: %d variants, %d at once, %d thread(s) each: %s", len(plan.variants),
             plan.concurrency, threads, plan.sweep_dir)
    log_dir = plan.sweep_dir / "logs"
    with ThreadPoolExecutor(max_workers=plan.concurrency) as pool:
        failed = execute(steps(plan, stages), lambda s: pool.submit(run_step, s, log_dir, threads),
                         lambda f: f.done(), lambda f: f.result(), plan.concurrency)
    path = finish(plan)
    raise_failures(failed)
    return path
