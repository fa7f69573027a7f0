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
