"""The viewer's index of a run directory: reads generate/, filter/ and eval/ once and writes
run_dir/view/index.json, the few fields a listing filters on plus where each record starts in
its shard. A request then filters these columns in memory and reads only the records of the
page it shows (a seek and one line each), so a run of a million traces is scanned once, not
per request. The index is rebuilt when any source file's size or mtime changes.

Reads records by byte offset rather than through `Stage.read` (records.py): a page needs 50
records out of a shard, and seeking to them is the point of the index.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import orjson

from distill.errors import InputError
from distill.filters.report import reason_kind

SCHEMA = 2
TRACE_COLUMNS = ("id", "shard", "offset", "source", "category", "finish", "chars", "status",
                 "failed", "reason", "vshard", "voffset")
EVAL_COLUMNS = ("benchmark", "task_id", "role", "sample", "correct", "shard", "offset")


def check_run_dir(path: Path) -> Path:
    """A run directory, or bad input (exit 2) saying why not."""
    if not path.is_dir():
        raise InputError("not a run directory: no such folder", file=str(path))
    if not (path / "recipe.yaml").is_file() and not (path / "generate").is_dir() \
            and not (path / "eval").is_dir():
        raise InputError("not a run directory: it has no recipe.yaml, generate/ or eval/",
                         file=str(path))
    return path


def _sources(run: Path) -> list[Path]:
    files = sorted(run.glob("generate/part-*.jsonl")) + sorted(run.glob("filter/part-*.jsonl"))
    files += sorted(run.glob("eval/part-*.jsonl"))
    return files + [p for p in (run / "eval/comparisons.json", run / "eval/questions.json")
                    if p.exists()]


def _signature(run: Path) -> dict[str, list[int]]:
    sig = {}
    for p in _sources(run):
        st = p.stat()
        sig[str(p.relative_to(run))] = [st.st_size, st.st_mtime_ns]
    return sig


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(byte offset, record) of each whole line; a torn last line is skipped, as records.py does."""
    offset = 0
    with open(path, "rb") as f:
        for line in f:
            start, offset = offset, offset + len(line)
            if not line.endswith(b"\n"):
                break
            if line.strip():
                yield start, orjson.loads(line)


def _verdicts(run: Path, shards: list[str]) -> dict[str, tuple[int, int, dict[str, Any]]]:
    """Trace id -> (shard number, offset, FilterVerdict) of the filter's last word on it."""
    out: dict[str, tuple[int, int, dict[str, Any]]] = {}
    for shard in sorted(run.glob("filter/part-*.jsonl")):
        shards.append(str(shard.relative_to(run)))
        for offset, rec in _lines(shard):
            out[rec["id"]] = (len(shards) - 1, offset, rec)
    return out


def _build(run: Path) -> dict[str, Any]:
    shards: list[str] = []
    verdicts = _verdicts(run, shards)
    traces: dict[str, list[Any]] = {c: [] for c in TRACE_COLUMNS}
    seen: set[str] = set()
    for shard in sorted(run.glob("generate/part-*.jsonl")):
        shards.append(str(shard.relative_to(run)))
        for offset, rec in _lines(shard):
            if rec["id"] in seen:
                continue
            seen.add(rec["id"])
            vshard, voffset, v = verdicts.get(rec["id"], (None, None, None))
            failed = v.get("failed") if v else None
            row = {"id": rec["id"], "shard": len(shards) - 1, "offset": offset,
                   "source": rec.get("source"), "category": rec.get("category"),
                   "finish": rec.get("finish_reason"),
                   "chars": len(rec.get("reasoning") or "") + len(rec.get("content") or ""),
                   "status": "ungraded" if v is None else "kept" if v.get("kept") else "rejected",
                   "failed": failed,
                   "reason": reason_kind(v["reasons"].get(failed, "")) if v and failed else None,
                   "vshard": vshard, "voffset": voffset}
            for c in TRACE_COLUMNS:
                traces[c].append(row[c])
    evals: dict[str, list[Any]] = {c: [] for c in EVAL_COLUMNS}
    latest: dict[tuple, int] = {}
    for shard in sorted(run.glob("eval/part-*.jsonl")):
        shards.append(str(shard.relative_to(run)))
        for offset, rec in _lines(shard):
            # a rerun appends: the last record of a (role, question, sample) is the one that counts
            key = (rec["role"], rec["benchmark"], rec["task_id"], rec.get("sample", 0))
            values = [rec["benchmark"], rec["task_id"], rec["role"], rec.get("sample", 0),
                      bool(rec.get("correct")), len(shards) - 1, offset]
            if key in latest:
                for c, value in zip(EVAL_COLUMNS, values):
                    evals[c][latest[key]] = value
                continue
            latest[key] = len(evals["role"])
            for c, value in zip(EVAL_COLUMNS, values):
                evals[c].append(value)
    comparisons = _read_json(run / "eval" / "comparisons.json") or []
    questions = _read_json(run / "eval" / "questions.json") or []
    return {"schema": SCHEMA, "shards": shards, "traces": traces, "eval": evals,
            "comparisons": comparisons, "questions": questions}


def _read_json(path: Path) -> Any:
    return orjson.loads(path.read_bytes()) if path.exists() else None


def load_index(run: Path) -> dict[str, Any]:
    """The run's index: from run_dir/view/index.json when its sources are unchanged, else built
    and written there (written under a temporary name first: a reader never sees half)."""
    run = check_run_dir(Path(run))
    sig = _signature(run)
    path = run / "view" / "index.json"
    if path.exists():
        try:
            cached = orjson.loads(path.read_bytes())
            if cached.get("schema") == SCHEMA and cached.get("sources") == sig:
                return cached
        except orjson.JSONDecodeError:
            pass                                # a broken cache is rebuilt
    index = {**_build(run), "sources": sig}
    try:
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".index.json.tmp{os.getpid()}")
        tmp.write_bytes(orjson.dumps(index))
        os.replace(tmp, path)
    except OSError:
        pass                                    # a read-only run is indexed in memory only
    return index


def read_at(run: Path, shard: str, offset: int) -> dict[str, Any]:
    """The record that starts at `offset` in `shard` (a path relative to the run)."""
    with open(run / shard, "rb") as f:
        f.seek(offset)
        return orjson.loads(f.readline())
