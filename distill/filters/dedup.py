"""Deduplication of prompts and traces: reads texts by id, returns the ids to drop, each with
the id of the copy that is kept.

- exact: two samples of one prompt are duplicates when their reasoning and answer are equal
  after whitespace normalisation; the first by id is kept;
- near (MinHash, datasketch; signatures from distill/minhash.py): word 5-gram shingles and
  112 permutations (datatrove's defaults), LSH bands and rows chosen by datasketch for the
  threshold (or given: datatrove uses 14 x 8), candidate pairs confirmed by their estimated
  Jaccard similarity >= `threshold`; duplicates are grouped into clusters (union-find) and one
  copy per cluster is kept by the caller's rule (`keep`, a sort key: the smallest wins).
"""

from __future__ import annotations

import hashlib
from typing import Callable

from distill.minhash import Signer, lsh_index


def trace_key(gen: dict) -> str:
    text = " ".join((gen.get("reasoning") or "").split()) + "\x00" + \
        " ".join((gen.get("content") or "").split())
    return hashlib.sha256(f"{gen.get('prompt_id')}\x00{text}".encode()).hexdigest()


def duplicates(gens: list[dict]) -> dict[str, str]:
    """Exact duplicates: maps each duplicate's id to the id of the record it duplicates."""
    first: dict[str, str] = {}
    dups: dict[str, str] = {}
    for gen in sorted(gens, key=lambda g: g["id"]):
        key = trace_key(gen)
        if key in first:
            dups[gen["id"]] = first[key]
        else:
            first[key] = gen["id"]
    return dups


def near_duplicates(texts: dict[str, str], *, threshold: float = 0.8,
                    keep: Callable[[str], object] | None = None,
                    signer: Signer | None = None,
                    params: tuple[int, int] | None = None) -> dict[str, str]:
    """Near duplicates among `texts` (id -> text): maps each dropped id to the kept id of its
    cluster. `keep(id)` is the sort key that picks the kept copy (default: the id)."""
    signer = signer or Signer()
    keep = keep or (lambda i: i)
    lsh = lsh_index(threshold, signer.num_perm, params)
    sigs = {}
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for key in sorted(texts):
        sig = signer.sign(texts[key])
        sigs[key] = sig
        parent[key] = key
        for other in lsh.query(sig):
            if sig.jaccard(sigs[other]) >= threshold:
                a, b = root(key), root(other)
                if a != b:
                    parent[a] = b
        lsh.insert(key, sig, check_duplication=False)
    clusters: dict[str, list[str]] = {}
    for key in texts:
        clusters.setdefault(root(key), []).append(key)
    dropped = {}
    for members in clusters.values():
        if len(members) > 1:
            winner = min(members, key=lambda m: (keep(m), m))
            dropped.update({m: winner for m in members if m != winner})
    return dropped
