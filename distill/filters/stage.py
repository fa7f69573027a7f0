"""The filter stage: reads Stage("generate") records, writes a verdict per record to
Stage("filter"), the kept traces as chat records to Stage("dataset"), and counts.json plus
report.md beside the verdicts.

Filters run cheapest first and stop at the first rejection: truncated, think, empty, verify
(math-verify / sandboxed tests), dedup (exact, per prompt), max_per_prompt.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from distill.filters import quality
from distill.filters.dedup import duplicates
from distill.filters.verify import verify_many
from distill.records import Stage, write_text

EXAMPLES_PER_REASON = 3


def _training_record(gen: dict) -> dict:
    prompt = [m for m in gen["messages"] if m["role"] != "assistant"]
    text = f"<think>{gen.get('reasoning') or ''}</think>{gen.get('content') or ''}"
    rec = {"id": gen["id"], "prompt_id": gen.get("prompt_id"), "source": gen.get("source"),
           "category": gen.get("category"),
           "messages": prompt + [{"role": "assistant", "content": text}]}
    if gen.get("teacher_logprobs"):  # for logit distillation (train.method: logit_kd)
        rec["teacher_logprobs"] = gen["teacher_logprobs"]
    return rec


def run_filter(cfg, run_dir: Path) -> dict:
    """Grades every generation and keeps the good ones. Returns the counts."""
    fc = cfg.filter
    out, dataset = Stage(run_dir, "filter"), Stage(run_dir, "dataset")
    out.start()
    dataset.start()
    # Dedup and max_per_prompt look at the whole set, so the stage is rewritten whole.
    for stage in (out, dataset):
        for shard in stage.shards():
            shard.unlink()
    gens = sorted(Stage(run_dir, "generate").read(), key=lambda g: g["id"])

    checks = [("truncated", quality.truncated, fc.drop_truncated),
              ("think", quality.think, fc.require_think),
              ("empty", quality.empty, True)]
    reasons: dict[str, dict[str, str]] = {g["id"]: {} for g in gens}
    failed: dict[str, str | None] = {g["id"]: None for g in gens}
    for gen in gens:
        for name, check, enabled in checks:
            if enabled:
                why = check(gen)
                reasons[gen["id"]][name] = why or "ok"
                if why:
                    failed[gen["id"]] = name
                    break

    if fc.verify:
        todo = [g for g in gens if failed[g["id"]] is None]
        verdicts = verify_many([(g, g.get("content") or "") for g in todo], workers=fc.workers,
                               timeout_s=fc.code_timeout_s, memory_mb=fc.code_memory_mb)
        for gen, v in zip(todo, verdicts):
            reasons[gen["id"]]["verify"] = v.reason
            if not v.ok:
                failed[gen["id"]] = "verify"

    alive = [g for g in gens if failed[g["id"]] is None]
    if fc.dedup == "exact":
        dups = duplicates(alive)
        for gen in alive:
            dup_of = dups.get(gen["id"])
            reasons[gen["id"]]["dedup"] = f"duplicate of {dup_of}" if dup_of else "ok"
            if dup_of:
                failed[gen["id"]] = "dedup"
        alive = [g for g in alive if failed[g["id"]] is None]
    if fc.max_per_prompt is not None:
        seen: Counter = Counter()
        for gen in alive:   # in id order: the same samples survive on every run
            seen[gen.get("prompt_id")] += 1
            over = seen[gen.get("prompt_id")] > fc.max_per_prompt
            reasons[gen["id"]]["max_per_prompt"] = \
                f"over {fc.max_per_prompt} per prompt" if over else "ok"
            if over:
                failed[gen["id"]] = "max_per_prompt"

    with out.writer() as w_verdict, dataset.writer() as w_data:
        for gen in gens:
            kept = failed[gen["id"]] is None
            w_verdict.write({"id": gen["id"], "prompt_id": gen.get("prompt_id"), "kept": kept,
                             "failed": failed[gen["id"]], "reasons": reasons[gen["id"]]})
            if kept:
                w_data.write(_training_record(gen))

    counts = _counts(gens, failed, reasons)
    out.write_json("counts.json", counts)
    write_text(out.path / "report.md", _report(counts))
    dataset.complete(records=counts["kept"], filter_hash=cfg.section_hash("filter"))
    out.complete(records=len(gens), kept=counts["kept"], filter_hash=cfg.section_hash("filter"))
    return counts


def _counts(gens: list[dict], failed: dict, reasons: dict) -> dict:
    rejected: Counter = Counter()
    by: dict[str, dict] = {"source": defaultdict(lambda: {"total": 0, "kept": 0}),
                           "category": defaultdict(lambda: {"total": 0, "kept": 0})}
    examples: dict[str, list] = defaultdict(list)
    for gen in gens:
        f = failed[gen["id"]]
        for key in ("source", "category"):
            slot = by[key][str(gen.get(key))]
            slot["total"] += 1
            slot["kept"] += f is None
        if f is not None:
            rejected[f] += 1
            if len(examples[f]) < EXAMPLES_PER_REASON:
                examples[f].append({"id": gen["id"], "prompt_id": gen.get("prompt_id"),
                                    "reason": reasons[gen["id"]][f]})
    kept = sum(1 for g in gens if failed[g["id"]] is None)
    return {"total": len(gens), "kept": kept, "rejected": dict(rejected),
            "by_source": dict(by["source"]), "by_category": dict(by["category"]),
            "examples": dict(examples)}


def _report(c: dict) -> str:
    lines = ["# Filter report", "", f"Kept {c['kept']} of {c['total']} generations.", "",
             "| filter | rejected |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in c["rejected"].items()]
    for key in ("by_source", "by_category"):
        lines += ["", f"| {key[3:]} | kept | total |", "|---|---|---|"]
        lines += [f"| {k} | {v['kept']} | {v['total']} |" for k, v in c[key].items()]
    lines += ["", "## Example rejections", ""]
    for f, exs in c["examples"].items():
        lines += [f"- **{f}** `{e['id']}`: {e['reason']}" for e in exs]
    return "\n".join(lines) + "\n"
