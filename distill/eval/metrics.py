"""Scores from per-sample verdicts: pass@1 and pass@k, 95% intervals, retention, paired deltas.

Pure functions over plain lists; no I/O. A question's score is the mean of its samples' verdicts
(pass@1); a benchmark's or a category's score is the mean over its questions, so a question
with more samples does not weigh more.

Intervals, and why:
- `score_interval` (a single model's score): Wilson on the number of questions when each has
  one sample. With K > 1 samples per question the samples of a question are correlated (same
  difficulty), so the binomial count over all samples overstates the information; we use
  Wilson with Kish's effective sample size n_eff = Q * p(1-p) / var(question means), which is
  exactly Q at K = 1 (the variance of 0/1 values is p(1-p)) and at most Q*K when samples are
  independent. We prefer it to a cluster bootstrap or a t-interval over question means
  because those two collapse to zero width when every question has the same mean (all right
  or all wrong: common on toy tasks and on AIME-sized benchmarks) and run too narrow at tens
  of questions, where Wilson keeps its coverage (Bowyer et al., arXiv 2503.01747).
- `bootstrap_mean` (pass@k, whose per-question values are not 0/1 counts): a bootstrap over
  questions; it shares the bootstrap's narrowness on small sets, and pass@k is reported beside
  pass@1, not instead of it.
- `retention` and `paired_difference` (two models on the same questions): a paired bootstrap
  over questions (resampling question indices, both models together) of the ratio / the
  difference of means. Pairing removes the shared question difficulty, which is most of the
  variance; a ratio has no closed-form interval that respects [0, inf). Seeded, so a report
  is reproducible.
- `compare` adds the questions that flipped (solved by one model and not the other) and an
  exact McNemar test on them, the test the literature uses for paired benchmark verdicts.

maj@k (`majority_vote`) votes over the extracted answers of the first k samples; samples
graded correct all agree with the gold answer, so they form one class whatever their spelling.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    value: float
    ci_low: float
    ci_high: float
    n: int  # questions


def question_scores(verdicts: Sequence[Sequence[bool]]) -> list[float]:
    """pass@1 per question: the mean of its samples' verdicts."""
    if any(len(v) == 0 for v in verdicts):
        raise ValueError("every question needs at least one sample")
    return [sum(map(bool, v)) / len(v) for v in verdicts]


def wilson_interval(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; `n` may be an effective (real) size."""
    if n <= 0:
        raise ValueError("n must be positive")
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def score_interval(verdicts: Sequence[Sequence[bool]], z: float = Z95) -> Estimate:
    """Mean pass@1 over questions with a 95% interval (see the module docstring for the method)."""
    q = np.asarray(question_scores(verdicts), dtype=float)
    n_q = len(q)
    if n_q == 0:
        raise ValueError("no questions to score")
    p = float(q.mean())
    total = sum(len(v) for v in verdicts)
    var = float(q.var())  # ddof=0: equals p(1-p) when each question has one 0/1 sample
    if p in (0.0, 1.0):
        # All right or all wrong: no spread to estimate the design effect from. Assume the least
        # information, one effective sample per question (Wilson on questions).
        n_eff = float(n_q)
    elif var == 0.0:
        n_eff = float(total)  # every question at the same mean: nothing clusters
    else:
        n_eff = min(float(total), max(float(n_q), n_q * p * (1 - p) / var))
    low, high = wilson_interval(p * n_eff, n_eff, z)
    return Estimate(p, low, high, n_q)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one question with n samples of which c are correct:
    1 - C(n-c, k) / C(n, k), computed as a product to stay exact for large n."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if k < 1 or k > n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n samples (n={n})")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(verdicts: Sequence[Sequence[bool]], k: int) -> float:
    """pass@k averaged over questions; defined only when every question has at least k samples."""
    if not verdicts:
        raise ValueError("no questions to score")
    return float(np.mean([pass_at_k(len(v), sum(map(bool, v)), k) for v in verdicts]))


def bootstrap_mean(values: Sequence[float], *, seed: int = 0,
                   resamples: int = BOOTSTRAP_RESAMPLES) -> Estimate:
    """Mean over questions with a bootstrap 95% percentile interval, for per-question scores
    that are not proportions (pass@k estimates)."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError("no questions to score")
    means = x[_paired_resamples(len(x), seed, resamples)].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Estimate(float(x.mean()), float(low), float(high), len(x))


def _paired_resamples(n_q: int, seed: int, resamples: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_q, size=(resamples, n_q))


def retention(student: Sequence[float], teacher: Sequence[float], *, seed: int = 0,
              resamples: int = BOOTSTRAP_RESAMPLES) -> Estimate | None:
    """Student score / teacher score on the same questions (per-question scores, same order),
    with a paired-bootstrap 95% percentile interval. None when the teacher scores 0."""
    s, t = np.asarray(student, dtype=float), np.asarray(teacher, dtype=float)
    if s.shape != t.shape or s.ndim != 1 or len(s) == 0:
        raise ValueError("retention needs the same non-empty list of questions for both models")
    if t.mean() == 0:
        return None
    idx = _paired_resamples(len(s), seed, resamples)
    num, den = s[idx].mean(axis=1), t[idx].mean(axis=1)
    ratios = num[den > 0] / den[den > 0]  # a resample where the teacher got nothing has no ratio
    low, high = np.percentile(ratios, [2.5, 97.5])
    return Estimate(float(s.mean() / t.mean()), float(low), float(high), len(s))


def paired_difference(a: Sequence[float], b: Sequence[float], *, seed: int = 0,
                      resamples: int = BOOTSTRAP_RESAMPLES) -> Estimate:
    """Mean of per-question differences a - b with a paired-bootstrap 95% percentile interval.
    An interval that excludes 0 means the two models differ at the 5% level."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) == 0:
        raise ValueError("a paired difference needs the same non-empty list of questions")
    d = x - y
    means = d[_paired_resamples(len(d), seed, resamples)].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Estimate(float(d.mean()), float(low), float(high), len(d))


def majority_vote(samples: Sequence[tuple[bool, str | None]], k: int | None = None) -> float:
    """maj@k for one question from its samples' (correct, extracted answer), first k samples.

    Correct samples are one class (each equals the gold answer); wrong ones are grouped by
    their answer with whitespace removed; samples without an answer do not vote. A tie for
    the most votes between the correct class and m - 1 wrong ones scores 1/m, the expectation
    of a random tie-break, rather than depending on sample order."""
    if k is not None:
        if k < 1 or k > len(samples):
            raise ValueError(f"maj@{k} needs 1 <= k <= n samples (n={len(samples)})")
        samples = samples[:k]
    right = sum(1 for ok, _ in samples if ok)
    wrong = Counter("".join(a.split()) for ok, a in samples if not ok and a is not None)
    top = max([right, *wrong.values()])
    if right == 0 or right < top:
        return 0.0
    return 1.0 / (1 + sum(1 for c in wrong.values() if c == top))


def solved(score: float) -> bool:
    """A question counts as solved when at least half of its samples are correct."""
    return score >= 0.5


def mcnemar_exact(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value: under no difference, each flipped question is a fair
    coin between `gained` and `lost`."""
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(gained, lost) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class Comparison:
    """Model a against model b on the same questions."""
    difference: Estimate          # mean of per-question a - b, paired-bootstrap interval
    gained: list[str] = field(default_factory=list)   # solved by a, not by b
    lost: list[str] = field(default_factory=list)     # solved by b, not by a
    p_value: float = 1.0          # exact McNemar on the flips


def compare(a: Sequence[float], b: Sequence[float], task_ids: Sequence[str], *, seed: int = 0,
            resamples: int = BOOTSTRAP_RESAMPLES) -> Comparison:
    """Paired comparison of two models' per-question scores (same questions, same order)."""
    if len(task_ids) != len(a):
        raise ValueError("one task id per question")
    diff = paired_difference(a, b, seed=seed, resamples=resamples)
    gained = [t for t, x, y in zip(task_ids, a, b) if solved(x) and not solved(y)]
    lost = [t for t, x, y in zip(task_ids, a, b) if solved(y) and not solved(x)]
    return Comparison(diff, gained, lost, mcnemar_exact(len(gained), len(lost)))
