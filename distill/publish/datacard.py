"""The dataset card of the kept traces: reads the recipe and the run's lineage, writes
report/dataset_card.md (the README.md of the dataset repo).

Metadata goes through huggingface_hub's DatasetCardData; `configs` points the Hub (and
`datasets.load_dataset`) at the parquet shards that publish/hub.py writes under data/, the
layout `Dataset.push_to_hub` uses.
"""

from __future__ import annotations

from distill.config import Recipe

FIELDS = [
    ("id", "the trace's stable id: hash(prompt id, sample index, generation-config hash)"),
    ("prompt_id", "hash(source, prompt): the same prompt has the same id in every run"),
    ("source", "the recipe's prompt source"),
    ("category", "reasoning or coding (the source's category)"),
    ("messages", "the chat: the prompt, then the teacher's answer as `<think>reasoning</think>answer`"),
    ("teacher", "the teacher model that wrote the answer"),
    ("answer", "the gold answer the trace was verified against (math), if any"),
    ("tests", "the tests the trace's code passed in the sandbox (coding), if any"),
]


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "10M<n<100M"


def build_dataset_card(cfg: Recipe, lineage: dict, license: str | None, repo_id: str | None):
    from huggingface_hub import DatasetCard, DatasetCardData

    counts = lineage.get("filter_counts") or {}
    kept = int(lineage.get("kept") or counts.get("kept") or 0)
    g = cfg.generate
    gen = lineage.get("generate") or {}
    hub_sources = [s.path for s in cfg.prompts.sources if s.kind == "hf" and s.path]
    data = DatasetCardData(
        pretty_name=f"{cfg.run.name}: verified traces of {cfg.teacher.model}",
        license=license,
        task_categories=["text-generation"],
        tags=["distillation", "reasoning", "code", "synthetic", f"recipe:{cfg.run.name}"]
        + (["rehearsal", "not-for-use"] if cfg.run.rehearsal else []),
        size_categories=[_size_category(kept)],
        source_datasets=hub_sources or None,
        configs=[{"config_name": "default",
                  "data_files": [{"split": "train", "path": "data/train-*"}]}],
    )
    name = repo_id or f"{cfg.run.name}-traces"
    from distill.publish.card import REHEARSAL_BANNER
    lines = [
        f"# {name}",
        "",
        *([REHEARSAL_BANNER.replace("a model", "a dataset").replace("measures a model", "is a real trace"), ""]
          if cfg.run.rehearsal else []),
        f"{kept} reasoning traces written by `{cfg.teacher.model}` and kept after verification, "
        f"quality checks and deduplication, to distil into `{cfg.train.student}` with the recipe "
        f"`{cfg.run.name}`.",
        "",
        "```python",
        "from datasets import load_dataset",
        f"ds = load_dataset(\"{name}\", split=\"train\")",
        "```",
        "",
        "## How the traces were made",
        "",
        f"- Teacher: `{cfg.teacher.model}`, revision "
        + (f"`{cfg.teacher.revision}`" if cfg.teacher.revision else "not pinned (the endpoint's model)"),
        f"- Sampling: {g.samples_per_prompt} sample(s) per prompt, temperature {g.temperature}, "
        f"top-p {g.top_p}, at most {g.max_tokens} tokens"
        + (f"; {gen.get('samples')} samples, {gen.get('completion_tokens') or 0:,} completion "
           f"tokens, ${float(gen.get('cost') or 0):.2f}" if gen else ""),
        f"- License: {license or 'not known: set publish.dataset_license'}"
        + (" (from publish.dataset_license)" if cfg.publish.dataset_license
           else " (the teacher's: the traces are its outputs)" if license else ""),
        f"- Code: {lineage.get('code_version', 'unknown')}",
        "",
        "| prompt source | kind | dataset | revision | rows read |",
        "|---|---|---|---|--:|",
    ]
    revisions, read = lineage.get("revisions") or {}, lineage.get("prompts") or {}
    for src in cfg.prompts.sources:
        lines.append(f"| {src.name} | {src.kind} | {src.path or src.family or ''} | "
                     f"{revisions.get(src.name) or ''} | {read.get(src.name, '')} |")
    lines += ["", "## Filtering", ""]
    if counts:
        lines += [f"Kept {counts.get('kept')} of {counts.get('total')} traces. Filters run "
                  "cheapest first; a trace is counted under the first filter that rejected it.", "",
                  "| filter | rejected |", "|---|--:|"]
        lines += [f"| {k} | {v} |" for k, v in (counts.get("rejected") or {}).items()] \
            or ["| (none) | 0 |"]
        for key in ("by_source", "by_category"):
            lines += ["", f"| {key[3:]} | kept | total |", "|---|--:|--:|"]
            lines += [f"| {k} | {v['kept']} | {v['total']} |"
                      for k, v in (counts.get(key) or {}).items()]
    else:
        lines.append("No filter counts were recorded.")
    lines += ["", "## Fields", "", "| field | meaning |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in FIELDS]
    lines += [
        "",
        "## Intended use and limits",
        "",
        "- For distilling reasoning into smaller models and for research on distillation.",
        "- Correctness was checked only where a verifier exists (math answers with math-verify, "
        "code with its tests in a sandbox); the reasoning itself was not checked.",
        "- The traces carry the teacher's errors and biases; the teacher's license and terms of "
        "use apply to them.",
        "",
    ]
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
