"""The filter stage: reads the current generate records (`current_traces`; or the traces of
`filter.input`), writes a FilterVerdict per record to filter/, the kept traces as KeptExample
chat records to dataset/ (Parquet shards in the Hub's layout), and counts.json, report.json and
report.md beside the verdicts.

In bounded memory, in two streaming passes over the traces:
  1. per trace, cheapest first, a trace stopping at its first rejection:
       truncated, think, empty, answer, repetition, length   (format)
       decontaminate                                          (its prompt, against evals/)
       verify                                                 (math-verify / sandboxed tests)
     and a small summary of it: id, prompt id, first failing filter, length, exact key (numpy
     columns, decide.py), its MinHash signature and band hashes (on disk, dedup.py), the
     reasons so far (a spill file in filter/.work/);
  2. the whole-set decisions on the summaries (decide.py): exact duplicates per prompt, then
     (minhash) near-duplicate prompts and traces; select: the shortest correct or at most k
     per prompt;
  3. the traces again, in the same order: each verdict written, each kept trace written.
Memory holds the columns (about 60 bytes a trace), a batch of traces and the benchmark index,
never the traces; a million traces filter in the memory of ten thousand.

Verification keeps its grades in filter/verdicts/ as it goes (verdicts.py): a crashed or
repeated run grades only the rest. A grade the grader failed to give is never kept: the next
run grades it again.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import OrderedDict
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from distill.errors import InputError
from distill.filters import decide, quality
from distill.filters.report import Counts, markdown
from distill.record_types import FilterVerdict, KeptExample
from distill.records import RunDir, current_traces, write_text

log = logging.getLogger("distill.filter")

BATCH = 1024            # traces per step of the first pass
PROMPT_CACHE = 1 << 16  # decontamination results kept per prompt id (samples of a prompt are
                        # read together; a prompt checked twice costs time, not correctness)


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


def _exact_key(gen: dict) -> int:
    """64 bits of the exact-duplicate key: the prompt and the whitespace-normalised trace."""
    from distill.filters.dedup import trace_key
    return int(trace_key(gen)[:16], 16)


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


def _format_checks(cfg) -> list[tuple[str, Callable[[dict], str | None]]]:
    fc = cfg.filter
    bounded = fc.min_tokens is not None or fc.max_tokens is not None
    count = _token_counter(cfg) if bounded else None

    def length(g: dict) -> str | None:
        assert count is not None  # checked only with a bound set
        return quality.length(count(_trace_text(g)), fc.min_tokens, fc.max_tokens)
    checks = [("truncated", quality.truncated, fc.drop_truncated),
              ("think", quality.think, fc.require_think),
              ("empty", quality.empty, True),
              ("answer", quality.final_answer, fc.require_answer),
              ("repetition", quality.repetition, fc.drop_repetition),
              ("length", length, bounded)]
    return [(name, check) for name, check, enabled in checks if enabled]


class _Decontaminator:
    """The recipe's PromptChecker, asked once per prompt id (a bounded cache); keeps the hits."""

    def __init__(self, cfg):
        from distill.grading.decontaminate import PromptChecker
        self.checker = PromptChecker.from_recipe(cfg)
        self.cache: OrderedDict = OrderedDict()
        self.hits: dict[Any, Any] = {}

    def check(self, gen: dict):
        pid = gen.get("prompt_id")
        if pid in self.cache:
            self.cache.move_to_end(pid)
            return self.cache[pid]
        hit = self.checker.check(gen["messages"], gen.get("source"))
        self.cache[pid] = hit
        if len(self.cache) > PROMPT_CACHE:
            self.cache.popitem(last=False)
        if hit:
            self.hits[pid] = hit
        return hit

    def summary(self) -> dict:
        return self.checker.summary(self.hits)


def _pid(gen: dict) -> bytes:
    pid = gen.get("prompt_id")
    return b"" if pid is None else str(pid).encode()


# Per trace, in worker processes: the format checks, decontamination (its benchmark index is
# built before the fork and shared), the length, the exact key and the MinHash signature (of
# every trace that passes them; one verification rejects later is not signed in the file).
# Set up by `_init_worker`.
_WORKER: dict[str, Any] = {}


def _init_worker(cfg) -> None:
    """Sets up the per-trace work in this process; forked workers inherit it. An error (no
    tokenizer for the length bounds) is kept, not raised, so the caller decides."""
    from distill.minhash import Signer
    try:
        _WORKER["checks"] = _format_checks(cfg)
        _WORKER["signer"] = Signer() if cfg.filter.dedup == "minhash" else None
        _WORKER["decon"] = _Decontaminator(cfg) if cfg.filter.decontaminate != "none" else None
    except Exception as e:  # noqa: BLE001  (raised again by _per_trace)
        _WORKER["error"] = e


def _per_trace(batch: list[dict]) -> list[tuple[dict, str | None, int, int, Any, Any]]:
    """(reasons, first failing filter, length, exact key, signature or None, decontamination
    hit or None) per trace: the format checks, then decontamination."""
    out = []
    signer, decon = _WORKER["signer"], _WORKER["decon"]
    for gen in batch:
        reasons: dict[str, str] = {}
        failed = hit = None
        for name, check in _WORKER["checks"]:
            why = check(gen)
            reasons[name] = why or "ok"
            if why:
                failed = name
                break
        if decon is not None and failed is None:
            hit = decon.check(gen)
            reasons["decontaminate"] = hit.reason() if hit else "ok"
            failed = "decontaminate" if hit else None
        text = _trace_text(gen)
        sig = signer.values(text) if signer is not None and failed is None else None
        out.append((reasons, failed, len(text), _exact_key(gen), sig, hit))
    return out


class _FirstPass:
    """Pass 1 (see the module's docstring): the per-trace filters and the summaries. The pure
    per-trace work runs in `filter.workers` processes (forked before anything else starts),
    a bounded window of batches ahead of this process, which decontaminates, verifies and
    writes the summaries in read order."""

    def __init__(self, cfg, run_dir: Path, work: Path):
        fc = cfg.filter
        self.pool = None
        _init_worker(cfg)          # here first: a bad setting (no tokenizer) fails before any fork
        if "error" in _WORKER:
            raise _WORKER.pop("error")
        if fc.workers > 1:
            import multiprocessing as mp
            # forked: the workers inherit the checks and the signer set up just above
            self.pool = mp.get_context("fork").Pool(fc.workers)
        self.window = 2 * fc.workers
        self.decon = _WORKER["decon"]       # its hits are collected here, from every worker
        from distill.filters.verdicts import Grader
        self.grader = Grader(cfg, run_dir, work) if fc.verify else None
        self.cols = decide.Columns()
        self.traces = self.prompts = None
        self.prompt_pids: list = []
        self._signed: OrderedDict = OrderedDict()
        if fc.dedup == "minhash":
            from distill.filters.dedup import SignatureFile
            self.traces = SignatureFile(work / "traces", fc.dedup_threshold)
            self.prompts = SignatureFile(work / "prompts", fc.dedup_threshold)
        self.spill = open(work / "reasons.jsonl", "w", encoding="utf-8")

    def run(self, gens: Iterable[dict]) -> None:
        from collections import deque
        it = iter(gens)
        pending: deque = deque()
        try:
            while True:
                while len(pending) < self.window and (batch := list(islice(it, BATCH))):
                    pending.append((batch, self.pool.apply_async(_per_trace, (batch,))
                                    if self.pool is not None else None))
                if not pending:
                    break
                batch, result = pending.popleft()
                self._batch(batch, result.get() if result is not None else _per_trace(batch))
        finally:
            if self.pool is not None:
                self.pool.terminate()
            self.spill.close()

    def _batch(self, batch: list[dict], per_trace: list) -> None:
        reasons = [r for r, *_ in per_trace]
        failed: list[str | None] = [f for _, f, *_ in per_trace]

        def mark(i: int, name: str, why: str | None) -> None:
            reasons[i][name] = why or "ok"
            if why:
                failed[i] = name
        if self.decon is not None:
            for gen, (*_, hit) in zip(batch, per_trace):
                if hit is not None:
                    self.decon.hits[gen.get("prompt_id")] = hit
        if self.grader is not None:
            alive = [i for i in range(len(batch)) if failed[i] is None]
            for i, (ok, why) in zip(alive, self.grader.grade([batch[i] for i in alive])):
                mark(i, "verify", None if ok else why)
                if ok:
                    reasons[i]["verify"] = why
        sig_rows = [-1] * len(batch)
        if self.traces is not None:
            alive = [i for i in range(len(batch)) if failed[i] is None]
            if alive:
                first = self.traces.count
                self.traces.add(np.stack([per_trace[i][4] for i in alive]))
                for n, i in enumerate(alive):
                    sig_rows[i] = first + n
                self._sign_prompts([batch[i] for i in alive])
        for r in reasons:
            self.spill.write(json.dumps(r, ensure_ascii=False) + "\n")
        self.cols.add(ids=[str(g["id"]).encode() for g in batch], pids=[_pid(g) for g in batch],
                      failed=[decide.CODE[f] if f else 0 for f in failed],
                      length=[x[2] for x in per_trace], key=[x[3] for x in per_trace],
                      sig_row=sig_rows)

    def _sign_prompts(self, gens: list[dict]) -> None:
        from distill.grading.decontaminate import prompt_text
        assert self.prompts is not None
        new = []
        for g in gens:
            pid = _pid(g)
            if pid in self._signed:
                continue
            self._signed[pid] = True
            if len(self._signed) > PROMPT_CACHE:
                self._signed.popitem(last=False)
            new.append((pid, prompt_text(g["messages"])))
        if new:
            self.prompts.add(np.stack([self.prompts.signature(text) for _, text in new]))
            self.prompt_pids.append(np.array([pid for pid, _ in new], dtype=bytes))


def _decide(cfg, first: _FirstPass) -> decide.Frozen:
    fc = cfg.filter
    t = first.cols.freeze()
    decide.mark_repeats(t)
    if fc.dedup != "none":
        decide.exact(t)
    if first.traces is not None and first.prompts is not None:
        pids = np.concatenate(first.prompt_pids) if first.prompt_pids else np.zeros(0, dtype="S1")
        decide.near_prompts(t, first.prompts, pids)
        decide.near_traces(t, first.traces)
    if fc.select != "all" or fc.max_per_prompt is not None:
        decide.select(t, fc.select == "shortest", fc.max_per_prompt)
    return t


def _verdicts(cfg, gens: Iterable[dict], t: decide.Frozen, spill: Path) -> Iterator[tuple[dict, FilterVerdict]]:
    """Pass 3: each trace again, with its verdict (repeated ids left out)."""
    fc = cfg.filter
    with open(spill, encoding="utf-8") as reasons_in:
        for row, (gen, line) in enumerate(zip(gens, reasons_in)):
            if row >= len(t.ids) or t.ids[row] != str(gen["id"]).encode():
                raise RuntimeError("the traces changed while the filter read them (a generate "
                                   "run beside it?); run the filter again")
            code = int(t.failed[row])
            if code == decide.REPEAT:
                continue
            reasons = json.loads(line)
            if t.dedup_seen[row]:
                reasons["dedup"] = decide.reason(t, row, fc.max_per_prompt) \
                    if code == decide.CODE["dedup"] else "ok"
            if code == decide.CODE["select"]:
                reasons["select"] = decide.reason(t, row, fc.max_per_prompt)
            elif t.select_seen[row]:
                reasons["select"] = "ok"
            name = decide.ORDER[code - 1] if code else None
            yield gen, FilterVerdict(id=gen["id"], prompt_id=gen.get("prompt_id"),
                                     kept=code == 0, failed=name, reasons=reasons)


def _source(cfg, run_dir: Path) -> tuple[Callable[[], Iterator[dict]], Callable[[], int], str]:
    """(a fresh iterator over the traces, how many stored traces were passed over, the input's
    name). Both passes read the same traces in the same order."""
    fc = cfg.filter
    if fc.input:
        from distill.filters.inputs import iter_traces
        return (lambda: iter_traces(fc.input, fc.input_split)), (lambda: 0), fc.input
    RunDir(run_dir).require("generate")
    traces = current_traces(run_dir, cfg.generation_hash(), unique=False)
    return traces.__iter__, (lambda: traces.other), "generate"


def run_filter(cfg, run_dir: Path) -> dict:
    """Grades every generation and keeps the good ones. Returns the counts."""
    read, other, name = _source(cfg, run_dir)
    next(read(), None)      # bad input (no file, no split, a bad first row) before anything is removed
    rd = RunDir(run_dir)
    out, dataset = rd.filter, rd.dataset
    out.start()
    dataset.start()
    # Dedup and selection look at the whole set, so the stage is rewritten whole.
    for stage in (out, dataset):
        stage.clear()
    work = out.path / ".work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    first = _FirstPass(cfg, run_dir, work)
    first.run(read())
    if other():
        log.info("filter: %d stored traces of other sampling settings or prompts are not graded",
                 other())
    verified = first.grader.close() if first.grader is not None else None
    t = _decide(cfg, first)
    decontamination = first.decon.summary() if first.decon is not None else None

    c = Counts()
    with out.writer() as w_verdict, dataset.writer() as w_data:
        for gen, verdict in _verdicts(cfg, read(), t, work / "reasons.jsonl"):
            w_verdict.write(verdict)
            if verdict["kept"]:
                w_data.write(_training_record(gen))
            c.add(gen, verdict["failed"], verdict["reasons"])
    shutil.rmtree(work, ignore_errors=True)
    report = c.result(decontamination, source=name)
    # counts.json (read by publish into the model card) leaves out the example texts.
    out.write_json("counts.json", {k: v for k, v in report.items() if k != "examples"})
    out.write_json("report.json", report)
    write_text(out.path / "report.md", markdown(report))
    log.info("filter: kept %d of %d", report["kept"], report["total"])
    dataset.complete(records=report["kept"], filter_hash=cfg.section_hash("filter"))
    out.complete(records=report["total"], kept=report["kept"], filter_hash=cfg.section_hash("filter"),
                 verified=verified, not_graded_other_settings=other())
    from distill.tracking import log_scalars
    log_scalars(cfg, run_dir, {"filter/total": report["total"], "filter/kept": report["kept"],
                               "filter/kept_fraction": report["kept_fraction"],
                               **{f"filter/rejected/{f}": n for f, n in report["rejected"].items()}})
    return report

