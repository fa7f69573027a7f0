"""Deduplication of prompts and traces: reads texts by id, returns the ids to drop, each with
the id of the copy that is kept.

- exact: two samples of one prompt are duplicates when their reasoning and answer are equal
  after whitespace normalisation; the first by id is kept;
- near (MinHash, datasketch): word 5-gram shingles and 112 permutations (datatrove's
  defaults), LSH bands and rows chosen by datasketch for the threshold (or given: datatrove
  uses 14 x 8), candidate pairs confirmed by their estimated Jaccard similarity >=
  `threshold`; duplicates are grouped into clusters (union-find) and one copy per cluster is
  kept by the caller's rule (`keep`, a sort key: the smallest wins).
"""

from __future__ import annotations

import hashlib
import re
from typing import Callable

NUM_BANDS = 14
ROWS_PER_BAND = 8
NGRAM = 5
_WORD = re.compile(r"\w+")


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


def shingle_hashes(text: str, n: int = NGRAM):
    """64-bit hashes of the lower-cased word n-grams, as a numpy array: each word is hashed
    once (xxhash) and n consecutive word hashes are combined arithmetically, then mixed
    (splitmix64's finaliser); several times faster than joining and hashing every n-gram
    string (datasketch's default hashes each shingle with SHA-1 in Python). 64 bits, because
    32-bit shingle hashes collide often enough across a large index to fake an overlap. A text
    of fewer than n words is one shingle."""
    import numpy as np
    import xxhash

    words = _WORD.findall(text.lower())
    hash64 = xxhash.xxh64_intdigest
    h = np.fromiter([hash64(w.encode()) for w in words], dtype=np.uint64, count=len(words))
    if len(h) == 0:
        return h
    k = min(n, len(h))
    with np.errstate(over="ignore"):
        acc = h[: len(h) - k + 1].copy()
        for i in range(1, k):
            acc = acc * np.uint64(0x100000001B3) + h[i: len(h) - k + 1 + i]
        acc ^= acc >> np.uint64(30)
        acc *= np.uint64(0xBF58476D1CE4E5B9)
        acc ^= acc >> np.uint64(27)
        acc *= np.uint64(0x94D049BB133111EB)
        acc ^= acc >> np.uint64(31)
    return acc


def _identity(x):
    return int(x)


class Signer:
    """MinHash signatures (datasketch, affine64 scheme for 64-bit shingle hashes) with
    permutations generated once and shared (generating them per MinHash costs more than
    hashing a short document)."""

    def __init__(self, num_perm: int = NUM_BANDS * ROWS_PER_BAND, seed: int = 1,
                 ngram: int = NGRAM):
        from datasketch import MinHash

        self.num_perm, self.seed, self.ngram = num_perm, seed, ngram
        self._template = MinHash(num_perm=num_perm, seed=seed, hashfunc=_identity,
                                 scheme="affine64")

    def sign(self, text: str):
        return self.sign_hashes(shingle_hashes(text, self.ngram))

    def sign_hashes(self, hashes):
        """The signature of a set of shingle hashes (from `shingle_hashes`)."""
        from datasketch import LeanMinHash, MinHash

        m = MinHash(num_perm=self.num_perm, seed=self.seed, hashfunc=_identity,
                    permutations=self._template.permutations, scheme=self._template.scheme)
        m.update_batch(hashes.tolist())
        return LeanMinHash(m)


def lsh_index(threshold: float, num_perm: int, params: tuple[int, int] | None = None):
    """An LSH index; without `params`, datasketch picks the bands and rows that minimise
    false positives plus false negatives around `threshold`."""
    from datasketch import MinHashLSH

    return MinHashLSH(threshold=threshold, num_perm=num_perm, params=params)


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
