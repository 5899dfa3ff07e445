"""Basket agreement measures: properties over random multisets, plus worked examples."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retail_reid.pipeline.basket import compare, dice, jaccard, overlap, tversky

SKUS = st.sampled_from(["Kiwi", "Lime", "Lemon", "Avocado", "Banana"])
baskets = st.lists(SKUS, max_size=12).map(Counter)
weights = st.floats(min_value=0, max_value=10, allow_nan=False)
SYMMETRIC = (jaccard, dice, overlap)


@given(baskets, baskets, weights, weights)
def test_all_measures_in_unit_range(a, b, alpha, beta):
    for value in (jaccard(a, b), dice(a, b), overlap(a, b), tversky(a, b, alpha, beta)):
        assert 0.0 <= value <= 1.0


@given(baskets, baskets)
def test_jaccard_dice_overlap_are_symmetric(a, b):
    for f in SYMMETRIC:
        assert f(a, b) == f(b, a)


@given(baskets, baskets, weights, weights)
def test_tversky_swapping_baskets_swaps_weights(a, b, alpha, beta):
    assert tversky(a, b, alpha, beta) == pytest.approx(tversky(b, a, beta, alpha))


@given(baskets, baskets)
def test_tversky_special_cases(a, b):
    assert tversky(a, b, 1.0, 1.0) == pytest.approx(jaccard(a, b))
    assert tversky(a, b, 0.5, 0.5) == pytest.approx(dice(a, b))


@given(baskets)
def test_identical_baskets_agree_fully(a):
    for f in SYMMETRIC:
        assert f(a, a) == 1.0
    assert tversky(a, a, 3.0, 0.1) == 1.0


@given(baskets, baskets)
def test_ordering_between_measures(a, b):
    # Jaccard <= Dice <= overlap for any pair of multisets.
    assert jaccard(a, b) <= dice(a, b) + 1e-12 and dice(a, b) <= overlap(a, b) + 1e-12


@given(baskets.filter(lambda c: sum(c.values()) > 0))
def test_empty_against_non_empty_is_zero(a):
    for f in SYMMETRIC:
        assert f(a, Counter()) == 0.0 and f(Counter(), a) == 0.0
    assert tversky(a, Counter(), 0.0, 0.0) == 0.0


def test_both_empty_agree_fully():
    assert compare(Counter(), Counter()) == compare(Counter(a=1), Counter(a=1))
    assert compare(Counter(), Counter()).jaccard == 1.0


def test_multiset_counts_matter():
    seen, scanned = Counter(Kiwi=3, Lime=1), Counter(Kiwi=2, Lemon=1)
    # |common| = 2, seen only = 2 (a kiwi, the lime), scanned only = 1 (the lemon)
    assert jaccard(seen, scanned) == pytest.approx(2 / 5)
    assert dice(seen, scanned) == pytest.approx(4 / 7)
    assert overlap(seen, scanned) == pytest.approx(2 / 3)
    assert tversky(seen, scanned, 1.0, 0.5) == pytest.approx(2 / (2 + 2 + 0.5))


def test_seen_not_scanned_weighs_more_with_default_weights():
    # One unscanned item must lower agreement more than one unseen scan.
    base = Counter(Kiwi=2)
    missed_scan = tversky(base + Counter(Lime=1), base)
    unseen_scan = tversky(base, base + Counter(Lime=1))
    assert missed_scan < unseen_scan


def test_zero_counts_are_ignored():
    assert jaccard(Counter(Kiwi=1, Lime=0), Counter(Kiwi=1)) == 1.0


@pytest.mark.parametrize("bad", [Counter(Kiwi=-1), Counter(Kiwi=0.5), {"Kiwi": True}])
def test_bad_counts_are_refused(bad):
    with pytest.raises(ValueError, match="Kiwi"):
        jaccard(bad, Counter())


@pytest.mark.parametrize("alpha, beta", [(-0.1, 1.0), (1.0, float("nan")), (float("inf"), 1.0)])
def test_bad_tversky_weights_are_refused(alpha, beta):
    with pytest.raises(ValueError, match="Tversky"):
        tversky(Counter(a=1), Counter(a=1), alpha, beta)
