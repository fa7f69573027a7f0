"""A refresh keeps a run current: reads the run directory and the recipe, runs the prompts,
generate and filter stages again, and train, evaluate and publish when the recipe's
thresholds say so; writes one record per refresh to `refresh/` (with `refresh/report.md`) and
`refresh/trained.json`, the ids of the kept traces the current student was trained on.

Nothing here re-does work by itself: the prompts stage adds only prompts whose id it has not
seen (new rows, or a new revision of a dataset), the generate stage asks the teacher only for
(prompt, sample) keys without a record, so the teacher sees only the new prompts; the filter
stage re-grades everything, which re-decontaminates the old traces against benchmarks added
since. The decision to retrain compares the kept set with what the student was trained on:

- no trained student yet: train;
- kept traces the student was trained on are no longer kept (a new benchmark, a stricter
  filter) and `refresh.retrain_on_removal`: train, the student has seen data it should not;
- at least `refresh.min_new_kept` new kept traces that are at least `refresh.min_growth` of
  the trained set: train;
- else: keep the student. An evaluation left unfinished, or one missing a benchmark the recipe
  has since added, still runs.

`run_refresh(cfg, run_dir, run=...)` takes the function that runs one stage, so the Prefect flow
(flows/refresh_flow.py) runs each stage as a task while the decisions stay here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from distill.config import Recipe
from distill.pipeline import run_stage
from distill.records import RunDir, record_id, write_json, write_text


def _trained_ids(run_dir: Path) -> tuple[set[str] | None, int | None]:
    """(ids of the kept traces the current student was trained on, or None when unknown;
    how many there were, or None when no student is trained)."""
    from distill.train.data import dataset_hash, source_dataset  # the train stage's own data hash

    rd = RunDir(run_dir)
    if not rd.done("train"):
        return None, None
    manifest = rd.train.manifest() or {}
    count = manifest.get("records")
    state_path = rd.refresh.path / "trained.json"
    if state_path.exists():
        state = json.loads(state_path.read_text())
        if state.get("config_hash") == manifest.get("config_hash"):
            return set(state["ids"]), count
    # Trained since the last refresh looked (or never looked): the dataset on disk is what it
    # was trained on if its hash is the one the train stage recorded.
    lineage_path = rd.train.path / "lineage.json"
    trained_hash = json.loads(lineage_path.read_text()).get("dataset_hash") \
        if lineage_path.exists() else None
    # The hash streams from the train stage's Arrow copy of the kept set (its cache when the
    # data is what was trained on): the kept set is never held in memory.
    if trained_hash and rd.dataset.is_complete() and next(iter(rd.dataset.read_index(())), None):
        ds, root = source_dataset(rd.dataset, rd.train.path / "cache")
        if dataset_hash(ds, root) == trained_hash:
            ids = set(ds["id"])
            _save_trained(run_dir, manifest.get("config_hash"), ids)
            return ids, count
    return None, count


def _save_trained(run_dir: Path, config_hash: str | None, ids: set[str]) -> None:
    write_json(RunDir(run_dir).refresh.path / "trained.json",
               {"config_hash": config_hash, "ids": sorted(ids)})


def decide(rc, trained: set[str] | None, trained_count: int | None,
           kept: set[str]) -> tuple[bool, str, int, int | None]:
    """(retrain?, why, kept traces the student has not seen, kept traces it saw that are gone
    (None when what it saw is unknown))."""
    if trained_count is None:
        return True, "no trained student yet", len(kept), None
    if trained is not None:
        added, removed = len(kept - trained), len(trained - kept)
    else:  # only the count is known
        added, removed = max(0, len(kept) - trained_count), None
    if removed and rc.retrain_on_removal:
        return True, (f"{removed} traces the student was trained on are no longer kept "
                      "(refresh.retrain_on_removal)"), added, removed
    growth = added / max(1, trained_count)
    if added >= rc.min_new_kept and growth >= rc.min_growth:
        return True, (f"{added} new kept traces (+{100 * growth:.1f}%) reach refresh.min_new_kept "
                      f"{rc.min_new_kept} and refresh.min_growth {rc.min_growth:g}"), added, removed
    return False, (f"{added} new kept traces (+{100 * growth:.1f}%) are below refresh.min_new_kept "
                   f"{rc.min_new_kept} or refresh.min_growth {rc.min_growth:g}"), added, removed


def _eval_is_current(cfg: Recipe, run_dir: Path) -> bool:
    rd = RunDir(run_dir)
    if not rd.done("evaluate"):
        return False
    done = (rd.eval.manifest() or {}).get("benchmarks") or []
    return set(cfg.eval.benchmarks) <= set(done)


def run_refresh(cfg: Recipe, run_dir: Path,
                run: Callable[[str], object] | None = None, *, wait: bool = False) -> dict:
    """`run` runs one stage (default `run_stage`; with `wait`, a stage another run holds is
    waited for rather than refused)."""
    run_dir = Path(run_dir)
    run = run or (lambda name: run_stage(name, cfg, run_dir, wait=wait))
    rd = RunDir(run_dir)
    started = time.time()
    prompts_before = rd.prompts.ids()
    kept_before = (rd.dataset.manifest() or {}).get("records", 0) \
        if rd.dataset.is_complete() else 0
    trained, trained_count = _trained_ids(run_dir)

    run("prompts")
    new_prompts = len(rd.prompts.ids() - prompts_before)
    run("generate")
    gen = rd.generate.manifest() or {}
    run("filter")
    kept = rd.dataset.ids()
    retrain, reason, added, removed = decide(cfg.refresh, trained, trained_count, kept)

    stages = []
    if retrain:
        stages = ["train", "quantize", "evaluate", "publish"]
    elif not _eval_is_current(cfg, run_dir):
        stages, reason = ["evaluate", "publish"], reason + "; the evaluation is not current"
    elif not rd.done("publish"):
        stages, reason = ["publish"], reason + "; the report is not written"
    for name in stages:
        run(name)
    if retrain:
        _save_trained(run_dir, (rd.train.manifest() or {}).get("config_hash"), kept)

    summary = {"id": record_id("refresh", started), "started": started,
               "seconds": round(time.time() - started, 1), "new_prompts": new_prompts,
               "prompt_revisions": (rd.prompts.manifest() or {}).get("revisions"),
               "new_samples": gen.get("new_samples", 0), "teacher_requests": gen.get("requests", 0),
               "kept_before": kept_before, "kept_after": len(kept), "new_kept": added,
               "removed_kept": removed, "retrained": retrain, "stages": stages, "reason": reason}
    history = rd.refresh
    with history.writer() as w:
        w.write(summary)
    write_text(history.path / "report.md", _report(list(history.read())))
    history.complete(last=summary)
    return summary


def _report(history: list[dict]) -> str:
    last = history[-1]
    lines = ["# Refresh", "",
             f"Last refresh: {last['new_prompts']} new prompts, {last['new_samples']} new teacher "
             f"samples in {last['teacher_requests']} requests; kept {last['kept_before']} -> "
             f"{last['kept_after']}. {'Retrained' if last['retrained'] else 'Not retrained'}: "
             f"{last['reason']}.", "",
             "| started (UTC) | new prompts | new samples | kept | new kept | removed | retrained |",
             "|---|--:|--:|--:|--:|--:|---|"]
    for h in reversed(history):
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(h["started"]))
        lines.append(f"| {when} | {h['new_prompts']} | {h['new_samples']} | {h['kept_after']} | "
                     f"{h['new_kept']} | {'' if h['removed_kept'] is None else h['removed_kept']} | "
                     f"{'yes' if h['retrained'] else 'no'} |")
    return "\n".join(lines) + "\n"
