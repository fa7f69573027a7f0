"""Prompts stage: reads the recipe's sources (toy tasks, a Hub dataset or a local JSONL) and
writes one problem record per prompt to `<run_dir>/prompts/`.

A record's id is hash(source, the messages sent: prompt template and system prompt applied), so
the same prompt is the same record in every run, a refresh with new rows only adds records, and
a new template makes new records (and so new generations). Records of a source whose template,
system prompt or field mapping changed, or of a source no longer in the recipe, are dropped
from the stage: downstream stages only ever see the recipe's current prompts.

The manifest records each source's revision (the Hub commit of a dataset, a content hash of a
local file or folder, the settings of toy tasks): a refresh re-reads only the sources whose
revision or settings changed, and a Hub dataset is read at the commit that was recorded, so the
prompts on disk always name the rows they came from.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Iterator

from distill.config import PromptSource, Recipe
from distill.errors import InputError
from distill.records import RunDir, record_id

log = logging.getLogger(__name__)


def _toy_rows(src: PromptSource, seed: int) -> Iterator[dict]:
    from distill.toy.tasks import make_tasks
    try:
        tasks = make_tasks(src.family or "", src.count, seed=seed, split="train")
    except KeyError as e:
        raise InputError(str(e).strip("'\""), key=f"prompts.sources.{src.name}.family") from None
    for t in tasks:
        yield {"prompt": t["messages"][-1]["content"], "answer": t["answer"], "tests": t["tests"],
               "entry_point": t.get("entry_point"), "subcategory": t["subcategory"],
               "verifier": t["verifier"]}


def _jsonl_rows(src: PromptSource) -> Iterator[dict]:
    path = Path(src.path or "")
    if not path.is_file():
        raise InputError("prompt file not found", file=str(path), key=f"prompts.sources.{src.name}.path")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield _map_row(src, json.loads(line), file=str(path), line=n)
                except json.JSONDecodeError as e:
                    raise InputError(f"not valid JSON ({e.msg})", file=str(path), line=n) from None


def _hf_rows(src: PromptSource, revision: str | None) -> Iterator[dict]:
    import datasets
    local = Path(src.path or "").exists()  # a local dataset folder has no Hub revision
    ds = datasets.load_dataset(src.path, src.config_name, split=src.split,
                               revision=None if local else (src.revision or revision))
    for n, row in enumerate(ds):
        yield _map_row(src, row, file=f"hf://{src.path}", line=n + 1)


def _map_row(src: PromptSource, row: dict, file: str, line: int) -> dict:
    def field(name: str | None) -> object:
        if name is None:
            return None
        if name not in row:
            raise InputError(f"row has no field {name!r} (fields: {sorted(row)})", file=file,
                             line=line, key=f"prompts.sources.{src.name}")
        return row[name]

    prompt = str(field(src.prompt_field))
    answer, tests = field(src.answer_field), field(src.tests_field)
    if isinstance(tests, list):
        tests = "\n".join(tests)
    return {"prompt": prompt,
            "answer": None if answer is None else str(answer),
            "tests": tests, "entry_point": field(src.entry_point_field), "subcategory": None,
            "verifier": "code" if tests else ("math" if answer is not None else "none")}


def _rows(src: PromptSource, seed: int, revision: str | None) -> Iterator[dict]:
    if src.kind == "toy":
        yield from _toy_rows(src, seed)
    elif src.kind == "jsonl":
        yield from _jsonl_rows(src)
    else:
        yield from _hf_rows(src, revision)


def _content_hash(path: Path) -> str:
    """sha256 over a file, or over every file of a folder with its relative path."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path) if f != path else f.name).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def source_revision(src: PromptSource, seed: int) -> str | None:
    """What names the rows a source yields now: the commit of a Hub dataset (None when the Hub
    cannot be asked: the source is then read again), a content hash of a local file or dataset
    folder, the generator settings of toy tasks."""
    if src.kind == "toy":
        return "toy-" + record_id(src.family, src.count, seed)
    path = Path(src.path or "")
    if path.exists():
        return "sha256-" + _content_hash(path)
    if src.kind == "jsonl":
        return None  # _jsonl_rows names the missing file
    try:
        from huggingface_hub import HfApi
        return HfApi().dataset_info(src.path, revision=src.revision, timeout=30).sha
    except Exception as e:  # offline, or a gated dataset without a token: read it as before
        log.warning("prompts: cannot resolve the revision of %s (%s); reading it again",
                    src.path, str(e).splitlines()[0] if str(e) else type(e).__name__)
        return None


def _settings(src: PromptSource, cfg: Recipe, exclude: set[str] | None = None) -> str:
    """A source's settings that change which prompt records it makes. Without `count` and
    `revision` (how many rows, from which commit), its shape: what decides the text of its
    records, so that a record of another shape is out of date."""
    return record_id(src.model_dump(mode="json", exclude=exclude), cfg.prompts.system_prompt,
                     cfg.run.seed)


def _drop_stale(stage, shapes: dict[str, str]) -> tuple[int, set[str]]:
    """Rewrites the stage without the records whose shape is not their source's current one;
    returns how many went and the ids of those kept. The kept records go to a fresh shard
    before the old shards are removed, so a crash in between leaves duplicates (read once) and
    never loses a current record."""
    records = list(stage.read())            # prompt records are small
    keep = [r for r in records if r.get("shape") == shapes.get(r.get("source"))]
    if len(keep) < len(records):
        old = stage.shards()
        with stage.writer() as w:
            for r in keep:
                w.write(r)
        for shard in old:
            shard.unlink()
    return len(records) - len(keep), {r["id"] for r in keep}


def run_prompts(cfg: Recipe, run_dir: Path) -> dict:
    stage = RunDir(run_dir).stage("prompts")
    before = stage.manifest() or {}
    stage.start()
    shapes = {src.name: _settings(src, cfg, exclude={"count", "revision"})
              for src in cfg.prompts.sources}
    dropped, done = _drop_stale(stage, shapes)
    if dropped:
        log.info("prompts: dropped %d records of changed or removed sources", dropped)
    counts: dict[str, int] = {}
    revisions: dict[str, str | None] = {}
    settings: dict[str, str] = {}
    new: dict[str, int] = {}
    with stage.writer() as w:
        for src in cfg.prompts.sources:
            rev = revisions[src.name] = source_revision(src, cfg.run.seed)
            key = settings[src.name] = _settings(src, cfg)
            if rev is not None and (before.get("revisions") or {}).get(src.name) == rev \
                    and (before.get("settings") or {}).get(src.name) == key:
                # Same rows, same settings: nothing can be new, so the source is not read.
                counts[src.name], new[src.name] = before["sources"][src.name], 0
                continue
            n = added = 0
            for row in _rows(src, cfg.run.seed, rev):
                if src.count is not None and n >= src.count:
                    break
                n += 1
                messages = [{"role": "user", "content": src.prompt_template.format(prompt=row["prompt"])}]
                if cfg.prompts.system_prompt:
                    messages.insert(0, {"role": "system", "content": cfg.prompts.system_prompt})
                rid = record_id(src.name, messages)
                if rid in done:
                    continue
                done.add(rid)
                w.write({"id": rid, "source": src.name, "shape": shapes[src.name],
                         "category": src.category,
                         "subcategory": row["subcategory"], "messages": messages,
                         "verifier": row["verifier"], "answer": row["answer"],
                         "tests": row["tests"], "entry_point": row["entry_point"],
                         "source_revision": rev})
                added += 1
            counts[src.name], new[src.name] = n, added
    stage.complete(sources=counts, revisions=revisions, settings=settings, new=new,
                   new_prompts=sum(new.values()), dropped=dropped)
    return counts
