"""The declared lane cameras (seeded renderings) and the lane head trained from a cache of them."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from retail_reid.models.views import LANE_LEVELS, LaneCamera, LaneLevel

SAMPLE = Path(__file__).resolve().parent.parent / "sample" / "grocery" / "train"


def _photo() -> np.ndarray:
    return cv2.imread(str(sorted(SAMPLE.glob("*/*.jpg"))[0]))


def sharpness(img: np.ndarray) -> float:
    """Edge energy at one common size, the noise smoothed first (noise has edge energy too)."""
    small = cv2.GaussianBlur(cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA), (3, 3), 0)
    return float(cv2.Laplacian(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def test_a_seed_gives_the_same_views_and_another_seed_other_views():
    camera = LANE_LEVELS[LaneLevel.MIDDLE]
    a, b, c = camera.views(_photo(), 5, 3), camera.views(_photo(), 5, 3), camera.views(_photo(), 6, 3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not any(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("level", list(LaneLevel))
def test_a_view_is_as_small_as_the_level_declares(level: LaneLevel):
    camera = LANE_LEVELS[level]
    for view in camera.views(_photo(), 1, 8):
        # the box jitter changes the aspect slightly; the longer side is drawn from side_px
        assert camera.side_px[0] * 0.85 <= max(view.shape[:2]) <= camera.side_px[1] + 1


def test_the_levels_blur_more_as_they_get_harder():
    photo = _photo()
    mean = {lv: np.mean([sharpness(v) for v in LANE_LEVELS[lv].views(photo, 2, 8)]) for lv in LaneLevel}
    assert mean[LaneLevel.MILD] > mean[LaneLevel.MIDDLE] > mean[LaneLevel.HARD]


def test_a_profile_round_trips_and_bad_fields_are_named():
    hard = LANE_LEVELS[LaneLevel.HARD]
    assert LaneCamera.from_dict(json.loads(json.dumps(hard.to_dict()))) == hard
    with pytest.raises(ValueError, match="blur_px"):
        LaneCamera.from_dict({"blur_px": [9, 5]})
    with pytest.raises(ValueError, match="jpeg_quality"):
        LaneCamera(jpeg_quality=(35, 101))
    with pytest.raises(ValueError, match="hand_share"):
        LaneCamera.from_dict({"hand_share": 1.5})
    with pytest.raises(ValueError, match=r"unknown field.*zoom"):
        LaneCamera.from_dict({"zoom": 2})


def _synthetic_cache(folder: Path, rng: np.random.Generator, skus: int = 16, photos: int = 8) -> None:
    """A lane cache whose teacher places clean photos near their SKU's prototype but degraded views
    anywhere, while the pooled features still carry the SKU: what a head can learn to use."""
    from retail_reid.models.lane_training import TRAIN_LEVELS, VAL_VIEWS

    dim, feats = 24, 64
    protos = rng.normal(size=(skus, dim))
    codes = rng.normal(size=(skus, feats))

    def views(label: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        noise = np.r_[0.2, np.full(n - 1, 3.0)][:, None]  # the first view is the photo itself
        emb = protos[label] + noise * rng.normal(size=(n, dim))
        pooled = codes[label] + 0.3 * rng.normal(size=(n, feats))
        return emb / np.linalg.norm(emb, axis=1, keepdims=True), pooled

    train_labels = np.repeat(np.arange(skus), photos)
    val_labels = np.repeat(np.arange(skus), 2)
    for part, labels, per in (("train", train_labels, 1 + len(TRAIN_LEVELS)), ("val", val_labels, VAL_VIEWS)):
        emb, pooled = zip(*(views(int(label), per) for label in labels), strict=True)
        np.save(folder / f"{part}_emb.npy", np.concatenate(emb).astype(np.float32))
        np.save(folder / f"{part}_pooled.npy", np.concatenate(pooled).astype(np.float32))
    meta = {
        "teacher": {"dim": dim, "pooled": ["view"], "fingerprint": "synthetic", "path": "synthetic"},
        "train_labels": [f"sku{i}" for i in train_labels],
        "val_labels": [f"sku{i}" for i in val_labels],
        "n_gallery": len(train_labels),
    }
    (folder / "meta.json").write_text(json.dumps(meta))


@pytest.mark.train
def test_a_head_trained_on_the_cache_recognises_degraded_views_the_teacher_cannot(tmp_path: Path):
    pytest.importorskip("torch")
    from retail_reid.models.lane_training import HeadRecipe, LaneCache, head_embeddings, lane_recall, train_head

    _synthetic_cache(tmp_path, np.random.default_rng(0))
    cache = LaneCache.open(tmp_path)

    def recall(head: object) -> dict[str, float]:
        train = head_embeddings(cache, head, "train")[cache.gallery_rows]  # type: ignore[arg-type]
        val = head_embeddings(cache, head, "val")  # type: ignore[arg-type]
        return lane_recall(train, cache.gallery_labels, val, np.asarray(cache.meta["val_labels"]))

    head, summary = train_head(cache, HeadRecipe(epochs=40, hidden=64, skus_per_batch=8))
    before, after = recall(None), recall(head)
    assert summary["photos"] == 128
    assert after["middle"] > before["middle"] + 0.3  # the teacher is near chance on these views
    assert after["clean"] >= before["clean"] - 0.1  # the photo keeps its place
    with pytest.raises(ValueError, match="lower --skus-per-batch"):
        train_head(cache, HeadRecipe(epochs=1), skus=["sku0", "sku1"])


@pytest.mark.train
def test_the_attached_head_computes_what_the_trained_head_does(tmp_path: Path):
    pytest.importorskip("torch")
    import torch

    from retail_reid.models.lane_training import ResidualHead, _Tapped, attach_head
    from retail_reid.models.runtime import OnnxEmbedder

    teacher = OnnxEmbedder(None)
    tapped = _Tapped(teacher, threads=1)
    photos = [_photo(), *LANE_LEVELS[LaneLevel.HARD].views(_photo(), 0, 2)]
    emb, pooled = tapped(photos)
    torch.manual_seed(0)
    head = ResidualHead(pooled.shape[1], emb.shape[1], hidden=16)
    torch.nn.init.normal_(head.out.weight, std=0.05)  # not the zero start: the residual must show
    out = attach_head(teacher.path, head, tmp_path / "taught.onnx", {"hidden": 16})
    taught = OnnxEmbedder(out)
    with torch.no_grad():
        want = head(torch.from_numpy(emb), torch.from_numpy(pooled)).numpy()
    got = taught.embed(photos)
    assert taught.dim == teacher.dim and taught.info.extra["trained"] == "lane-head"
    assert np.abs(got - want).max() < 1e-4
    assert (got * emb).sum(1).min() < 0.999  # and it is not the teacher's embedding
