"""Prompts stage: reads the recipe's sources (toy tasks, a Hub dataset or a local JSONL) and
writes one problem record per prompt to `<run_dir>/prompts/`.

A source keeps the rows its `where` selects (a column equal to a value, or one of a list) and
renders each with its `prompt_template`, which may name any column of the row. A row whose
gold answer cannot be checked (empty, "proof", "notfound", or nothing math-verify parses) is
skipped before the teacher is paid for it, and counted per source and reason in the manifest.

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

import contextlib
import hashlib
import logging
import re
import string
from collections import Counter
from pathlib import Path
from typing import Iterator

from distill.config import PromptSource, Recipe
from distill.errors import InputError
from distill.jsonl import numbered_rows
from distill.record_types import Message, Prompt
from distill.records import RunDir, record_id

log = logging.getLogger(__name__)

# Rows whose gold is parsed together in the verifier's worker processes.
GOLD_BATCH = 256

# A row as read, and where it was read (file and line, for error messages).
Row = tuple[dict, dict]


def _toy_rows(src: PromptSource, seed: int) -> Iterator[Row]:
    from distill.toy.tasks import make_tasks
    try:
        tasks = make_tasks(src.family or "", src.count, seed=seed, split="train")
    except KeyError as e:
        raise InputError(str(e).strip("'\""), key=f"prompts.sources.{src.name}.family") from None
    for t in tasks:
        yield {"prompt": t["messages"][-1]["content"], "answer": t["answer"], "tests": t["tests"],
               "entry_point": t.get("entry_point"), "subcategory": t["subcategory"],
               "verifier": t["verifier"]}, {}


def _jsonl_rows(src: PromptSource) -> Iterator[Row]:
    path = Path(src.path or "")
    if not path.is_file():
        raise InputError("prompt file not found", file=str(path), key=f"prompts.sources.{src.name}.path")
    for n, row in numbered_rows(path):
        yield row, {"file": str(path), "line": n}


def _hf_rows(src: PromptSource, revision: str | None) -> Iterator[Row]:
    import datasets

    from distill.grading.benchmarks import DataNotOnHand, hub_access
    local = Path(src.path or "").exists()  # a local dataset folder has no Hub revision
    try:
        with contextlib.nullcontext() if local else hub_access(src.path or ""):
            ds = datasets.load_dataset(src.path, src.config_name, split=src.split,
                                       revision=None if local else (src.revision or revision))
    except DataNotOnHand as e:
        raise InputError(f"{e.message}: point it at a local copy of the dataset repo (a "
                         "folder), or use kind: jsonl with a local file"
                         + (f", or {e.remedy}" if e.remedy else ""),
                         key=f"prompts.sources.{src.name}.path") from None
    for n, row in enumerate(ds):
        yield row, {"file": f"hf://{src.path}", "line": n + 1}


def _map_row(src: PromptSource, row: dict, file: str, line: int) -> dict:
    def field(name: str | None) -> object:
        if name is None:
            return None
        if name not in row:
            raise InputError(f"row has no field {name!r} (fields: {sorted(row)})", file=file,
                             line=line, key=f"prompts.sources.{src.name}")
        return row[name]

    prompt = str(field(src.prompt_field))
    answer = field(src.answer_field)
    # One column of tests, or several joined in order (MBPP's test_setup_code or test_imports
    # before its test_list); a list column is one test per line.
    names = [src.tests_field] if isinstance(src.tests_field, str) else list(src.tests_field or [])
    texts = ["\n".join(map(str, p)) if isinstance(p, list) else str(p or "") for p in map(field, names)]
    tests = "\n".join(t for t in texts if t.strip()) or None
    return {"prompt": prompt,
            "answer": None if answer is None else str(answer),
            "tests": tests, "entry_point": field(src.entry_point_field), "subcategory": None,
            "verifier": "code" if tests else ("math" if answer is not None else "none")}


def _rows(src: PromptSource, seed: int, revision: str | None) -> Iterator[Row]:
    if src.kind == "toy":
        yield from _toy_rows(src, seed)
    elif src.kind == "jsonl":
        yield from _jsonl_rows(src)
    else:
        yield from _hf_rows(src, revision)


def _selected(src: PromptSource, row: dict, at: dict) -> bool:
    """Whether the row passes the source's `where`: each column equals the value given, or is
    one of a list of values."""
    for column, wanted in src.where.items():
        if column not in row:
            raise InputError(f"the row has no column {column!r} (columns: {', '.join(sorted(row))})",
                             key=f"prompts.sources.{src.name}.where.{column}", **at)
        if row[column] not in (wanted if isinstance(wanted, list) else [wanted]):
            return False
    return True


def _as_text(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return "\n".join(_as_text(v) for v in value)
    return "" if value is None else str(value)


def _render(src: PromptSource, prompt: str, row: dict, at: dict) -> str:
    """The user turn: `prompt_template` with {prompt} (the prompt field) and {<column>} for any
    column of the row (a list joined by newlines, so MBPP's `test_list` reads as its asserts).
    Doubled braces are literal, as in str.format."""
    key = f"prompts.sources.{src.name}.prompt_template"
    try:
        names = {re.split(r"[.\[]", name, maxsplit=1)[0]
                 for _, name, _, _ in string.Formatter().parse(src.prompt_template) if name}
        missing = sorted(names - set(row) - {"prompt"})
        if missing:
            raise InputError(f"the template names {{{missing[0]}}}, which the row does not have "
                             f"(columns: {', '.join(sorted(row))})", key=key, **at)
        values = {name: _as_text(row[name]) for name in names if name != "prompt"}
        return src.prompt_template.format(**values, prompt=prompt)
    except (ValueError, IndexError, KeyError, AttributeError) as e:
        raise InputError(f"the template does not format: {type(e).__name__}: {e}", key=key,
                         **at) from None


def _prompts(src: PromptSource, cfg: Recipe, revision: str | None, done: set[str],
             excluded: Counter, skipped: Counter) -> Iterator[tuple[str, list[Message], dict]]:
    """(id, messages, problem) for the source's rows, in order, that its `where` keeps and
    whose gold answer can be checked; counts the others. Golds are parsed in batches in the
    verifier's killable worker processes (math-verify can hang), never more rows past
    `count` than one batch; rows already on record passed the check when they were written."""
    from distill.grading.verify import check_golds

    yielded = 0
    batch: list[tuple[str, list[Message], dict]] = []

    def flush() -> Iterator[tuple[str, list[Message], dict]]:
        nonlocal yielded
        # The toy tasks' golds are integers their generator wrote: no worker is started for them.
        todo = [i for i, (rid, _, p) in enumerate(batch)
                if p["verifier"] == "math" and rid not in done and src.kind != "toy"]
        issues = dict(zip(todo, check_golds([batch[i][2]["answer"] for i in todo],
                                            cfg.filter.workers))) if todo else {}
        for i, item in enumerate(batch):
            if issues.get(i):
                skipped[issues[i]] += 1
            else:
                yielded += 1
                yield item
        batch.clear()

    for row, at in _rows(src, cfg.run.seed, revision):
        if not _selected(src, row, at):
            excluded[src.name] += 1
            continue
        problem = row if src.kind == "toy" else _map_row(src, row, **at)
        messages: list[Message] = [{"role": "user", "content": _render(src, problem["prompt"], row, at)}]
        if cfg.prompts.system_prompt:
            messages.insert(0, {"role": "system", "content": cfg.prompts.system_prompt})
        batch.append((record_id(src.name, messages), messages, problem))
        if len(batch) >= (GOLD_BATCH if src.count is None
                          else max(1, min(GOLD_BATCH, src.count - yielded))):
            yield from flush()
    yield from flush()


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
        return HfApi().dataset_info(src.path or "", revision=src.revision, timeout=30).sha
    except Exception as e:  # offline, or a gated dataset without a token: read it as before
        log.warning("prompts: cannot resolve the revision of %s (%s); reading it again",
                    src.path, str(e).splitlines()[0] if str(e) else type(e).__name__)
        return None


def _settings(src: PromptSource, cfg: Recipe, exclude: set[str] | None = None) -> str:
    """A source's settings that change which prompt records it makes. Without `count` and
    `revision` (how many rows, from which commit), its shape: what decides the text of its
    records, so that a record of another shape is out of date."""
    # `where` came later: in the hash only when set, so that the records (and the teacher's
    # paid-for answers) of every source without it keep their shape.
    exclude = set(exclude or ()) | (set() if src.where else {"where"})
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
    stage = RunDir(run_dir).prompts
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
    excluded: Counter = Counter()
    skipped: dict[str, Counter] = {}
    with stage.writer() as w:
        for src in cfg.prompts.sources:
            rev = revisions[src.name] = source_revision(src, cfg.run.seed)
            key = settings[src.name] = _settings(src, cfg)
            if rev is not None and (before.get("revisions") or {}).get(src.name) == rev \
                    and (before.get("settings") or {}).get(src.name) == key:
                # Same rows, same settings: nothing can be new, so the source is not read.
                counts[src.name], new[src.name] = before["sources"][src.name], 0
                excluded[src.name] = (before.get("excluded") or {}).get(src.name, 0)
                skipped[src.name] = Counter((before.get("skipped") or {}).get(src.name) or {})
                continue
            n = added = 0
            skipped[src.name] = Counter()
            # `count` caps the prompts kept, not the rows read: it is the recipe's budget of
            # teacher prompts, and how many rows `where` and the gold check let through varies
            # by dataset. The cap counts the source's prompts already on record too, so a
            # refresh (which reads a source again only when its revision or settings changed)
            # adds prompts only below it: rows past the cap are never new prompts.
            for rid, messages, row in _prompts(src, cfg, rev, done, excluded, skipped[src.name]):
                if src.count is not None and n >= src.count:
                    break
                n += 1
                if rid in done:
                    continue
                done.add(rid)
                w.write(Prompt(id=rid, source=src.name, shape=shapes[src.name],
                               category=src.category,
                               subcategory=row["subcategory"], messages=messages,
                               verifier=row["verifier"], answer=row["answer"],
                               tests=row["tests"], entry_point=row["entry_point"],
                               source_revision=rev))
                added += 1
            counts[src.name], new[src.name] = n, added
            _log_left_out(src.name, excluded[src.name], skipped[src.name])
    stage.complete(sources=counts, revisions=revisions, settings=settings, new=new,
                   new_prompts=sum(new.values()), dropped=dropped,
                   excluded={k: v for k, v in excluded.items() if v},
                   skipped={k: dict(sorted(v.items())) for k, v in skipped.items() if v})
    log.info("prompts: %d prompts (%s), %d new", sum(counts.values()),
             ", ".join(f"{name} {n}" for name, n in counts.items()), sum(new.values()))
    return counts


def _log_left_out(name: str, excluded: int, skipped: Counter) -> None:
    if excluded:
        log.info("prompts: %s: %d rows left out by `where`", name, excluded)
    if skipped:
        log.info("prompts: %s: skipped %d rows whose gold answer cannot be checked (%s)", name,
                 sum(skipped.values()), ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())))
