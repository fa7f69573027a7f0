"""Traces a user brings: reads a JSONL / JSON / Parquet file, a dataset saved with
`save_to_disk`, or a Hub dataset of chat `messages` (the last one the assistant's) with gold
fields, and returns generation records like the generate stage's, so the filter stage treats
both the same.

Per row: `messages` (required); the assistant's reasoning from its `reasoning_content` (or
`reasoning`) field or from a `<think>...</think>` block at the start of its content; gold
fields as the verifier reads them (`answer`, `choices`, `tests`, `functional_tests`,
`stdio_tests`, `entry_point`, ...); optional `verifier` (else: code when there are tests, a
choice when the answer is a letter and there are choices, math when there is an answer, none
otherwise), `source`, `category`, `finish_reason`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from distill.errors import InputError
from distill.jsonl import numbered_rows
from distill.records import record_id

GOLD_FIELDS = ("answer", "choices", "tests", "functional_tests", "stdio_tests", "entry_point",
               "code_prefix", "preamble", "test_timeout_s", "timeout_s", "memory_mb",
               "reference_times_s", "subcategory")
_THINK = re.compile(r"^\s*(?:<think>)?(.*?)</think>(.*)$", re.DOTALL)


def _rows(spec: str, split: str) -> tuple[Iterator[tuple[int, dict]], str]:
    """(line or row number, row), streamed, and the name of the input. A file's existence and
    a saved dataset's split are checked before the first row."""
    path = Path(spec)
    if path.is_dir():                       # a dataset saved with `save_to_disk`: memory-mapped
        from datasets import DatasetDict, load_from_disk
        ds = load_from_disk(str(path))
        if isinstance(ds, DatasetDict):
            if split not in ds:
                raise InputError(f"no split {split!r} (has: {', '.join(ds)})", file=spec,
                                 key="filter.input_split")
            ds = ds[split]
        return enumerate(ds, 1), path.name
    if path.exists():
        if path.suffix == ".parquet":
            return _parquet_rows(path), path.stem
        if path.suffix == ".json":          # one JSON list: read whole (JSONL streams)
            try:
                rows = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise InputError(f"not valid JSON ({e.msg})", file=spec, line=e.lineno) from None
            if not isinstance(rows, list):
                raise InputError("a JSON input must be a list of rows", file=spec)
            return enumerate(rows, 1), path.stem
        return numbered_rows(spec), path.stem.removesuffix(".jsonl")
    if path.suffix in (".jsonl", ".json", ".parquet", ".gz") or spec.startswith((".", "/")):
        raise InputError("input file not found", file=spec, key="filter.input")
    from datasets import load_dataset
    try:   # downloaded once into the Hub cache as Arrow, then read memory-mapped
        return enumerate(load_dataset(spec, split=split), 1), spec
    except Exception as e:  # noqa: BLE001  (not found, no network, gated)
        raise InputError(f"cannot load Hub dataset {spec!r} split {split!r}: "
                         f"{type(e).__name__}: {str(e).splitlines()[0][:200]}",
                         key="filter.input") from None


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq
    n = 0
    for batch in pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=512):
        for row in batch.to_pylist():
            n += 1
            yield n, row


def _split_reasoning(message: dict) -> tuple[str | None, str]:
    content = message.get("content") or ""
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning is not None:
        return reasoning, content
    m = _THINK.match(content)
    if m:
        return m.group(1).strip("\n"), m.group(2).lstrip("\n")
    return None, content


def _verifier(row: dict) -> str:
    if row.get("verifier"):
        return row["verifier"]
    if row.get("tests") or row.get("functional_tests") or row.get("stdio_tests"):
        return "code"
    answer = row.get("answer")
    if answer is not None and str(answer).strip():
        if row.get("choices") and re.fullmatch(r"[A-J]", str(answer).strip()):
            return "choice"
        return "math"
    return "none"


def read_traces(spec: str, split: str = "train") -> list[dict]:
    """Generation records for the rows of `spec` (a file or a Hub dataset id), as a list."""
    return list(iter_traces(spec, split))


def iter_traces(spec: str, split: str = "train") -> Iterator[dict]:
    """Generation records for the rows of `spec` (a file or a Hub dataset id), streamed: the
    same records in the same order every time."""
    rows, name = _rows(spec, split)
    for n, row in rows:
        where: dict[str, Any] = {"file": spec, "line": n}
        messages = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(messages, list) or not messages:
            raise InputError("row has no 'messages' list", key="messages", **where)
        if not all(isinstance(m, dict) and "role" in m for m in messages):
            raise InputError("every message needs a 'role' and 'content'", key="messages", **where)
        if messages[-1]["role"] != "assistant":
            raise InputError("the last message must be the assistant's answer", key="messages",
                             **where)
        prompt = [{"role": m["role"], "content": m.get("content") or ""} for m in messages[:-1]]
        reasoning, content = _split_reasoning(messages[-1])
        verifier = _verifier(row)
        prompt_id = record_id(prompt)
        gen = {k: row[k] for k in GOLD_FIELDS if row.get(k) is not None}
        gen.update({
            "id": record_id(name, n, prompt, reasoning, content), "prompt_id": prompt_id,
            "source": row.get("source") or name, "messages": prompt, "verifier": verifier,
            "category": row.get("category") or {"code": "coding", "none": "general"}.get(
                verifier, "reasoning"),
            "reasoning": reasoning, "content": content,
            "finish_reason": row.get("finish_reason") or "stop", "input_line": n})
        yield gen
