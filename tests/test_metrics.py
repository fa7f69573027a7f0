"""Scores, intervals, pass@k and retention on values worked out by hand."""

import math

import pytest

from distill.eval import metrics as m


def test_wilson_8_of_10_matches_the_textbook_interval():
    low, high = m.wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)


def test_wilson_is_not_degenerate_at_the_edges():
    low, high = m.wilson_interval(10, 10)
    assert high == pytest.approx(1.0) and low == pytest.approx(0.7225, abs=1e-4)
    low, high = m.wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)


def test_question_scores_are_sample_means():
    assert m.question_scores([[True, False, True, True], [False]]) == [0.75, 0.0]
    with pytest.raises(ValueError):
        m.question_scores([[]])


def test_one_sample_per_question_gives_wilson_on_questions():
    est = m.score_interval([[True]] * 8 + [[False]] * 2)
    assert est.value == pytest.approx(0.8) and est.n == 10
    assert (est.ci_low, est.ci_high) == pytest.approx(m.wilson_interval(8, 10))


def test_repeated_identical_samples_add_no_information():
    # Four copies of the same verdict per question: still 10 questions' worth of evidence.
    est = m.score_interval([[True] * 4] * 8 + [[False] * 4] * 2)
    assert (est.ci_low, est.ci_high) == pytest.approx(m.wilson_interval(8, 10))


def test_independent_samples_narrow_the_interval():
    # Every question at exactly 1/2 over 4 samples: no clustering, 40 effective samples.
    est = m.score_interval([[True, False, True, False]] * 10)
    assert est.value == 0.5
    assert (est.ci_low, est.ci_high) == pytest.approx(m.wilson_interval(20, 40))
    assert est.ci_high - est.ci_low < m.wilson_interval(5, 10)[1] - m.wilson_interval(5, 10)[0]


def test_all_correct_keeps_a_non_zero_width_interval():
    est = m.score_interval([[True, True]] * 5)
    assert est.value == 1.0 and est.ci_high == pytest.approx(1.0) and est.ci_low < 0.7


@pytest.mark.parametrize("n,c,k,expected", [
    (5, 2, 1, 0.4),            # pass@1 = c/n
    (5, 2, 2, 1 - 3 / 10),     # 1 - C(3,2)/C(5,2)
    (10, 3, 5, 1 - math.comb(7, 5) / math.comb(10, 5)),
    (3, 2, 2, 1.0),            # fewer wrong samples than k: always passes
    (10, 0, 3, 0.0),
    (200, 13, 100, 1 - math.comb(187, 100) / math.comb(200, 100)),
])
def test_pass_at_k_closed_forms(n, c, k, expected):
    assert m.pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_pass_at_k_needs_k_samples():
    with pytest.raises(ValueError):
        m.pass_at_k(2, 1, 3)
    assert m.mean_pass_at_k([[True, False], [False, False]], 1) == pytest.approx(0.25)
    assert m.mean_pass_at_k([[True, False], [False, False]], 2) == pytest.approx(0.5)


def test_retention_of_equal_models_is_exactly_one():
    q = [1.0, 0.0, 0.5, 1.0, 0.25]
    est = m.retention(q, q)
    assert (est.value, est.ci_low, est.ci_high) == (1.0, 1.0, 1.0)


def test_retention_is_a_ratio_of_means_with_an_interval_around_it():
    teacher = [1.0] * 20
    student = [1.0] * 10 + [0.0] * 10
    est = m.retention(student, teacher)
    assert est.value == pytest.approx(0.5)
    assert 0.25 < est.ci_low < 0.5 < est.ci_high < 0.75
    assert m.retention([1.0, 0.0], [0.0, 0.0]) is None  # teacher scored nothing


def test_paired_difference_detects_a_clear_gap_and_not_a_tie():
    a = [1.0] * 18 + [0.0] * 2
    b = [0.0] * 18 + [1.0] * 2
    gap = m.paired_difference(a, b)
    assert gap.value == pytest.approx(0.8) and gap.ci_low > 0
    tie = m.paired_difference([1.0, 0.0] * 10, [0.0, 1.0] * 10)
    assert tie.value == 0.0 and tie.ci_low < 0 < tie.ci_high
    with pytest.raises(ValueError):
        m.paired_difference([1.0], [1.0, 0.0])


def test_majority_vote_counts_the_correct_class_once_and_splits_ties():
    # Correct answers spelled differently are one class: 2 correct vs 1 "7".
    assert m.majority_vote([(True, "1/2"), (True, "0.5"), (False, "7")]) == 1.0
    assert m.majority_vote([(False, "7"), (False, " 7"), (True, "3")]) == 0.0
    # A tie between the correct class and one wrong class scores one half.
    assert m.majority_vote([(True, "3"), (False, "7")]) == 0.5
    # Samples without an answer do not vote.
    assert m.majority_vote([(True, "3"), (False, None), (False, None)]) == 1.0
    assert m.majority_vote([(False, None)]) == 0.0
    # maj@k looks at the first k samples only.
    assert m.majority_vote([(True, "3"), (False, "7"), (False, "7")], k=1) == 1.0
    with pytest.raises(ValueError):
        m.majority_vote([(True, "3")], k=2)


def test_mcnemar_exact_p_values():
    assert m.mcnemar_exact(0, 0) == 1.0
    assert m.mcnemar_exact(5, 0) == pytest.approx(2 / 32)      # 2 * 0.5**5
    assert m.mcnemar_exact(3, 3) == 1.0
    assert m.mcnemar_exact(10, 2) == pytest.approx(2 * sum(math.comb(12, i) for i in range(3)) / 2 ** 12)


def test_compare_names_the_questions_that_flipped():
    a = [1.0, 1.0, 0.0, 0.75, 0.25]
    b = [1.0, 0.0, 1.0, 0.25, 0.25]
    c = m.compare(a, b, ["q0", "q1", "q2", "q3", "q4"])
    assert c.gained == ["q1", "q3"] and c.lost == ["q2"]
    assert c.difference.value == pytest.approx(0.1) and c.difference.n == 5
    assert c.p_value == pytest.approx(1.0)


def test_clustered_interval_keeps_its_coverage_where_the_naive_one_does_not():
    """Questions of varying difficulty, 8 samples each: the interval that counts questions
    (clustered) covers the true mean about 95% of the time; a Wilson interval over all
    samples, as if they were independent, is too narrow."""
    import numpy as np

    rng = np.random.default_rng(0)
    runs, covered, naive_covered = 300, 0, 0
    for _ in range(runs):
        p = rng.beta(0.5, 0.5, size=60)       # true per-question pass rates, mean 0.5
        verdicts = [list(rng.random(8) < pi) for pi in p]
        est = m.score_interval(verdicts)
        covered += est.ci_low <= 0.5 <= est.ci_high
        k = sum(map(sum, verdicts))
        low, high = m.wilson_interval(k, 60 * 8)
        naive_covered += low <= 0.5 <= high
    assert covered / runs >= 0.92
    assert naive_covered / runs < 0.75
