"""Class-disjoint evaluation (issue 11): the folds, the lane-camera and hand views, the per-fold
report and its pooling, and a fold-trained run (marked train)."""

import json

import numpy as np
import pytest
from grocery_fixtures import SAMPLE, grocery_root

from retail_reid.images import read_image
from retail_reid.models.datasets import DataError, GroceryData
from retail_reid.models.evaluate import Embedded
from retail_reid.models.metrics import map_at_r
from retail_reid.models.research.disjoint import Embeddings, Query, fold_report, pool
from retail_reid.models.research.folds import coarse_kinds, make_folds, read_folds
from retail_reid.models.views import SKIN_RGB, hand_occlusion, lane_camera


def test_shipped_folds_are_the_rule_applied_to_the_81_skus():
    folds = read_folds()
    assert sorted(s for f in folds.folds for s in f) == sorted(folds.coarse) and len(folds.coarse) == 81
    assert make_folds(folds.coarse, k=len(folds.folds)) == folds  # stable: regenerating gives the same file
    assert max(map(len, folds.folds)) - min(map(len, folds.folds)) <= 1
    for kind in set(folds.coarse.values()):  # look-alikes are held out together
        assert len({i for i, f in enumerate(folds.folds) for s in f if folds.coarse[s] == kind}) == 1
    assert folds.trained(0) | folds.held_out(0) == set(folds.coarse) and not folds.trained(0) & folds.held_out(0)
    with pytest.raises(DataError, match="fold 4 does not exist"):
        folds.held_out(4)


def test_folds_do_not_depend_on_the_order_classes_are_listed():
    coarse = coarse_kinds(SAMPLE / "classes.csv")
    shuffled = dict(reversed(list(coarse.items())))
    assert make_folds(coarse, 3) == make_folds(shuffled, 3)
    assert {"Granny-Smith", "Pink-Lady"} <= set(next(f for f in make_folds(coarse, 3).folds if "Pink-Lady" in f))
    with pytest.raises(DataError, match="cannot make 40 folds"):
        make_folds(coarse, 40)


def test_a_folds_file_naming_a_sku_twice_is_refused(tmp_path):
    bad = tmp_path / "folds.json"
    bad.write_text(json.dumps({"coarse": {"A": "x", "B": "y"}, "folds": [["A"], ["A", "B"]]}))
    with pytest.raises(DataError, match=r"folds.json: SKU 'A' is in fold 0 and fold 1"):
        read_folds(bad)
    bad.write_text("[]")
    with pytest.raises(DataError, match="not a folds file"):
        read_folds(bad)


def _photo() -> np.ndarray:
    return read_image(sorted((SAMPLE / "train" / "Oatly-Oat-Milk").glob("*.jpg"))[0])


def test_hand_occlusion_covers_part_of_the_item_in_skin_colour_and_repeats_with_its_seed():
    img = _photo()
    skin = np.array(SKIN_RGB[::-1]) * 255
    covered = []
    for seed in range(12):
        out = hand_occlusion(img, np.random.RandomState(seed))
        assert out.shape == img.shape and out.dtype == np.uint8
        assert np.array_equal(out, hand_occlusion(img, np.random.RandomState(seed)))
        changed = np.abs(out.astype(int) - img).max(2) > 30
        covered.append(changed.mean())
        # the changed pixels are skin-like: red above green above blue, as SKIN_RGB
        b, g, r = (out[changed].astype(float).mean(0) / 255).tolist()
        assert r > g > b and np.isclose(r / skin[2], b / skin[0], rtol=0.35)
    assert 0.05 < float(np.median(covered)) < 0.4 and max(covered) < 0.6


def test_lane_camera_view_is_seeded_and_loses_detail():
    img = _photo()[:280, :280]
    a, b = lane_camera(img, np.random.RandomState(3)), lane_camera(img, np.random.RandomState(3))
    assert np.array_equal(a, b) and a.shape == img.shape
    assert float(np.abs(np.diff(a.astype(float), axis=1)).mean()) < float(
        np.abs(np.diff(img.astype(float), axis=1)).mean()
    )


def test_map_at_r_against_a_gallery():
    g = np.eye(3, dtype=np.float32)[[0, 0, 1, 1]]  # two photos of a and of b
    q = np.array([[1, 0, 0], [0.8, 0.6, 0]], np.float32)
    assert map_at_r(g, ["a", "a", "b", "b"], q, ["a", "b"]) == 0.5  # b's query ranks a's photos first
    with pytest.raises(ValueError, match="gallery"):
        map_at_r(g, ["a", "a", "b", "b"], q, ["a", "c"])


def _embedded(labels: list[str], noise: float, seed: int) -> Embedded:
    rng = np.random.default_rng(seed)
    centre = {s: np.eye(8)[i] for i, s in enumerate("abcdef")}
    emb = np.array([centre[s] for s in labels]) + rng.normal(0, noise, (len(labels), 8))
    return Embedded((emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32), np.array(labels), [])


def test_fold_report_uses_only_the_held_out_skus_and_pools_by_queries():
    skus = list("abcdef")
    gallery = _embedded([s for s in skus for _ in range(4)], 0.05, 0)
    clean, noisy = _embedded(skus * 2, 0.05, 1), _embedded(skus * 2, 2.0, 2)
    e = Embeddings(
        gallery=gallery,
        iconic=_embedded(skus, 0.05, 3),
        queries={Query.PHOTO: clean, Query.LANE: noisy, Query.HAND: noisy},
    )
    r = fold_report(e, {"a", "b", "c"})
    assert set(r) == {str(q) for q in Query}
    assert r[str(Query.PHOTO)] == {"recall_at_1": 1.0, "map_at_r": 1.0, "tar_at_far_0.01": 1.0, "queries": 6.0}
    assert r[str(Query.LANE)]["recall_at_1"] < 1.0 and r[str(Query.ICONIC)]["queries"] == 6.0
    other = fold_report(e, {"d", "e", "f", "a"})
    pooled = pool([r, other])
    assert pooled[str(Query.PHOTO)]["queries"] == 14.0
    want = (6 * r[str(Query.LANE)]["recall_at_1"] + 8 * other[str(Query.LANE)]["recall_at_1"]) / 14
    assert np.isclose(pooled[str(Query.LANE)]["recall_at_1"], want)
    no_iconic = Embeddings(gallery=gallery, iconic=None, queries=e.queries)
    assert str(Query.ICONIC) not in fold_report(no_iconic, {"a", "b"})


@pytest.mark.train
def test_a_fold_run_trains_without_the_held_out_skus_and_judges_them(tmp_path):
    pytest.importorskip("torch")
    from retail_reid.cli import main

    root = grocery_root(tmp_path)
    folds_file = tmp_path / "folds.json"
    folds = make_folds(coarse_kinds(root / "classes.csv"), 3)
    folds_file.write_text(folds.to_json())
    out = tmp_path / "fold1"
    args = ["train", "--root", str(root), "--train", str(root / "train.txt"), "--val", str(root / "val.txt")]
    args += ["--out", str(out), "--fold", "1", "--folds", str(folds_file), "--size", "64", "--epochs", "1"]
    args += ["--steps-per-epoch", "2", "--skus-per-batch", "4", "--per-sku", "2", "--threads", "2", "--quiet"]
    assert main(args) == 0
    trained = json.loads((out / "config.json").read_text())["skus"]
    assert set(trained) == folds.trained(1) and not set(trained) & folds.held_out(1)
    result = json.loads((out / "class_disjoint.json").read_text())
    assert result["fold"] == 1 and result["skus"] == sorted(folds.held_out(1))
    held_val = GroceryData.load(root).only(folds.held_out(1)).val
    for kind in Query:
        assert result["held_out"][str(kind)]["queries"] == len(held_val)
        assert 0.0 <= result["held_out"][str(kind)]["recall_at_1"] <= 1.0
    assert main([*args[:-1], "--fold", "7"]) == 2  # names the folds that exist, trains nothing

    import torch

    from retail_reid.models.backbone import create_backbone
    from retail_reid.models.interpolate import interpolate

    tuned = torch.load(out / "best.pt", weights_only=True)["model"]
    imagenet = create_backbone().state_dict()
    towards = torch.load(interpolate("imagenet", out / "best.pt", 0.25, tmp_path / "wise.pt"), weights_only=True)
    w = "backbone.blocks.6.0.conv_pw.weight"
    assert torch.allclose(towards["model"][w], 0.75 * imagenet[w.removeprefix("backbone.")] + 0.25 * tuned[w])
    assert torch.equal(towards["model"]["head.weight"], tuned["head.weight"])  # the head is the tuned run's


@pytest.mark.train
@pytest.mark.parametrize("backbone", ["tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_larger_imagenet_backbones_load_from_their_packages_and_see_a_banana(backbone):
    torch = pytest.importorskip("torch")
    from retail_reid.models.backbone import create_backbone
    from retail_reid.models.preprocess import Preprocess

    net = create_backbone(backbone).eval()
    pre = Preprocess(size=224)
    x = np.stack([pre(read_image(p)) for p in sorted((SAMPLE / "train" / "Banana").glob("*.jpg"))[:3]])
    with torch.no_grad():
        top = net(torch.from_numpy(x)).argmax(1)
    assert (top == 954).sum() >= 2, top.tolist()  # ImageNet class 954: banana
