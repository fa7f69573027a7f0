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


_Q = 0x9E3779B97F4A7C15          # odd: invertible modulo 2^64
_Q_INV = pow(_Q, -1, 1 << 64)
_POWERS: dict[str, object] = {}  # Q^i and Q^-i modulo 2^64, grown as longer texts come


def _word_table():
    """Per BMP code point: a word character for `re`'s `\\w` (alphanumeric or underscore)."""
    import numpy as np
    if "table" not in _POWERS:
        _POWERS["table"] = np.array([chr(c).isalnum() or c == 0x5F for c in range(0x10000)])
    return _POWERS["table"]


def _powers(n: int):
    """(Q^i, Q^-i) for i < n, modulo 2^64."""
    import numpy as np
    have = _POWERS.get("up")
    if have is None or len(have) < n:  # type: ignore[arg-type]
        size = max(n, 2 * len(have) if have is not None else 1 << 16)  # type: ignore[arg-type]
        with np.errstate(over="ignore"):
            for name, base in (("up", _Q), ("down", _Q_INV)):
                _POWERS[name] = np.concatenate([np.ones(1, dtype=np.uint64),
                                                np.cumprod(np.full(size - 1, base, dtype=np.uint64))])
    return _POWERS["up"], _POWERS["down"]


def _mix(x):
    """splitmix64's finaliser, in place on a uint64 array."""
    import numpy as np
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def word_hashes(text: str):
    """A 64-bit hash per lower-cased word (a `\\w+` run, as `re` finds them), in order, all in
    numpy: the words' code points are hashed as polynomials through prefix sums (modulo 2^64,
    with an odd base, so the sums can be shifted back), then mixed. About ten times faster than
    splitting into Python strings and hashing each."""
    import numpy as np

    cp = np.frombuffer(text.lower().encode("utf-32-le"), dtype=np.uint32)
    if len(cp) == 0:
        return np.zeros(0, dtype=np.uint64)
    word = _word_table()[np.minimum(cp, 0xFFFF)]
    astral = np.flatnonzero(cp > 0xFFFF)
    for i in astral.tolist():               # beyond the BMP (rare): ask Python
        c = chr(int(cp[i]))
        word[i] = c.isalnum() or c == "_"
    edges = np.flatnonzero(np.diff(np.r_[False, word, False].astype(np.int8)))
    starts, ends = edges[0::2], edges[1::2]          # words are cp[starts[k]:ends[k]]
    if len(starts) == 0:
        return np.zeros(0, dtype=np.uint64)
    up, down = _powers(len(cp) + 1)
    with np.errstate(over="ignore"):
        prefix = np.concatenate([[np.uint64(0)], np.cumsum(cp.astype(np.uint64) * down[: len(cp)])])
        h = (prefix[ends] - prefix[starts]) * up[ends - 1]  # sum of cp[j] * Q^(end-1-j)
        h += (ends - starts).astype(np.uint64)             # the length, so "a" != "\0a"
        return _mix(h)


def shingle_hashes(text: str, n: int = NGRAM):
    """64-bit hashes of the lower-cased word n-grams, as a numpy array: each word is hashed
    once (`word_hashes`) and n consecutive word hashes are combined arithmetically, then mixed
    (splitmix64's finaliser); many times faster than joining and hashing every n-gram string
    (datasketch's default hashes each shingle with SHA-1 in Python). 64 bits, because 32-bit
    shingle hashes collide often enough across a large index to fake an overlap. A text of
    fewer than n words is one shingle."""
    import numpy as np

    h = word_hashes(text)
    if len(h) == 0:
        return h
    k = min(n, len(h))
    with np.errstate(over="ignore"):
        acc = h[: len(h) - k + 1].copy()
        for i in range(1, k):
            acc = acc * np.uint64(0x100000001B3) + h[i: len(h) - k + 1 + i]
        return _mix(acc)


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
