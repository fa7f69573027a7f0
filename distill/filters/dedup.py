"""Exact deduplication of traces: reads generation records, returns the ids of duplicates.

Two samples of one prompt are duplicates when their reasoning and answer are equal after
whitespace normalisation; the first by id is kept, so the choice is the same on every run.
"""

from __future__ import annotations

import hashlib


def trace_key(gen: dict) -> str:
    text = " ".join((gen.get("reasoning") or "").split()) + "\x00" + \
        " ".join((gen.get("content") or "").split())
    return hashlib.sha256(f"{gen.get('prompt_id')}\x00{text}".encode()).hexdigest()


def duplicates(gens: list[dict]) -> dict[str, str]:
    """Maps each duplicate's id to the id of the record it duplicates."""
    first: dict[str, str] = {}
    dups: dict[str, str] = {}
    for gen in sorted(gens, key=lambda g: g["id"]):
        key = trace_key(gen)
        if key in first:
            dups[gen["id"]] = first[key]
        else:
            first[key] = gen["id"]
    return dups
