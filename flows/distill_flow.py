"""Prefect flow `distill`: the pipeline's stages as tasks, nothing more; reads a recipe, writes its
run directory (through the stages) and Prefect artifacts.

Each task calls the same `run_<stage>(cfg, run_dir)` as the CLI. Stages skip finished records
on their own, so a retried task or a re-run flow resumes instead of starting over; Prefect's
result cache is off because caching follows the records' keys, not pickled results.

Placement: in Prefect 3 a task cannot choose its infrastructure, so the stages that need GPUs
(`gpu_stages`, train and evaluate by default) run as flow runs of another deployment
(`gpu_deployment`, e.g. `distill-stage/gpu` on a GPU work pool; flows/stage_flow.py), started
with `run_deployment` from inside their task: the task waits for that run, fails with its
state's message, and its retries start a new one. Unset, every stage runs in this flow's own
process. The run directory is read and written by both pools' workers: it must be on storage
they share.

The file is not called distill.py: Prefect loads an entrypoint as a module named after its
file, and a module named `distill` would stand in for the package, so `import distill.config`
would fail (or, with an editable install elsewhere, silently import another checkout).

Logs: every flow is wrapped in `distill_logs()`, so distill's log records (each stage's
summary, the progress lines, warnings) reach the flow run's logs in the UI and the worker's
output, at DISTILL_LOG_LEVEL (default INFO).
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path
from typing import Sequence

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from distill import logs
from distill.errors import InputError
from distill.config import default_run_dir
from distill.pipeline import STAGES, run_stage
from distill.recipes import read_recipe
from distill.tracking import tracking_markdown

# Stages that talk to servers retry more: a retry resumes from the records already written.
RETRIES = {"generate": 3, "evaluate": 2, "publish": 2}
GPU_STAGES = ["train", "evaluate"]
STAGE_FLOW = "distill-stage"  # flows/stage_flow.py; the flow a `gpu_deployment` must run


@contextlib.contextmanager
def distill_logs():
    """distill's log records into this flow run's logs while it runs (a decorator under
    @flow): what PREFECT_LOGGING_EXTRA_LOGGERS=distill does (Prefect's API handler on the
    `distill` logger; with that setting as well, its handler is kept and none added), plus the
    level (DISTILL_LOG_LEVEL, default INFO; Prefect leaves its extra loggers at the root's
    WARNING) and the records of threads that do not carry the run's context. No handler of
    distill's own: Prefect's console handler, on the root logger, shows them on the worker."""
    from prefect.context import get_run_context
    from prefect.exceptions import MissingContextError
    from prefect.logging.handlers import APILogHandler

    flow_run_id = get_run_context().flow_run.id

    class RunLogs(APILogHandler):
        def emit(self, record: logging.LogRecord) -> None:
            if getattr(record, "flow_run_id", None) is None:
                try:
                    get_run_context()
                except MissingContextError:   # a thread that did not inherit the context
                    record.flow_run_id = flow_run_id
            super().emit(record)

    logger = logging.getLogger(logs.LOGGER)
    level = logger.level
    logs.setup(stderr=False)
    handler = None
    if not any(isinstance(h, APILogHandler) for h in logger.handlers):
        handler = RunLogs()
        logger.addHandler(handler)
    try:
        yield
    finally:
        if handler is not None:
            logger.removeHandler(handler)
        logger.setLevel(level)


def check_stages(names: list[str], key: str) -> list[str]:
    """`names` in pipeline order; an unknown name is bad input naming the parameter `key`."""
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise InputError(f"unknown stage(s) {', '.join(map(repr, unknown))}; the stages are "
                         + ", ".join(STAGES), key=key)
    return [n for n in STAGES if n in names]


def placement(stages: list[str] | None, gpu_deployment: str | None,
              gpu_stages: list[str] | None) -> dict[str, str | None]:
    """stage -> the deployment that runs it (None: this flow's process), in pipeline order."""
    chosen = check_stages(list(STAGES) if stages is None else stages, "stages")
    remote = set(check_stages(GPU_STAGES if gpu_stages is None else gpu_stages, "gpu_stages"))
    return {n: gpu_deployment if gpu_deployment and n in remote else None for n in chosen}


def check_stage_deployment(name: str) -> None:
    """Fails before any stage runs when `name` is not a deployment of the `distill-stage` flow,
    rather than at train, after the teacher was paid for."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(name)
        except (ObjectNotFound, ValueError):
            raise InputError(f"no deployment {name!r} (flow/deployment, e.g. "
                             f"{STAGE_FLOW}/gpu; see prefect.yaml)", key="gpu_deployment") from None
        flow_name = client.read_flow(deployment.flow_id).name
    if flow_name != STAGE_FLOW:
        raise InputError(f"{name!r} runs the flow {flow_name!r}, not {STAGE_FLOW!r}",
                         key="gpu_deployment")


def raise_unless_completed(flow_run, stage: str, deployment: str) -> None:
    """A stage's flow run that ended other than Completed (Failed, Crashed, Cancelled) fails the
    calling task with that run's state message."""
    state = flow_run.state
    if state is None or not state.is_completed():
        name = state.name if state else "without a state"
        message = (state.message if state else None) or "no message"
        raise RuntimeError(f"stage {stage}: flow run {flow_run.name!r} of {deployment} ended "
                           f"{name}: {message}")


def run_on_deployment(deployment: str, name: str, recipe: str, overrides: list[str],
                      run_dir: str) -> None:
    """Runs one stage as a flow run of `deployment`, shown under the calling task, and waits for
    it to end."""
    from prefect.deployments import run_deployment

    flow_run = run_deployment(deployment, flow_run_name=f"{recipe}-{name}",
                              parameters={"stage": name, "recipe": recipe, "run_dir": run_dir,
                                          "overrides": overrides})
    raise_unless_completed(flow_run, name, deployment)


def retry_unless_bad_input(task, task_run, state) -> bool:
    """Retries a failed stage unless it failed on bad input: a recipe or data error fails the
    same way every time, so the flow stops at once with its message."""
    try:
        error = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001  (a result that cannot be read: retry as before)
        return True
    return not isinstance(error, InputError)


@task(retries=1, retry_delay_seconds=10, cache_policy=NO_CACHE,
      retry_condition_fn=retry_unless_bad_input)
def stage(name: str, recipe: str, overrides: list[str], run_dir: str,
          deployment: str | None = None) -> None:
    if deployment:
        run_on_deployment(deployment, name, recipe, overrides, run_dir)
        return
    cfg = read_recipe(recipe, overrides)
    # A retry waits for an attempt that still holds the stage (a lost worker that keeps
    # running), logging who holds it, then resumes from its records; never writes beside it.
    run_stage(name, cfg, Path(run_dir), wait=True)


def run_stage_task(name: str, recipe: str, overrides: list[str], run_dir: str,
                   deployment: str | None = None) -> None:
    stage.with_options(name=name, retries=RETRIES.get(name, 1))(name, recipe, overrides, run_dir,
                                                                deployment)


def publish_artifacts(run_name: str, run_dir: str, extra: Sequence[tuple[str, str]] = ()) -> None:
    """The filter report, the leaderboard (as Markdown and as a table), where training is
    tracked (the TensorBoard folder and its command) and `extra` (file, key) pairs, as Prefect
    artifacts keyed by the run's name: the latest run of a recipe shows up under the same key,
    earlier ones stay in its history."""
    slug = re.sub(r"[^a-z0-9-]+", "-", run_name.lower())
    files = [("filter/report.md", "filter-report"), ("report/leaderboard.md", "leaderboard"),
             *extra]
    for name, key in files:
        path = Path(run_dir) / name
        if path.exists():
            create_markdown_artifact(path.read_text(), key=f"{slug}-{key}",
                                     description=f"{run_name}: {name}")
    tracked = tracking_markdown(Path(run_dir))
    if tracked:
        create_markdown_artifact(tracked, key=f"{slug}-tracking",
                                 description=f"{run_name}: TensorBoard (train/tb/)")
    table = Path(run_dir) / "report" / "leaderboard.csv"
    if table.exists():
        import csv
        with open(table, newline="") as f:
            create_table_artifact(list(csv.DictReader(f)), key=f"{slug}-leaderboard-table",
                                  description=f"{run_name}: report/leaderboard.csv")


def resolve_run(recipe: str, run_dir: str | None, overrides: list[str]):
    """The recipe with its overrides, and the absolute run directory (default runs/<name>)."""
    cfg = read_recipe(recipe, overrides)
    return cfg, str(Path(run_dir or default_run_dir(cfg)).resolve())


@flow(name="distill", log_prints=True)
@distill_logs()
def distill_flow(recipe: str = "smoke", run_dir: str | None = None,
                 overrides: list[str] | None = None, stages: list[str] | None = None,
                 gpu_deployment: str | None = None, gpu_stages: list[str] | None = None) -> str:
    """A recipe end to end, or the stages named.

    Args:
        recipe: a recipe in configs/ (smoke, r1-to-7b, ...) or a recipe file
        run_dir: the run directory (default runs/<recipe name> in the checkout)
        overrides: dotted overrides, as `distill -o`: ["teacher.base_url=https://...", ...]
        stages: the stages to run, in pipeline order (default all): ["prompts", "generate"]
        gpu_deployment: a deployment of the distill-stage flow (distill-stage/gpu) that runs
            the gpu_stages on its own work pool; unset, every stage runs in this flow run
        gpu_stages: the stages sent to gpu_deployment (default ["train", "evaluate"])
    """
    overrides = overrides or []
    where = placement(stages, gpu_deployment, gpu_stages)
    cfg, run_dir = resolve_run(recipe, run_dir, overrides)
    if gpu_deployment and any(where.values()):     # placement sends stages away only with one
        check_stage_deployment(gpu_deployment)
    for name, deployment in where.items():
        run_stage_task(name, recipe, overrides, run_dir, deployment)
    publish_artifacts(cfg.run.name, run_dir)
    print(f"report: {Path(run_dir) / 'report'}")
    return run_dir


if __name__ == "__main__":
    distill_flow()
