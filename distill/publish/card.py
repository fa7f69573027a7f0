"""The model card: reads the recipe, leaderboard rows and filter counts, writes report/README.md.

Metadata goes through huggingface_hub's ModelCardData and EvalResult, so the Hub renders the
model-index and `ModelCard.load` reads it back; the body is written here rather than with a
Jinja template because it is mostly tables built from the rows.
"""

from __future__ import annotations

import json
from pathlib import Path

from distill.config import Recipe
from distill.eval.metrics import Estimate

METHODS = {
    "sft": "supervised fine-tuning on the teacher's verified reasoning traces",
    "logit_kd": "logit distillation (cross-entropy plus KL to the teacher's top-k logprobs) on the "
                "teacher's verified reasoning traces",
    "on_policy": "on-policy distillation (the teacher scoring the student's own samples) on the "
                 "prompts of the teacher's verified traces",
}


def _hub_id(benchmark: str) -> str:
    """The benchmark's Hub dataset id for the model-index; its name for synthetic benchmarks
    (no owner/name id) or when the registry no longer has it."""
    try:
        from distill.eval.benchmark import get_benchmark
        hub = get_benchmark(benchmark).hub
    except Exception:  # a renamed or removed benchmark file must not block the card
        return benchmark
    return hub if hub and "/" in hub else benchmark


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def model_name(cfg: Recipe) -> str:
    return cfg.publish.hub_repo or f"{cfg.run.name}-distilled"


def build_card(cfg: Recipe, rows: list[dict], retention: dict[tuple[str, str, str], Estimate],
               differences: dict[tuple[str, str], Estimate], filter_counts: dict | None):
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    name = model_name(cfg)
    student = [r for r in rows if r["role"] == "student"]
    overall = [r for r in student if "/" not in r["category"]]
    datasets = [s.path or s.name for s in cfg.prompts.sources]
    data = ModelCardData(
        model_name=name,
        base_model=cfg.train.student,
        datasets=datasets,
        license=cfg.publish.license,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["distillation", "reasoning", "code", f"recipe:{cfg.run.name}"],
        eval_results=[
            EvalResult(task_type="text-generation", dataset_type=_hub_id(r["benchmark"]),
                       dataset_name=r["benchmark"], metric_type=r["metric"],
                       metric_name=f"{r['metric']} ({r['category']})",
                       metric_value=round(r["score"], 4))
            for r in overall
        ],
    )
    from distill.eval.runner import sampling_summary

    lines = [
        f"# {name}",
        "",
        f"A dense student (`{cfg.train.student}`) distilled from the teacher `{cfg.teacher.model}`"
        f" by {METHODS[cfg.train.method]}"
        f"{'' if cfg.train.adapter == 'none' else ' with a ' + cfg.train.adapter.upper() + ' adapter'},"
        f" with the recipe `{cfg.run.name}`.",
        "",
        "## Training",
        "",
        f"- Base model: `{cfg.train.student}`",
        f"- Teacher: `{cfg.teacher.model}`",
        f"- Prompts: {', '.join(f'`{d}`' for d in datasets)}",
        f"- Teacher sampling: {cfg.generate.samples_per_prompt} per prompt, temperature "
        f"{cfg.generate.temperature}, top-p {cfg.generate.top_p}",
        f"- Method: {cfg.train.method} (adapter: {cfg.train.adapter}), learning rate {cfg.train.learning_rate}, "
        f"{cfg.train.epochs} epochs, max length {cfg.train.max_length}",
        "",
    ]
    if filter_counts:
        lines += ["### Filtering of the teacher's traces", "", "```json",
                  json.dumps(filter_counts, indent=2, sort_keys=True), "```", ""]
    lines += [
        "## Evaluation",
        "",
        f"Teacher, base student and this model answered the same questions with the same "
        f"sampling: {sampling_summary(cfg)}. pass@1 is the mean over questions of "
        "the mean over samples; 95% intervals are Wilson intervals (with an effective sample "
        "size when there are several samples per question).",
        "",
        "| benchmark | category | metric | teacher | base | this model [95% CI] | n | retention |",
        "|---|---|---|--:|--:|--:|--:|--:|",
    ]
    index = {(r["role"], r["benchmark"], r["category"], r["metric"]): r for r in rows}
    for r in student:
        key = (r["benchmark"], r["category"], r["metric"])
        t, b = index.get(("teacher", *key)), index.get(("base", *key))
        ci = f" [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]" if r["ci_low"] is not None else ""
        ret = "" if r["retention"] is None else f"{r['retention']:.2f}"
        lines.append(f"| {r['benchmark']} | {r['category']} | {r['metric']} | "
                     f"{_pct(t and t['score'])} | {_pct(b and b['score'])} | "
                     f"{_pct(r['score'])}{ci} | {r['n']} | {ret} |")
    if retention:
        lines += ["", "### Retention of the teacher's pass@1, per category", "",
                  "Paired bootstrap over questions, 95% interval.", "",
                  "| benchmark | category | base | this model |", "|---|---|--:|--:|"]
        for bench, cat in sorted({(k[1], k[2]) for k in retention}):
            cells = []
            for role in ("base", "student"):
                est = retention.get((role, bench, cat))
                cells.append(f"{est.value:.2f} [{est.ci_low:.2f}, {est.ci_high:.2f}]" if est else "")
            lines.append(f"| {bench} | {cat} | {cells[0]} | {cells[1]} |")
    if differences:
        lines += ["", "### This model minus the base student (pass@1 points)", "",
                  "An interval that excludes 0 is a difference at the 5% level.", "",
                  "| benchmark | category | difference [95% CI] |", "|---|---|--:|"]
        for (bench, cat), est in sorted(differences.items()):
            lines.append(f"| {bench} | {cat} | {100 * est.value:+.1f} "
                         f"[{100 * est.ci_low:+.1f}, {100 * est.ci_high:+.1f}] |")
    lines += [
        "",
        "## Intended use and limits",
        "",
        "- Intended for research on distillation and for tasks like those of its training "
        "prompts (step-by-step math and short Python functions); it answers as "
        "`<think>reasoning</think>answer`.",
        "- The student inherits its teacher's errors and biases; the traces were filtered for "
        "correctness only where a verifier exists (math answers, code tests).",
        "- Scores on small benchmarks carry wide intervals; compare models by the paired "
        "differences above, not by overlapping intervals alone.",
        "- Generated code must be run in a sandbox.",
        "",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def write_card(card, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    card.save(path)
    return path
