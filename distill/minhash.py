"""MinHash over word shingles, shared by deduplication (distill/filters/dedup.py) and
decontamination (distill/grading/decontaminate.py): 64-bit hashes of word n-grams, MinHash
signatures with shared permutations (datasketch), and the LSH index that finds candidates.

Defaults are datatrove's: word 5-grams and 112 permutations (14 bands x 8 rows).
"""

from __future__ import annotations

import re

NUM_BANDS = 14
ROWS_PER_BAND = 8
NGRAM = 5
_WORD = re.compile(r"\w+")


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

    def values(self, text: str):
        """`sign(text).hashvalues` (uint64 x num_perm) without building MinHash objects: the
        same affine64 arithmetic on the same permutations, a few times faster per text."""
        import numpy as np
        from datasketch.minhash import _fmix

        template = self._template
        h = shingle_hashes(text, self.ngram)
        if len(h) == 0:
            return template.hashvalues.copy()
        a, b = template.permutations
        with np.errstate(over="ignore"):
            hv = _fmix(h.reshape(-1, 1), 64)
            return np.minimum(template.hashvalues, (hv * a + b).min(axis=0))


def lsh_index(threshold: float, num_perm: int, params: tuple[int, int] | None = None):
    """An LSH index; without `params`, datasketch picks the bands and rows that minimise
    false positives plus false negatives around `threshold`."""
    from datasketch import MinHashLSH

    return MinHashLSH(threshold=threshold, num_perm=num_perm, params=params)
