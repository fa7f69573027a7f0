"""Training data as Arrow: reads the dataset stage's Parquet shards (streamed, a row group at a
time); writes, under
train/cache/source-<content hash>/, a memory-mapped Arrow copy of the kept records and their
tokenized examples, so every rank and every re-run with the same data reads them instead of
holding Python lists.

    source_dataset(stage, cache)   id, messages and teacher_logprobs (JSON text) of every kept
                                   record, converted once per content of the shards
    dataset_hash(ds, root)         the hash of ids and messages in the train config hash (the
                                   value distill computed before, so finished runs stay finished)
    subset(ds, fraction, count)    train.data_fraction / train.max_examples: nested subsets
    tokenize(ds, ...)              input_ids + assistant_masks (SFT) or + the teacher's targets
                                   (KD), `Dataset.map` with a cache file keyed by the data, the
                                   tokenizer and its template, max_length and this code

Records longer than max_length are dropped, not truncated: a cut trace has no answer and no
end-of-turn token, and would teach the student to ramble without stopping.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Callable

from distill.errors import InputError
from distill.records import RunDir, Stage, write_json
from distill.chat import tokenize_chat

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the cached layouts change


def _features():
    from datasets import Features, Value
    # large_string: a batch of traces with stored top-20 logprobs passes 2 GB of text
    return Features({"id": Value("string"), "messages": Value("large_string"),
                     "teacher_logprobs": Value("large_string")})


def _records(run_dir: str):
    """Through records.py: a torn tail is skipped and a record id seen twice is read once."""
    for rec in RunDir(run_dir).dataset.read():
        lp = rec.get("teacher_logprobs")
        yield {"id": rec["id"], "messages": json.dumps(rec["messages"], sort_keys=True, ensure_ascii=False),
               "teacher_logprobs": json.dumps(lp) if lp else None}


def _shards_key(stage: Stage) -> str:
    h = hashlib.sha256(f"format {FORMAT}".encode())
    for shard in stage.shards():
        h.update(shard.name.encode())
        with open(shard, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()[:16]


def source_dataset(stage: Stage, cache: Path):
    """The kept records as a memory-mapped Arrow dataset, and its cache folder. Folders of
    other contents (earlier data) are removed."""
    from datasets import Dataset

    key = _shards_key(stage)
    root = cache / f"source-{key}"
    if cache.is_dir():
        for old in cache.glob("source-*"):
            if old != root:
                shutil.rmtree(old, ignore_errors=True)
    ds = Dataset.from_generator(_records, features=_features(), cache_dir=str(root),
                                gen_kwargs={"run_dir": str(stage.path.parent)}, fingerprint=f"source-{key}")
    return ds, root


def dataset_hash(ds, root: Path) -> str:
    """Streamed in id order from the Arrow copy; kept beside it (its folder is keyed by content)."""
    done = root / "data_hash.json"
    if done.exists():
        return json.loads(done.read_text())["data_hash"]
    ids = list(ds["id"])
    order = sorted(range(len(ids)), key=ids.__getitem__)
    columns = ds.select_columns(["messages"])
    h = hashlib.sha256()
    for start in range(0, len(order), 512):
        chunk = order[start:start + 512]
        for i, m in zip(chunk, columns[chunk]["messages"]):
            h.update(("[" + json.dumps(ids[i], ensure_ascii=False) + ", " + m + "]").encode())
    value = h.hexdigest()[:16]
    write_json(done, {"data_hash": value})
    return value


def subset(ds, fraction: float | None, count: int | None, seed: int, data_hash: str):
    """The records first in the order of sha256(seed, id): the share `fraction` of them (rounded
    up), then at most `count`. Ranked by a hash, not drawn, so the subset of 500 is inside the
    subset of 1,000 (a data-size curve compares nested sets) and the same on every machine."""
    if fraction is None and count is None:
        return ds
    n = len(ds)
    keep = n if fraction is None else max(1, math.ceil(fraction * n))
    keep = keep if count is None else min(keep, count)
    if keep >= n:
        return ds
    ids = ds["id"]
    rank = sorted(range(n), key=lambda i: hashlib.sha256(f"{seed}:{ids[i]}".encode()).digest())
    key = hashlib.sha256(json.dumps([data_hash, seed, keep]).encode()).hexdigest()[:16]
    log.info("train: %d of %d kept records (train.data_fraction %s, train.max_examples %s)",
             keep, n, fraction, count)
    return ds.select(sorted(rank[:keep]), new_fingerprint=f"subset-{key}")


def prompts(ds) -> list[list[dict]]:
    """The distinct prompts (every message but the assistant's), in record order."""
    seen, out = set(), []
    for batch in ds.select_columns(["messages"]).iter(batch_size=1024):
        for m in batch["messages"]:
            prompt = [x for x in json.loads(m) if x["role"] != "assistant"]
            key = json.dumps(prompt, sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append(prompt)
    return out


def num_proc(rows: int) -> int | None:
    """Tokenizing processes: the machine's cores, at most 8, and one per 500 records (a pool
    costs more than it saves on small sets); None for one (datasets then maps in this process)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    n = min(cores, 8, rows // 500)
    return n if n > 1 else None


def tokenizer_fingerprint(tok) -> str:
    h = hashlib.sha256()
    backend = getattr(tok, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else
             json.dumps(sorted(tok.get_vocab().items())).encode())
    h.update(json.dumps([tok.chat_template, tok.eos_token, tok.pad_token,
                         sorted((t.content, t.special) for t in tok.added_tokens_decoder.values())]).encode())
    return h.hexdigest()


def _code_hash(*modules) -> str:
    return hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in modules)).hexdigest()


def _sft_batch(batch: dict, tok, end_of_turn: str, max_length: int) -> dict:
    out: dict[str, list[list[int]]] = {"input_ids": [], "assistant_masks": []}
    for rid, m in zip(batch["id"], batch["messages"]):
        ids, mask = tokenize_chat(json.loads(m), tok, end_of_turn, f"dataset record {rid}")
        if len(ids) <= max_length:
            out["input_ids"].append(ids)
            out["assistant_masks"].append(mask)
    return out


def _sft_features():
    from datasets import Features, List, Value
    return Features({"input_ids": List(Value("int32")), "assistant_masks": List(Value("int8"))})


def tokenize(ds, root: Path, tok, *, end_of_turn: str, max_length: int, method: str,
             stop_ids: list[int]):
    """The examples of `method` (sft or logit_kd), from the cache when this data, tokenizer,
    template, max_length and code made them before. Returns (dataset, rows dropped as too long)."""
    import distill.chat as chat
    import distill.train.data as data
    fn: Callable[..., dict]
    if method == "logit_kd":
        import distill.train.kd_data as kd_data
        fn, features, code = kd_data.kd_batch, kd_data.kd_features(), _code_hash(chat, data, kd_data)
        kwargs = {"tok": tok, "end_of_turn": end_of_turn, "max_length": max_length, "stop_ids": stop_ids}
    else:
        fn, features, code = _sft_batch, _sft_features(), _code_hash(chat, data)
        kwargs = {"tok": tok, "end_of_turn": end_of_turn, "max_length": max_length}
    # A subset (train.max_examples) is its own set of rows: its fingerprint joins the key.
    rows = [] if ds._fingerprint.startswith("source-") else [ds._fingerprint]
    key = hashlib.sha256(json.dumps([FORMAT, method, root.name, tokenizer_fingerprint(tok),
                                     end_of_turn, stop_ids, max_length, code, *rows]).encode()).hexdigest()[:16]
    path = root / f"tokens-{method}-{key}.arrow"
    # Long traces: small batches keep a writer's buffer (and KD's top-k rows) to megabytes.
    out = ds.map(fn, batched=True, batch_size=64, writer_batch_size=64, fn_kwargs=kwargs,
                 remove_columns=ds.column_names, features=features, cache_file_name=str(path),
                 load_from_cache_file=True, new_fingerprint=key, num_proc=num_proc(len(ds)),
                 desc="train: tokenizing")
    dropped = len(ds) - len(out)
    if len(out) == 0:
        raise InputError(f"all {len(ds)} training records are longer than train.max_length "
                         f"({max_length} tokens); raise it", key="train.max_length")
    if dropped:
        log.warning("train: dropped %d of %d records longer than %d tokens", dropped, len(ds),
                    max_length)
    return out, dropped
