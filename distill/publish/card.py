"""The model card: reads the recipe, leaderboard rows and the run's lineage (publish/lineage.py),
writes report/README.md (and the adapter's card when an adapter is pushed on its own).

Metadata goes through huggingface_hub's ModelCardData and EvalResult, so the Hub renders the
model-index and `ModelCard.load` reads it back; the body is written here rather than with a
Jinja template because it is mostly tables built from the rows.
"""

from __future__ import annotations

import json
from pathlib import Path

from distill.config import Recipe
from distill.eval.metrics import Estimate
from distill.models import is_toy
from distill.publish.leaderboard import pct

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
        from distill.grading.benchmarks import get_benchmark
        hub = get_benchmark(benchmark).hub
    except Exception:  # a renamed or removed benchmark file must not block the card
        return benchmark
    return hub if hub and "/" in hub else benchmark


REHEARSAL_BANNER = (
    "> **A rehearsal, not a model.** This run is `distill rehearse` of the recipe: the student is "
    "a tiny random-init stand-in with the real architecture and tokenizer, the teacher a "
    "dry-run endpoint, the data a few rows. Every number below checks the pipeline, none "
    "measures a model. It is never pushed to the Hub.")


def report_title(cfg: Recipe) -> str:
    """The title of every report page of a run; a rehearsal says it is one."""
    title = f"{cfg.run.name}: {cfg.teacher.model} -> {cfg.train.student}"
    return f"REHEARSAL (stand-ins, not results) - {title}" if cfg.run.rehearsal else title


def model_name(cfg: Recipe) -> str:
    return cfg.publish.hub_repo or f"{cfg.run.name}-distilled"


def dataset_repo(cfg: Recipe) -> str | None:
    """Where the kept traces go: publish.dataset_repo, else <hub_repo>-traces."""
    p = cfg.publish
    return p.dataset_repo or (f"{p.hub_repo}-traces" if p.hub_repo else None)


def _hub_datasets(cfg: Recipe) -> list[str]:
    """The Hub ids of the data: the pushed traces first, then the prompt sources that are Hub
    datasets (local files and toy tasks have no id the Hub could link)."""
    ids = [dataset_repo(cfg)] + [s.path for s in cfg.prompts.sources if s.kind == "hf"]
    return [i for i in dict.fromkeys(ids) if i and "/" in i and not i.startswith(("/", "."))]


def _lineage_lines(cfg: Recipe, lineage: dict, license: str | None) -> list[str]:
    t, g = cfg.train, lineage.get("generate") or {}
    trained = lineage.get("train") or {}
    lines = [
        "## Lineage",
        "",
        f"- Base model: `{t.student}`" + (f" at revision `{t.revision}`" if t.revision else ""),
        f"- Teacher: `{cfg.teacher.model}`, revision "
        + (f"`{cfg.teacher.revision}`" if cfg.teacher.revision else "not pinned (the endpoint's model)"),
        f"- Recipe: `{cfg.run.name}` (recipe hash `{cfg.section_hash(*type(cfg).model_fields)}`; "
        "the resolved recipe is below and in `distill_recipe.yaml`)",
        f"- Code: {lineage.get('code_version', 'unknown')}",
        f"- License: {license or 'not known: the base model card names none; set publish.license'}"
        + (" (from publish.license)" if cfg.publish.license else " (inherited from the base model)"
           if license else ""),
    ]
    repo = dataset_repo(cfg)
    kept = lineage.get("kept")
    lines.append(f"- Training data: {kept if kept is not None else 'the'} kept teacher traces"
                 + (f", published with their dataset card as [`{repo}`](https://huggingface.co/datasets/{repo})"
                    if repo else ""))
    revisions = lineage.get("revisions") or {}
    for src in cfg.prompts.sources:
        n = (lineage.get("prompts") or {}).get(src.name)
        rev = revisions.get(src.name)
        lines.append(f"  - prompts `{src.name}`: {src.kind} `{src.path or src.family}`"
                     + (f" (split {src.split})" if src.kind == "hf" else "")
                     + (f", revision `{rev}`" if rev else "") + (f", {n} rows read" if n is not None else ""))
    if g:
        lines.append(f"- Teacher traces: {g.get('samples')} samples for {g.get('prompts')} prompts, "
                     f"{g.get('completion_tokens') or 0:,} completion tokens, "
                     f"${float(g.get('cost') or 0):.2f} at the recipe's prices")
    if trained:
        secs = trained.get("train_seconds")
        lines.append(f"- Training: {trained.get('method', t.method)} on {trained.get('records')} "
                     f"traces" + (f", {secs / 60:.1f} min" if secs else "")
                     + (f", final loss {trained['train_loss']:.4f}" if trained.get("train_loss") is not None else ""))
    pos = trained.get("positions") or {}
    if pos.get("trained") and pos.get("model") and pos["trained"] != pos["model"]:
        lines.append(f"- Positions: max_position_embeddings raised from {pos['model']:,} to {pos['trained']:,} ("
                     + (f"train.rope_scaling {pos['rope_scaling']}" if pos.get("rope_scaling")
                        else "train.max_position_embeddings")
                     + f"); trained on sequences of up to {t.max_length:,} tokens")
    return lines + [""]


def build_card(cfg: Recipe, rows: list[dict], retention: dict[tuple[str, str, str], Estimate],
               differences: dict[tuple[str, str], Estimate], lineage: dict,
               license: str | None = None, edge: list[dict] | None = None):
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from distill.config import dump_recipe

    name = model_name(cfg)
    filter_counts = lineage.get("filter_counts")
    student = [r for r in rows if r["role"] == "student"]
    overall = [r for r in student if "/" not in r["category"]]
    rehearsal = cfg.run.rehearsal
    data = ModelCardData(
        model_name=name,
        # A rehearsal's stand-in must never be listed on the Hub as a fine-tune of the base.
        base_model=cfg.train.student if not (is_toy(cfg.train.student) or rehearsal) else None,
        datasets=_hub_datasets(cfg) or None,
        license=license,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["distillation", "reasoning", "code", f"recipe:{cfg.run.name}",
              f"teacher:{cfg.teacher.model}"] + (["rehearsal", "not-for-use"] if rehearsal else []),
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
        *([REHEARSAL_BANNER, ""] if rehearsal else []),
        f"A dense student (`{cfg.train.student}`) distilled from the teacher `{cfg.teacher.model}`"
        f" by {METHODS[cfg.train.method]}"
        f"{'' if cfg.train.adapter == 'none' else ' with a ' + cfg.train.adapter.upper() + ' adapter'},"
        f" with the recipe `{cfg.run.name}`.",
        "",
        "## Training",
        "",
        f"- Teacher sampling: {cfg.generate.samples_per_prompt} per prompt, temperature "
        f"{cfg.generate.temperature}, top-p {cfg.generate.top_p}",
        f"- Method: {cfg.train.method} (adapter: {cfg.train.adapter}), learning rate {cfg.train.learning_rate}, "
        f"{cfg.train.epochs} epochs, max length {cfg.train.max_length}",
        "",
    ]
    lines += _lineage_lines(cfg, lineage, license)
    if filter_counts:  # the filter stage's counts as it wrote them; its report has examples
        lines += ["### Filtering of the teacher's traces", "",
                  f"Kept {filter_counts.get('kept')} of {filter_counts.get('total')} traces.", "",
                  "| filter | rejected |", "|---|--:|"]
        lines += [f"| {k} | {v} |" for k, v in (filter_counts.get("rejected") or {}).items()] \
            or ["| (none) | 0 |"]
        lines += ["", "All counts (per filter, source and category):", "", "```json",
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
        ci = f" [{pct(r['ci_low'])}, {pct(r['ci_high'])}]" if r["ci_low"] is not None else ""
        ret = "" if r["retention"] is None else f"{r['retention']:.2f}"
        lines.append(f"| {r['benchmark']} | {r['category']} | {r['metric']} | "
                     f"{pct(t and t['score'])} | {pct(b and b['score'])} | "
                     f"{pct(r['score'])}{ci} | {r['n']} | {ret} |")
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
    if edge:
        lines += ["", *quantization_lines(cfg, edge)]
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
        "## Recipe",
        "",
        "<details><summary>The resolved recipe</summary>",
        "",
        "```yaml",
        dump_recipe(cfg).rstrip(),
        "```",
        "",
        "</details>",
        "",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def gguf_repo(cfg: Recipe) -> str:
    """Where the GGUF files go: the model repo, or `<model repo>-GGUF` (quantize.gguf_repo)."""
    return model_name(cfg) + ("-GGUF" if cfg.quantize.gguf_repo == "separate" else "")


def quantization_lines(cfg: Recipe, edge: list[dict]) -> list[str]:
    """The card's quantization table: each variant's size, memory, CPU speed and what it kept."""
    from distill.publish.edge import NOTE, to_markdown
    files = sorted({e["model"] for e in edge if e["format"] == "gguf"})
    lines = ["## Quantized variants", "",
             "Exported and scored on every benchmark with the same sampling as above; the chat "
             "template, the end-of-turn token and `<think>` were checked to survive the export.",
             "", to_markdown(edge), "", NOTE, ""]
    if files:
        repo = gguf_repo(cfg)
        example = next((e["model"] for e in edge if e.get("qtype") == "q4_k_m"), files[0])
        tag = example.rsplit("-", 1)[-1]
        lines += [f"The GGUF files are in [`{repo}`](https://huggingface.co/{repo}):", "",
                  "```sh", f"llama-server -hf {repo}:{tag}", f"ollama run hf.co/{repo}:{tag}",
                  "```", ""]
    return lines


def build_gguf_card(cfg: Recipe, edge: list[dict], license: str | None):
    """The card of a separate -GGUF repo: the files, how to run them, what each kept."""
    from huggingface_hub import ModelCard, ModelCardData
    name = model_name(cfg)
    data = ModelCardData(base_model=name if not cfg.run.rehearsal else None, license=license,
                         library_name="gguf", pipeline_tag="text-generation",
                         tags=["gguf", "distillation", f"recipe:{cfg.run.name}"])
    lines = [f"# {gguf_repo(cfg)}", "", f"GGUF files of [`{name}`](https://huggingface.co/{name}), "
             "written by llama.cpp's converter and quantizer.", "", *quantization_lines(cfg, edge)]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def build_adapter_card(cfg: Recipe, license: str | None, model_repo: str | None):
    """The card of the adapter on its own: PEFT metadata, the base it applies to, and where
    the merged model and its evaluation are."""
    from huggingface_hub import ModelCard, ModelCardData
    t = cfg.train
    data = ModelCardData(base_model=t.student if not is_toy(t.student) else None,
                         library_name="peft", license=license, pipeline_tag="text-generation",
                         tags=["distillation", t.adapter, f"recipe:{cfg.run.name}"],
                         datasets=_hub_datasets(cfg) or None)
    lines = [f"# {cfg.publish.adapter_repo or model_name(cfg) + '-adapter'}", "",
             f"A {t.adapter.upper()} adapter (r={t.lora.r}, alpha={t.lora.alpha}) for `{t.student}`, "
             f"distilled from `{cfg.teacher.model}` with the recipe `{cfg.run.name}`.", ""]
    if model_repo:
        lines += [f"The merged model, with its evaluation, is [`{model_repo}`](https://huggingface.co/{model_repo}).", ""]
    lines += ["```python", "from peft import AutoPeftModelForCausalLM",
              f"model = AutoPeftModelForCausalLM.from_pretrained(\"{cfg.publish.adapter_repo}\")", "```", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def write_card(card, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    card.save(path)
    return path
