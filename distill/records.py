"""The run directory: one folder per stage, append-only JSONL shards (the kept set, dataset/,
as Parquet shards in the Hub's layout: `ParquetStage`), stable ids, markers.

Every stage writes records through `Stage.writer()`. Each writer opens a new shard file, so a
crash can only tear the last line of the shard it was writing; readers skip such a torn tail.
A re-run reads `Stage.ids()` and skips finished keys. A stage is complete only when its
`_SUCCESS` marker, written atomically and last, exists.

The contract between stages is here: which folders each stage writes (`STAGE_FOLDERS`), a
`RunDir` accessor per folder, `RunDir.require` for a stage's input (bad input, exit 2, when
its stage has not run), and `current_traces`, the generate records that count now. The shape
of each folder's records is in distill/record_types.py. Handles (`RunDir`, `Stage`) touch
nothing on disk until something is written.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Collection, Iterator, Mapping, Protocol

from distill.errors import InputError
from distill.jsonl import numbered_rows

MARKER = "_SUCCESS"


def record_id(*parts: Any) -> str:
    """A stable id: the same parts give the same id in every run and on every machine."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_json(path: Path, obj: Any) -> None:
    """Writes a JSON file atomically (temp file, fsync, rename): never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_jsonl(path: Path, start: int = 0, first_line: int = 1) -> Iterator[dict[str, Any]]:
    """Reads a JSONL file, from byte offset `start` (line `first_line` there). A torn last line
    (a crash mid-write) is skipped; a bad line elsewhere is an error naming the file and line."""
    # Only the last line of a file can lack its newline, so a bad line without one is the torn
    # tail of an interrupted write.
    for _, row in numbered_rows(path, start=start, first_line=first_line, torn_tail=True):
        yield row


def _index_path(shard: Path) -> Path:
    return shard.with_name(shard.name + ".idx")


class RecordWriter(Protocol):
    """What a stage's writer does: `write(record)` each record, `close()` (or `with`)."""
    count: int

    def write(self, record: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> "RecordWriter": ...

    def __exit__(self, *exc: Any) -> None: ...


class ShardWriter:
    """Appends records to a fresh shard. Each record is flushed as it is written; fsync
    every `sync_every` records and on close bounds what a power loss can take.

    With `index` fields, each record also gets a line in `<shard>.idx`: its id, those
    fields and the byte offset where the record ends, written after the record itself. A
    resuming stage reads the small index instead of every trace (see `Stage.read_index`)."""

    def __init__(self, path: Path, sync_every: int = 64, index: tuple[str, ...] = ()):
        self.path = path
        self._f = open(path, "xb")
        self._index_fields = tuple(index)
        self._idx = open(_index_path(path), "xb") if index else None
        self._end = 0
        self._sync_every = sync_every
        self._unsynced = 0
        self.count = 0

    def write(self, record: Mapping[str, Any]) -> None:
        if "id" not in record:
            raise ValueError("a record needs an 'id'")
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        self._f.write(line)
        self._f.flush()
        self._end += len(line)
        if self._idx is not None:
            entry = {"id": record["id"], **{k: record.get(k) for k in self._index_fields},
                     "end": self._end}
            self._idx.write((json.dumps(entry, ensure_ascii=False, default=str) + "\n").encode())
            self._idx.flush()
        self.count += 1
        self._unsynced += 1
        if self._unsynced >= self._sync_every:
            self._sync()
            self._unsynced = 0

    def _sync(self) -> None:
        os.fsync(self._f.fileno())          # the records before their index entries
        if self._idx is not None:
            os.fsync(self._idx.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            self._sync()
            self._f.close()
            if self._idx is not None:
                self._idx.close()
            if self.count == 0:
                self.path.unlink(missing_ok=True)
                _index_path(self.path).unlink(missing_ok=True)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Stage:
    """A folder of records: `<run_dir>/<name>/part-00000.jsonl, ...` plus `_SUCCESS`."""

    def __init__(self, run_dir: Path, name: str):
        self.name = name
        self.path = Path(run_dir) / name

    def mkdir(self) -> Path:
        """The folder, created if need be: for files a stage puts there itself (logs, a model)."""
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path

    def shards(self) -> list[Path]:
        return sorted(self.path.glob("part-*.jsonl"))

    def read(self, unique: bool = True) -> Iterator[dict[str, Any]]:
        """All records, in write order; a record id seen twice is yielded once (`unique`; a
        reader of millions that settles repeats itself passes False, and holds no id set)."""
        seen: set[str] = set()
        for shard in self.shards():
            for rec in read_jsonl(shard):
                if not unique:
                    yield rec
                elif rec["id"] not in seen:
                    seen.add(rec["id"])
                    yield rec

    def ids(self) -> set[str]:
        return {rec["id"] for rec in self.read_index(())}

    def clear(self) -> None:
        """Removes every record (a stage that rewrites its folder whole)."""
        for shard in self.shards():
            shard.unlink()
            _index_path(shard).unlink(missing_ok=True)

    def read_index(self, fields: tuple[str, ...]) -> Iterator[dict[str, Any]]:
        """The id and `fields` of every record, as `read` would give them, without parsing the
        records a shard's index already describes: from the index up to the last entry whose
        record is on disk, then the records after it (a crash may leave one unindexed). A
        shard without an index, or with other fields in it, is read whole."""
        seen: set[str] = set()
        for shard in self.shards():
            for rec in self._shard_keys(shard, fields):
                if rec["id"] not in seen:
                    seen.add(rec["id"])
                    yield rec

    @staticmethod
    def _shard_keys(shard: Path, fields: tuple[str, ...]) -> Iterator[dict[str, Any]]:
        idx, start, lines = _index_path(shard), 0, 0
        if idx.exists():
            size = shard.stat().st_size
            for entry in read_jsonl(idx):
                if entry["end"] > size or not all(f in entry for f in fields):
                    break           # ahead of the data (power loss), or written with other fields
                yield {"id": entry["id"], **{f: entry[f] for f in fields}}
                start, lines = entry["end"], lines + 1
        for rec in read_jsonl(shard, start, first_line=lines + 1):
            yield {"id": rec["id"], **{f: rec.get(f) for f in fields}}

    def writer(self, index: tuple[str, ...] = ()) -> RecordWriter:
        """A writer of a fresh shard; `index` names the fields `read_index` will be asked
        for (a resuming stage's keys), kept beside the shard."""
        self.mkdir()
        n = len(self.shards())
        while True:
            path = self.path / f"part-{n:05d}.jsonl"
            try:
                return ShardWriter(path, index=index)
            except FileExistsError:
                n += 1

    # -- completion
    def is_complete(self) -> bool:
        return (self.path / MARKER).exists()

    def manifest(self) -> dict[str, Any] | None:
        marker = self.path / MARKER
        return json.loads(marker.read_text()) if marker.exists() else None

    def start(self) -> None:
        """Called before a stage writes: its old marker no longer describes the outputs."""
        (self.path / MARKER).unlink(missing_ok=True)

    def complete(self, **manifest: Any) -> None:
        """Writes the marker last, after every other output of the stage."""
        manifest.setdefault("records", sum(1 for _ in self.read_index(())))
        write_json(self.path / MARKER, manifest)

    # -- side files (reports, counts) written whole and atomically
    def write_json(self, name: str, obj: Any) -> Path:
        write_json(self.path / name, obj)
        return self.path / name

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())


class ParquetStage(Stage):
    """A folder of records as Parquet shards in the Hub's dataset layout: `<run_dir>/<name>/
    data/train-00000-of-00003.parquet, ...` plus `_SUCCESS`; `datasets.load_dataset(folder)`
    and the Hub read it as it is. Written whole by one writer (the filter rewrites the kept
    set every run); each shard is written under a temporary name and renamed when the writer
    closes, so a crash leaves no shard that looks whole. Columns: id, prompt_id, source,
    category, messages (list of {role, content}), teacher_logprobs (JSON text, or null)."""

    ROWS_PER_GROUP = 1000
    SHARD_BYTES = 500 * 2**20   # push_to_hub's default max_shard_size, counted in text bytes

    def shards(self) -> list[Path]:
        return sorted((self.path / "data").glob("train-*.parquet"))

    def read(self, unique: bool = True) -> Iterator[dict[str, Any]]:
        """Every row as a record (teacher_logprobs parsed, absent when null); ids are unique
        by construction."""
        import pyarrow.parquet as pq
        for shard in self.shards():
            for batch in pq.ParquetFile(shard, pre_buffer=False).iter_batches(batch_size=256):
                for row in batch.to_pylist():
                    lp = row.pop("teacher_logprobs", None)
                    if lp:
                        row["teacher_logprobs"] = json.loads(lp)
                    yield row

    def read_index(self, fields: tuple[str, ...]) -> Iterator[dict[str, Any]]:
        import pyarrow.parquet as pq
        for shard in self.shards():
            f = pq.ParquetFile(shard, pre_buffer=False)
            names = ["id", *[c for c in fields if c in f.schema_arrow.names]]
            for batch in f.iter_batches(batch_size=4096, columns=names):
                for row in batch.to_pylist():
                    yield {"id": row["id"], **{k: row.get(k) for k in fields}}

    def writer(self, index: tuple[str, ...] = ()) -> RecordWriter:
        return ParquetWriter(self)

    def clear(self) -> None:
        import shutil
        shutil.rmtree(self.path / "data", ignore_errors=True)


def kept_schema() -> Any:
    import pyarrow as pa
    s = pa.string()
    return pa.schema([("id", s), ("prompt_id", s), ("source", s), ("category", s),
                      ("messages", pa.list_(pa.struct([("role", s), ("content", pa.large_string())]))),
                      ("teacher_logprobs", pa.large_string())])


class ParquetWriter:
    """Writes a ParquetStage's rows in row groups of `ROWS_PER_GROUP`, a new shard every
    `SHARD_BYTES` of text; on close the shards get their final names `train-i-of-n`."""

    def __init__(self, stage: ParquetStage):
        self.stage, self.count = stage, 0
        self._rows: list[dict[str, Any]] = []
        self._writer: Any = None
        self._bytes = 0
        self._written: list[Path] = []
        (stage.path / "data").mkdir(parents=True, exist_ok=True)

    def write(self, record: Mapping[str, Any]) -> None:
        if "id" not in record:
            raise ValueError("a record needs an 'id'")
        lp = record.get("teacher_logprobs")
        messages = [{"role": m["role"], "content": m.get("content") or ""} for m in record["messages"]]
        self._rows.append({"id": record["id"], "prompt_id": record.get("prompt_id"),
                           "source": record.get("source"), "category": record.get("category"),
                           "messages": messages, "teacher_logprobs": json.dumps(lp) if lp else None})
        self._bytes += sum(len(m["content"]) for m in messages) + (len(self._rows[-1]["teacher_logprobs"] or ""))
        self.count += 1
        if len(self._rows) >= self.stage.ROWS_PER_GROUP:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq
        if not self._rows:
            return
        if self._writer is None:
            path = self.stage.path / "data" / f".part-{len(self._written):05d}.parquet.tmp"
            self._written.append(path)
            self._writer = pq.ParquetWriter(path, kept_schema())
        self._writer.write_table(pa.Table.from_pylist(self._rows, schema=kept_schema()))
        self._rows = []
        if self._bytes >= self.stage.SHARD_BYTES:
            self._writer.close()
            self._writer, self._bytes = None, 0

    def close(self) -> None:
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        # Final names for every shard of the folder (an earlier writer's too): i of n.
        shards = self.stage.shards() + self._written
        self._written = []
        staged = []
        for i, path in enumerate(shards):
            tmp = path.with_name(f".renaming-{i:05d}.parquet.tmp")
            os.replace(path, tmp)
            staged.append(tmp)
        for i, tmp in enumerate(staged):
            os.replace(tmp, tmp.with_name(f"train-{i:05d}-of-{len(staged):05d}.parquet"))

    def __enter__(self) -> "ParquetWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# The pipeline's stages, in order (distill/pipeline.py runs them), and the folders of the run
# directory each one writes. The first folder holds the marker that completes the stage: the
# stage writes it last.
STAGE_FOLDERS: dict[str, tuple[str, ...]] = {
    "prompts": ("prompts",),
    "generate": ("generate",),
    "filter": ("filter", "dataset"),
    "train": ("train",),
    "quantize": ("quantize",),
    "evaluate": ("eval",),
    "publish": ("publish", "report"),
}
# folders written as Parquet (ParquetStage); the others are JSONL shards
PARQUET_FOLDERS = ("dataset",)
# folder -> the stage that writes it
FOLDER_STAGE: dict[str, str] = {f: name for name, folders in STAGE_FOLDERS.items() for f in folders}


class RunDir:
    """`<run_dir>/recipe.yaml` and the stages' folders (`STAGE_FOLDERS`), one accessor each."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def stage(self, name: str) -> Stage:
        return ParquetStage(self.path, name) if name in PARQUET_FOLDERS else Stage(self.path, name)

    # -- the folders, by the stage that writes them
    @property
    def prompts(self) -> Stage:
        """prompts/: a Prompt per prompt (stage prompts)."""
        return self.stage("prompts")

    @property
    def generate(self) -> Stage:
        """generate/: a Trace per teacher sample, failed.json, logs/ (stage generate)."""
        return self.stage("generate")

    @property
    def filter(self) -> Stage:
        """filter/: a FilterVerdict per trace, counts.json, report.json, report.md (stage filter)."""
        return self.stage("filter")

    @property
    def verify_store(self) -> Stage:
        """filter/verdicts/: the verifier's stored grades, kept across runs (stage filter)."""
        return self.stage("filter/verdicts")

    @property
    def dataset(self) -> Stage:
        """dataset/: a KeptExample per kept trace, the training set, as Parquet shards in the
        Hub's layout (stage filter)."""
        return self.stage("dataset")

    @property
    def train(self) -> Stage:
        """train/: model/ (adapter/), lineage.json, checkpoints/, cache/, logs/ (stage train)."""
        return self.stage("train")

    @property
    def quantize(self) -> Stage:
        """quantize/: the student's quantized files, <role>.json each, variants.json (stage
        quantize)."""
        return self.stage("quantize")

    @property
    def eval(self) -> Stage:
        """eval/: an EvalSample per sample, scores.json, questions.json (stage evaluate)."""
        return self.stage("eval")

    @property
    def publish(self) -> Stage:
        """publish/: the marker and hub/, the folders a push uploads (stage publish)."""
        return self.stage("publish")

    @property
    def report(self) -> Path:
        """report/: leaderboard, plots, cards, economics (stage publish; not created here)."""
        return self.path / "report"

    @property
    def refresh(self) -> Stage:
        """refresh/: a record per `distill refresh`, report.md, trained.json."""
        return self.stage("refresh")

    @property
    def rehearsal(self) -> Path:
        """rehearsal/: a rehearsal's answer key and dry-run teacher log (`distill rehearse`)."""
        return self.path / "rehearsal"

    # -- what a stage reads
    def done(self, stage: str) -> bool:
        """Whether pipeline stage `stage` (a name in STAGE_FOLDERS) completed."""
        return self.stage(STAGE_FOLDERS[stage][0]).is_complete()

    def require(self, folder: str, complete: bool = False) -> Stage:
        """The folder a stage reads, or bad input (exit 2) naming it and the command that
        writes it: when it holds no record, or with `complete`, when it has no marker."""
        stage, writer = self.stage(folder), FOLDER_STAGE[folder]
        if complete and not stage.is_complete():
            raise InputError(f"{folder}/ is not complete (no {MARKER} marker): run the {writer} "
                             f"stage first (`distill {writer}`)", file=str(stage.path))
        if not complete and next(iter(stage.read_index(())), None) is None:
            raise InputError(f"{folder}/ holds no records: run the {writer} stage first "
                             f"(`distill {writer}`)", file=str(stage.path))
        return stage

    def save_recipe(self, recipe: Any) -> Path:
        from distill.config import dump_recipe
        path = self.path / "recipe.yaml"
        write_text(path, dump_recipe(recipe))
        return path


class CurrentTraces:
    """See `current_traces`. Iterating yields the current records; `other` then holds how many
    stored records were passed over."""

    def __init__(self, stage: Stage, gen_hash: str | None, prompt_ids: Collection[str] | None,
                 fields: tuple[str, ...] | None, unique: bool = True):
        self.stage, self.gen_hash, self.prompt_ids, self.unique = stage, gen_hash, prompt_ids, unique
        self.fields = None if fields is None else \
            tuple(dict.fromkeys(("prompt_id", "gen_hash", *fields)))
        self.other = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.other = 0
        records = self.stage.read(self.unique) if self.fields is None else \
            self.stage.read_index(self.fields)
        for rec in records:
            stamped = rec.get("gen_hash")
            if (self.gen_hash is None or stamped is None or stamped == self.gen_hash) and \
                    (self.prompt_ids is None or rec.get("prompt_id") in self.prompt_ids):
                yield rec
            else:
                self.other += 1


def current_traces(run_dir: str | Path, gen_hash: str | None, *,
                   prompt_ids: Collection[str] | None = None,
                   fields: tuple[str, ...] | None = None, unique: bool = True) -> CurrentTraces:
    """The generate records that count now: those of generation settings `gen_hash` (None: of
    any), for prompts of the current prompt set. The one rule for which traces the filter
    grades, generate resumes from, and economics, the plan and lineage price and count.

    - `gen_hash` is the caller's: the recipe's `generation_hash()` for the stages and the plan;
      lineage (cards, the cross-run leaderboard) describes the generation the generate stage
      completed, so it passes its manifest's `gen_hash`.
    - A record without a `gen_hash` (written by hand, not by the generate stage) counts:
      nothing says it is of other settings.
    - `prompt_ids`: default, the prompts stage's ids (every prompt when the stage holds no
      record): samples of prompts dropped from the recipe stay on disk but do not count, so
      the traces economics prices are those the filter grades; generate passes the prompts it
      generates for (one shard's, with `generate.shards`).
    - `unique=False`: a record id written twice is yielded twice (no set of every id in
      memory); the filter settles repeats on its own columns.
    - `fields`: only the id and these fields of each record (and prompt_id, gen_hash), from
      the shards' indexes: a resume reads the small index, not every trace.
    """
    rd = RunDir(run_dir)
    if prompt_ids is None and rd.prompts.shards():
        prompt_ids = rd.prompts.ids()
    return CurrentTraces(rd.generate, gen_hash, prompt_ids, fields, unique)
