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

from distill.minhash import Signer, lsh_index, shingle_hashes


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


# -- near duplicates at scale: signatures and band hashes on disk, clusters from sorted bands

def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """The bands and rows datasketch's MinHashLSH picks for `threshold` (the least weighted
    sum of false positives and negatives), so both paths find the same candidates."""
    from datasketch.lsh import _optimal_param
    return _optimal_param(threshold, num_perm, 0.5, 0.5)


class SignatureFile:
    """MinHash signatures (uint64 x num_perm, the values datasketch's affine64 MinHash
    computes) appended to `<path>.sig`, and one hash per LSH band appended to `<path>.band<k>`.
    Rows are numbered in append order. Nothing of a row stays in memory: a million traces
    cost a million rows on disk (896 bytes each with 112 permutations) and a few megabytes in
    memory while the bands are sorted one at a time (`pairs`)."""

    def __init__(self, path, threshold: float, signer: Signer | None = None):
        import numpy as np

        self.path, self.threshold = str(path), threshold
        self.signer = signer or Signer()
        self.bands, self.rows = lsh_params(threshold, self.signer.num_perm)
        self._sig = open(self.path + ".sig", "wb")
        self._band = [open(f"{self.path}.band{k}", "wb") for k in range(self.bands)]
        self.count = 0
        self._np = np

    def signature(self, text: str):
        return self.signer.values(text)

    def add(self, sigs) -> None:
        """Appends signatures (an array of rows)."""
        np = self._np
        sigs = np.ascontiguousarray(sigs, dtype=np.uint64).reshape(-1, self.signer.num_perm)
        self._sig.write(sigs.tobytes())
        used = sigs[:, : self.bands * self.rows].reshape(len(sigs), self.bands, self.rows)
        with np.errstate(over="ignore"):
            acc = used[:, :, 0].copy()
            for r in range(1, self.rows):
                acc = acc * np.uint64(0x100000001B3) + used[:, :, r]
            acc ^= acc >> np.uint64(31)
            acc *= np.uint64(0x94D049BB133111EB)
            acc ^= acc >> np.uint64(29)
        for k in range(self.bands):
            self._band[k].write(np.ascontiguousarray(acc[:, k]).tobytes())
        self.count += len(sigs)

    def close(self) -> None:
        for f in [self._sig, *self._band]:
            f.close()

    def clusters(self, members) -> dict[int, list[int]]:
        """Near-duplicate clusters among the rows in `members` (an array of row numbers): rows
        that share a band and whose estimated Jaccard similarity is >= threshold are linked,
        linked rows form a cluster (union-find). Returns root -> its rows, for clusters of two
        or more."""
        np = self._np
        self.close()
        members = np.asarray(members, dtype=np.int64)
        if len(members) < 2:
            return {}
        pairs = self._candidates(members)
        if len(pairs) == 0:
            return {}
        pairs = self._confirmed(pairs)
        parent: dict[int, int] = {}

        def root(x: int) -> int:
            parent.setdefault(x, x)
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for i, j in pairs.tolist():
            a, b = root(i), root(j)
            if a != b:
                parent[a] = b
        out: dict[int, list[int]] = {}
        for x in parent:
            out.setdefault(root(x), []).append(x)
        return {k: sorted(v) for k, v in out.items() if len(v) > 1}

    def _candidates(self, members):
        """Pairs of member rows that share at least one band, each pair once (i < j)."""
        np = self._np
        found = []
        for k in range(self.bands):
            h = np.fromfile(f"{self.path}.band{k}", dtype=np.uint64)[members]
            order = np.argsort(h, kind="stable")
            hs = h[order]
            starts = np.r_[0, np.flatnonzero(hs[1:] != hs[:-1]) + 1]
            sizes = np.diff(np.r_[starts, len(hs)])
            for s, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist()):
                rows = members[order[s: s + size]]
                i, j = np.triu_indices(size, 1)
                found.append(np.stack([np.minimum(rows[i], rows[j]),
                                       np.maximum(rows[i], rows[j])], axis=1))
        if not found:
            return np.zeros((0, 2), dtype=np.int64)
        return np.unique(np.concatenate(found), axis=0)

    def _confirmed(self, pairs):
        """The candidate pairs whose estimated Jaccard similarity reaches the threshold; the
        signatures of the rows involved are read from disk by offset."""
        import os
        np = self._np
        width = self.signer.num_perm * 8
        rows = np.unique(pairs)
        sigs = np.empty((len(rows), self.signer.num_perm), dtype=np.uint64)
        fd = os.open(self.path + ".sig", os.O_RDONLY)
        try:
            for n, r in enumerate(rows.tolist()):
                sigs[n] = np.frombuffer(os.pread(fd, width, r * width), dtype=np.uint64)
        finally:
            os.close(fd)
        a = sigs[np.searchsorted(rows, pairs[:, 0])]
        b = sigs[np.searchsorted(rows, pairs[:, 1])]
        jaccard = (a == b).sum(axis=1) / self.signer.num_perm
        return pairs[jaccard >= self.threshold]
