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

Prompts that overlap a benchmark (the filter's check: `filter.decontaminate` and its settings,
distill/grading/decontaminate.py) are dropped here, before the teacher is paid for them:
`prompts/decontamination.json` names each hit (prompt id, source, benchmark, item, method,
evidence), the benchmarks checked and those not on hand; the manifest counts them per source.
The index of benchmark items is built once per run, and only when a prompt needs checking.
When the check's settings change, the prompts on record are checked again and every source is
read again (a benchmark taken off the list gives its prompts back).

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
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

from distill.config import PromptSource, Recipe
from distill.errors import InputError
from distill.grading.decontaminate import Hit, PromptChecker
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


class _Decontamination:
    """The prompts stage's side of the benchmark check: which prompts hit which item, and the
    report. The index is built on the first prompt to check, so a re-run that reads nothing new
    builds none; a prompt the last run found contaminated under the same settings is not
    checked again."""

    REPORT = "decontamination.json"

    def __init__(self, cfg: Recipe, stage, before: dict):
        self.cfg, self.on = cfg, cfg.filter.decontaminate != "none"
        self.key = record_id(PromptChecker.settings(cfg)) if self.on else None
        self.changed = self.key != before.get("decontamination_key")
        # The last run's report: its hits stand while the settings do.
        self.previous = None if self.changed or not self.on \
            or not (stage.path / self.REPORT).exists() else stage.read_json(self.REPORT)
        self.known = {h["prompt_id"]: h for h in (self.previous or {}).get("hits", [])}
        self.hits: dict[str, Hit] = {}
        self.sources: dict[str, str] = {}
        self._checker: PromptChecker | None = None

    def checker(self) -> PromptChecker:
        if self._checker is None:
            start = time.monotonic()
            c = self._checker = PromptChecker.from_recipe(self.cfg)
            log.info("prompts: checked against %d benchmarks (%d items, indexed in %.1f s)%s",
                     len(c.checked), sum(c.checked.values()), time.monotonic() - start,
                     f"; not on hand: {', '.join(c.skipped)}" if c.skipped else "")
        return self._checker

    def contaminated(self, rid: str, messages: list, source: str) -> bool:
        if rid in self.known:
            h = self.known[rid]
            hit: Hit | None = Hit(h["benchmark"], h["item"], h["method"], h["evidence"])
        else:
            hit = self.checker().check(messages, source) if self.on else None
        if hit:
            self.hits[rid], self.sources[rid] = hit, source
        return hit is not None

    def carry(self, source: str) -> None:
        """The last run's hits of a source this run does not read (same rows, same check)."""
        for rid, h in self.known.items():
            if h["source"] == source:
                self.contaminated(rid, [], source)

    def by_source(self) -> dict[str, int]:
        return dict(sorted(Counter(self.sources.values()).items()))

    def of(self, source: str) -> Counter:
        return Counter(h.benchmark for pid, h in self.hits.items() if self.sources[pid] == source)

    def write(self, stage) -> None:
        if not self.on:
            (stage.path / self.REPORT).unlink(missing_ok=True)
            return
        if self._checker is None and self.previous is not None:   # nothing checked this run
            report = {**self.previous, "hits": [h for h in self.known.values()
                                                if h["prompt_id"] in self.hits]}
        else:
            report = self.checker().summary(self.hits, self.sources)
        stage.write_json(self.REPORT, {**report, "by_source": self.by_source()})


def _drop_stale(stage, current) -> tuple[int, set[str]]:
    """Rewrites the stage without the records that are not `current` (a record whose shape is
    not its source's current one, or one that overlaps a benchmark); returns how many went and
    the ids of those kept. The kept records go to a fresh shard before the old shards are
    removed, so a crash in between leaves duplicates (read once) and never loses a current
    record."""
    records = list(stage.read())            # prompt records are small
    keep = [r for r in records if current(r)]
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
    decon = _Decontamination(cfg, stage, before)
    # New check settings: the prompts on record are checked again (a benchmark added to the
    # list drops the prompts that overlap it; their traces are then no longer current).
    recheck = decon.on and decon.changed
    dropped, done = _drop_stale(stage, lambda r: r.get("shape") == shapes.get(r.get("source"))
                                and not (recheck and decon.contaminated(r["id"], r["messages"],
                                                                        r["source"])))
    if dropped - len(decon.hits):
        log.info("prompts: dropped %d records of changed or removed sources",
                 dropped - len(decon.hits))
    if decon.hits:
        log.info("prompts: dropped %d records that overlap a benchmark (filter.decontaminate "
                 "changed)", len(decon.hits))
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
                    and (before.get("settings") or {}).get(src.name) == key and not decon.changed:
                # Same rows, same settings: nothing can be new, so the source is not read.
                counts[src.name], new[src.name] = before["sources"][src.name], 0
                excluded[src.name] = (before.get("excluded") or {}).get(src.name, 0)
                skipped[src.name] = Counter((before.get("skipped") or {}).get(src.name) or {})
                decon.carry(src.name)
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
                # A prompt on record passed the check when it was written (or was checked
                # again above); one that overlaps a benchmark is not counted against `count`.
                if rid not in done and decon.contaminated(rid, messages, src.name):
                    continue
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
            _log_left_out(src.name, excluded[src.name], skipped[src.name], decon.of(src.name))
    decon.write(stage)
    contaminated = decon.by_source()
    stage.complete(sources=counts, revisions=revisions, settings=settings, new=new,
                   new_prompts=sum(new.values()), dropped=dropped,
                   excluded={k: v for k, v in excluded.items() if v},
                   skipped={k: dict(sorted(v.items())) for k, v in skipped.items() if v},
                   contaminated=contaminated, decontamination_key=decon.key)
    log.info("prompts: %d prompts (%s), %d new%s", sum(counts.values()),
             ", ".join(f"{name} {n}" for name, n in counts.items()), sum(new.values()),
             f"; {sum(contaminated.values())} overlapping a benchmark dropped (prompts/"
             f"{decon.REPORT})" if contaminated else "")
    return counts


def _log_left_out(name: str, excluded: int, skipped: Counter, contaminated: Counter) -> None:
    if excluded:
        log.info("prompts: %s: %d rows left out by `where`", name, excluded)
    if skipped:
        log.info("prompts: %s: skipped %d rows whose gold answer cannot be checked (%s)", name,
                 sum(skipped.values()), ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())))
    if contaminated:
        log.info("prompts: %s: dropped %d prompts that overlap a benchmark (%s)", name,
                 sum(contaminated.values()),
                 ", ".join(f"{k} {v}" for k, v in sorted(contaminated.items())))
