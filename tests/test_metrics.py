"""Retrieval and verification metrics against values computed by hand on tiny examples."""

import numpy as np
import pytest

from retail_reid.models.calibration import Calibration, fit_calibration
from retail_reid.models.metrics import (
    gallery_query,
    reality_check,
    roc_auc,
    threshold_at_far,
    verification,
    verification_scores,
)


def on_circle(degrees):
    r = np.deg2rad(np.asarray(degrees, np.float64))
    return np.stack([np.cos(r), np.sin(r)], 1).astype(np.float32)


def test_reality_check_matches_hand_computation():
    # A at 0, 10, 100 degrees; B at 25, 90 degrees (worked out in the comments of each query)
    emb = on_circle([0, 10, 100, 25, 90])
    labels = np.array(["A", "A", "A", "B", "B"])
    # a0: [a1 hit, b0 miss]; a1: [a0 hit, b0 miss]; a2: [b1, b0] misses; b0: [a1] miss; b1: [a2] miss
    m = reality_check(emb, labels)
    assert m["precision_at_1"] == pytest.approx(2 / 5)
    assert m["r_precision"] == pytest.approx((0.5 + 0.5) / 5)
    assert m["map_at_r"] == pytest.approx((0.5 + 0.5) / 5)


def test_map_at_r_rewards_early_hits_more_than_r_precision():
    # A at 0, 20, 30 degrees (R = 2 each); C at 8 degrees is a singleton, so never a query.
    # A0: [C miss, A20 hit] -> R-prec 1/2, MAP@R (1/2)/2; A20: [A30 hit, C miss]; A30: [A20 hit, C miss]
    m = reality_check(on_circle([0, 20, 30, 8]), np.array(["A", "A", "A", "C"]))
    assert m["precision_at_1"] == pytest.approx(2 / 3)
    assert m["r_precision"] == pytest.approx(1 / 2)
    assert m["map_at_r"] == pytest.approx((0.25 + 0.5 + 0.5) / 3)


def test_reality_check_agrees_with_pytorch_metric_learning():
    pytest.importorskip("torch")
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 16))
    labels = np.repeat(np.arange(6), 7)
    emb = centres[labels] + rng.normal(scale=0.9, size=(len(labels), 16))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    ours = reality_check(emb, labels)
    import torch

    calc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"), k="max_bin_count"
    )
    theirs = calc.get_accuracy(torch.from_numpy(emb), torch.from_numpy(labels), ref_includes_query=True)
    assert ours["precision_at_1"] == pytest.approx(theirs["precision_at_1"], abs=1e-6)
    assert ours["r_precision"] == pytest.approx(theirs["r_precision"], abs=1e-6)
    assert ours["map_at_r"] == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-6)


def test_gallery_query_recall_ranks_skus_not_references():
    gallery = on_circle([0, 5, 10, 90])  # X has three references near 0 deg, Y one at 90
    glabels = np.array(["X", "X", "X", "Y"])
    queries = on_circle([2, 80, 60])  # the X query at 60 deg is nearer Y (30 deg) than X (50 deg)
    qlabels = np.array(["X", "Y", "X"])
    m = gallery_query(gallery, glabels, queries, qlabels, ks=(1, 2))
    assert m["recall_at_1"] == pytest.approx(2 / 3)
    assert m["recall_at_2"] == 1.0


def test_verification_scores_split_own_and_other_skus():
    gallery = on_circle([0, 90])
    genuine, impostor = verification_scores(gallery, np.array(["X", "Y"]), on_circle([0, 60]), np.array(["X", "Z"]))
    assert genuine.tolist() == pytest.approx([1.0])  # Z has no references: impostor scores only
    assert sorted(impostor.tolist()) == pytest.approx(
        sorted([0.0, np.cos(np.deg2rad(60)), np.cos(np.deg2rad(30))]), abs=1e-6
    )


def test_roc_auc_eer_and_tar_at_far_by_hand():
    genuine = np.array([0.9, 0.8, 0.7], np.float32)
    impostor = np.array([0.1, 0.75, 0.2, 0.3], np.float32)
    assert roc_auc(genuine, impostor) == pytest.approx(11 / 12)
    t = threshold_at_far(impostor, 0.25)
    assert (impostor >= t).mean() == pytest.approx(0.25) and t > 0.3
    v = verification(genuine, impostor, fars=(0.25,))
    assert v["tar_at_far_0.25"] == 1.0
    assert 0 <= v["eer"] <= 1 / 3


def test_roc_auc_counts_ties_as_half():
    assert roc_auc(np.array([0.5]), np.array([0.5])) == pytest.approx(0.5)


def test_calibration_is_monotone_and_separates_classes():
    rng = np.random.default_rng(1)
    genuine, impostor = rng.normal(0.8, 0.05, 500), rng.normal(0.4, 0.1, 5000)
    cal = fit_calibration(genuine, impostor, {"far_0.01": 0.65})
    c = cal.confidence(np.array([0.2, 0.5, 0.6, 0.8, 0.95]))
    assert np.all(np.diff(c) > 0) and c[0] < 0.05 and c[-1] > 0.95
    assert Calibration.from_dict(cal.to_dict()) == cal and cal.scoring == "nearest"
    centroid = fit_calibration(genuine, impostor, {}, scoring="centroid")
    assert Calibration.from_dict(centroid.to_dict()).scoring == "centroid"
    assert Calibration.from_dict({"a": 1.0, "b": 0.0}).scoring == "nearest"  # written before scorings had names


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"a": "x", "b": 0},
        {"a": -1.0, "b": 0.0},
        {"a": float("nan"), "b": 0},
        {"a": 1.0, "b": 0.0, "scoring": "median"},
        [1, 2],
    ],
)
def test_calibration_rejects_bad_metadata(bad):
    with pytest.raises(ValueError, match="calibration"):
        Calibration.from_dict(bad)


def test_centroid_scoring_ranks_skus_by_their_prototype():
    # X's references at 0 and 60 degrees average to 30; Y's one reference sits at 35
    gallery, labels = on_circle([0, 60, 35]), np.array(["X", "X", "Y"])
    query = on_circle([29])
    assert gallery_query(gallery, labels, query, np.array(["X"]), ks=(1,))["recall_at_1"] == 0.0
    assert gallery_query(gallery, labels, query, np.array(["X"]), ks=(1,), scoring="centroid")["recall_at_1"] == 1.0
    with pytest.raises(ValueError, match="scoring"):
        gallery_query(gallery, labels, query, np.array(["X"]), scoring="median")
