"""The filter stage: reads the current generate records (`current_traces`; or the traces of
`filter.input`), writes a FilterVerdict per record to filter/, the kept traces as KeptExample chat
records to dataset/, and counts.json, report.json and report.md beside the verdicts.
Verification, the slow filter, keeps its verdicts in filter/verdicts/ as it goes (keyed by the
record, the limits and the verifier's code): a crashed or repeated run grades only the rest. A
verdict the grader failed to give (Verdict.infra) is never kept: the next run grades it again.

Filters run cheapest first and a record stops at its first rejection:
  truncated, think, empty, answer, repetition, length   (format, per trace)
  decontaminate                                          (per prompt, against evals/)
  verify                                                 (math-verify / sandboxed tests)
  dedup: exact per prompt, then (minhash) near-duplicate prompts and traces
  select: shortest correct, or at most k correct per prompt
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from distill.errors import InputError
from distill.filters import quality
from distill.filters.report import counts, markdown
from distill.record_types import FilterVerdict, KeptExample
from distill.records import RunDir, current_traces, record_id, write_text

log = logging.getLogger("distill.filter")


def _training_record(gen: dict) -> KeptExample:
    """A kept trace (a Trace, or a trace of `filter.input`) as the chat the student trains on."""
    prompt = [m for m in gen["messages"] if m["role"] != "assistant"]
    text = f"<think>{gen.get('reasoning') or ''}</think>{gen.get('content') or ''}"
    rec = KeptExample(id=gen["id"], prompt_id=gen.get("prompt_id"), source=gen.get("source"),
                      category=gen.get("category"),
                      messages=prompt + [{"role": "assistant", "content": text}])
    if gen.get("teacher_logprobs"):  # for logit distillation (train.method: logit_kd)
        rec["teacher_logprobs"] = gen["teacher_logprobs"]
    return rec


def _trace_text(gen: dict) -> str:
    return (gen.get("reasoning") or "") + "\n" + (gen.get("content") or "")


class _Ledger:
    """Per record: the reason each filter gave, and the first filter that rejected it."""

    def __init__(self, gens: list[dict]):
        self.gens = gens
        self.reasons: dict[str, dict[str, str]] = {g["id"]: {} for g in gens}
        self.failed: dict[str, str | None] = {g["id"]: None for g in gens}

    def alive(self) -> list[dict]:
        return [g for g in self.gens if self.failed[g["id"]] is None]

    def mark(self, gen: dict, name: str, why: str | None) -> None:
        self.reasons[gen["id"]][name] = why or "ok"
        if why:
            self.failed[gen["id"]] = name


def _token_counter(cfg):
    """Counts the tokens of a trace with the tokenizer the student trains with."""
    from transformers import AutoTokenizer

    from distill.models import resolve_model

    name = cfg.filter.tokenizer or cfg.train.student
    try:
        tok = AutoTokenizer.from_pretrained(resolve_model(name, key=None))
    except Exception as e:  # noqa: BLE001  (not found, no network)
        raise InputError(f"cannot load tokenizer {name!r} for the length bounds: "
                         f"{type(e).__name__}: {str(e).splitlines()[0][:200]}",
                         key="filter.tokenizer") from None
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def _format_checks(cfg, ledger: _Ledger) -> None:
    fc = cfg.filter
    count = _token_counter(cfg) if fc.min_tokens is not None or fc.max_tokens is not None else None

    def length(g: dict) -> str | None:
        assert count is not None  # checked only with a bound set
        return quality.length(count(_trace_text(g)), fc.min_tokens, fc.max_tokens)
    checks = [("truncated", quality.truncated, fc.drop_truncated),
              ("think", quality.think, fc.require_think),
              ("empty", quality.empty, True),
              ("answer", quality.final_answer, fc.require_answer),
              ("repetition", quality.repetition, fc.drop_repetition),
              ("length", length, count is not None)]
    for gen in ledger.gens:
        for name, check, enabled in checks:
            if enabled:
                ledger.mark(gen, name, check(gen))
                if ledger.failed[gen["id"]]:
                    break


def _decontaminate(cfg, ledger: _Ledger) -> dict:
    from distill.grading.decontaminate import PromptChecker

    checker = PromptChecker.from_recipe(cfg)
    hits: dict[Any, Any] = {}  # by prompt id
    for gen in ledger.alive():
        pid = gen.get("prompt_id")
        if pid not in hits:
            hits[pid] = checker.check(gen["messages"], gen.get("source"))
        hit = hits[pid]
        ledger.mark(gen, "decontaminate", hit.reason() if hit else None)
    return checker.summary({pid: h for pid, h in hits.items() if h})


# Verdicts are written as they are made, this many at a time: a crash loses at most one batch,
# and a re-run (or a refresh that adds traces) grades only what has no stored verdict.
VERIFY_BATCH = 256
_VERIFIER_SOURCES = ("grading/verify.py", "grading/code.py", "grading/harness.py",
                     "grading/extract.py", "grading/sandbox.py", "grading/sandbox_server.py",
                     "grading/pool.py")


@functools.cache
def _verifier_version() -> str:
    root = Path(__file__).resolve().parents[1]
    return record_id(*[(root / name).read_text() for name in _VERIFIER_SOURCES])


def _verdict_key(gen: dict, settings: dict) -> str:
    """What a verdict depends on: the record (answer and gold; not the reasoning, the
    teacher's logprobs or its usage), the limits, and the verifier's code."""
    graded = {k: v for k, v in gen.items()
              if k not in ("reasoning", "teacher_logprobs", "usage", "latency_s", "cost")}
    return record_id(graded, settings, _verifier_version())


def _verify(cfg, ledger: _Ledger, run_dir: Path) -> dict:
    """Grades the surviving traces; verdicts are kept in filter/verdicts/ across runs.
    Returns how many were graded now and how many came from the store, and how many the grader
    failed to grade (a sandbox that died, a math worker that crashed): those are rejected in
    this run as "not graded" but not stored, so the next run grades them again."""
    from distill.grading.verify import verify_many

    fc = cfg.filter
    settings = {"timeout_s": fc.code_timeout_s, "memory_mb": fc.code_memory_mb}
    keyed = [(_verdict_key(g, settings), g) for g in ledger.alive()]
    store = RunDir(run_dir).verify_store
    wanted = {k for k, _ in keyed}
    verdicts = {r["id"]: r for r in store.read() if r["id"] in wanted}
    todo = [(k, g) for k, g in keyed if k not in verdicts]
    stored = len(keyed) - len(todo)
    not_graded = 0
    if todo:
        log.info("filter: verifying %d traces (%d verdicts stored)", len(todo), stored)
        with store.writer() as w:
            for start in range(0, len(todo), VERIFY_BATCH):
                batch = todo[start:start + VERIFY_BATCH]
                graded = verify_many([(g, g.get("content") or "") for _, g in batch],
                                     workers=fc.workers, timeout_s=fc.code_timeout_s,
                                     memory_mb=fc.code_memory_mb)
                for (key, _), v in zip(batch, graded):
                    verdicts[key] = {"id": key, "ok": v.ok, "reason": v.reason}
                    if v.infra:
                        verdicts[key]["reason"] = f"not graded: {v.reason}"
                        not_graded += 1
                    else:
                        w.write(verdicts[key])
        if not_graded:
            log.warning("filter: %d traces could not be graded (the grader failed, not the "
                        "trace); they are left out of this run's set and graded again by the "
                        "next run", not_graded)
    for key, gen in keyed:
        rec = verdicts[key]
        ledger.mark(gen, "verify", None if rec["ok"] else rec["reason"])
        if rec["ok"]:
            ledger.reasons[gen["id"]]["verify"] = rec["reason"]
    out = {"graded": len(todo), "stored": stored}
    return {**out, "not_graded": not_graded} if not_graded else out


def _dedup(cfg, ledger: _Ledger) -> None:
    from distill.filters.dedup import duplicates, near_duplicates

    fc = cfg.filter
    alive = ledger.alive()
    dups = duplicates(alive)
    for gen in alive:
        ledger.mark(gen, "dedup", f"duplicate of {dups[gen['id']]}" if gen["id"] in dups else None)
    if fc.dedup != "minhash":
        return
    # Near-duplicate prompts (the same problem from two sources, or reworded): the prompt
    # with the most surviving traces is kept (then the smallest id), with all its traces.
    alive = ledger.alive()
    by_prompt: dict[Any, list[dict]] = defaultdict(list)  # by prompt id
    for gen in alive:
        by_prompt[gen.get("prompt_id")].append(gen)
    from distill.filters.decontaminate import prompt_text
    prompts = {pid: prompt_text(gs[0]["messages"]) for pid, gs in by_prompt.items()}
    dropped: dict[Any, Any] = near_duplicates(prompts, threshold=fc.dedup_threshold,
                                              keep=lambda pid: -len(by_prompt[pid]))
    for gen in alive:
        kept = dropped.get(gen.get("prompt_id"))
        ledger.mark(gen, "dedup", f"near-duplicate prompt of {kept}" if kept else None)
    # Near-duplicate traces (anywhere in the set): the shortest is kept, then the smallest id.
    alive = ledger.alive()
    texts = {g["id"]: _trace_text(g) for g in alive}
    dropped = near_duplicates(texts, threshold=fc.dedup_threshold, keep=lambda i: len(texts[i]))
    for gen in alive:
        kept = dropped.get(gen["id"])
        ledger.mark(gen, "dedup", f"near-duplicate trace of {kept}" if kept else None)


def _select(cfg, ledger: _Ledger) -> None:
    fc = cfg.filter
    by_prompt: dict[Any, list[dict]] = defaultdict(list)  # by prompt id
    for gen in ledger.alive():
        by_prompt[gen.get("prompt_id")].append(gen)
    for gens in by_prompt.values():
        if fc.select == "shortest":
            gens.sort(key=lambda g: (len(_trace_text(g)), g["id"]))
            for g in gens[1:]:
                ledger.mark(g, "select", f"not the shortest correct (kept {gens[0]['id']})")
            gens = gens[:1]
        if fc.max_per_prompt is not None:
            # In id order (ids are hashes): the same samples survive on every run.
            for i, g in enumerate(gens):
                ledger.mark(g, "select", f"over {fc.max_per_prompt} per prompt"
                            if i >= fc.max_per_prompt else None)


def _current_generations(cfg, run_dir: Path) -> tuple[list[dict], int]:
    """The generate stage's current records (`current_traces`: the recipe's prompts under its
    generation settings), and how many others are stored: samples of other sampling settings
    or of prompts no longer in the recipe stay on disk (a change back reuses them) but are not
    graded."""
    RunDir(run_dir).require("generate")
    traces = current_traces(run_dir, cfg.generation_hash())
    gens = list(traces)
    return gens, traces.other


def _read(cfg, run_dir: Path) -> tuple[list[dict], int]:
    if cfg.filter.input:
        from distill.filters.inputs import read_traces
        gens, other = read_traces(cfg.filter.input, cfg.filter.input_split), 0
    else:
        gens, other = _current_generations(cfg, run_dir)
    if other:
        log.info("filter: %d stored traces of other sampling settings or prompts are not graded",
                 other)
    return sorted(gens, key=lambda g: g["id"]), other


def run_filter(cfg, run_dir: Path) -> dict:
    """Grades every generation and keeps the good ones. Returns the counts."""
    fc = cfg.filter
    gens, other = _read(cfg, run_dir)
    rd = RunDir(run_dir)
    out, dataset = rd.filter, rd.dataset
    out.start()
    dataset.start()
    # Dedup and selection look at the whole set, so the stage is rewritten whole.
    for stage in (out, dataset):
        for shard in stage.shards():
            shard.unlink()

    ledger = _Ledger(gens)
    _format_checks(cfg, ledger)
    decontamination = _decontaminate(cfg, ledger) if fc.decontaminate != "none" else None
    verified = _verify(cfg, ledger, run_dir) if fc.verify else None
    if fc.dedup != "none":
        _dedup(cfg, ledger)
    if fc.select != "all" or fc.max_per_prompt is not None:
        _select(cfg, ledger)

    with out.writer() as w_verdict, dataset.writer() as w_data:
        for gen in gens:
            kept = ledger.failed[gen["id"]] is None
            w_verdict.write(FilterVerdict(id=gen["id"], prompt_id=gen.get("prompt_id"), kept=kept,
                                          failed=ledger.failed[gen["id"]],
                                          reasons=ledger.reasons[gen["id"]]))
            if kept:
                w_data.write(_training_record(gen))

    c = counts(gens, ledger.failed, ledger.reasons, decontamination,
               source=fc.input or "generate")
    # counts.json (read by publish into the model card) leaves out the example texts.
    out.write_json("counts.json", {k: v for k, v in c.items() if k != "examples"})
    out.write_json("report.json", c)
    write_text(out.path / "report.md", markdown(c))
    log.info("filter: kept %d of %d", c["kept"], c["total"])
    dataset.complete(records=c["kept"], filter_hash=cfg.section_hash("filter"))
    out.complete(records=len(gens), kept=c["kept"], filter_hash=cfg.section_hash("filter"),
                 verified=verified, not_graded_other_settings=other)
    return c

