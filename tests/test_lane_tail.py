"""The lane tail (issue 22): upper stages trained on cached lower-stage maps, resumable in slices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.train


def _synthetic_cache(folder: Path, skus: int = 16, photos: int = 4) -> None:
    """Maps of lite0's last two stages' input (112 channels), small, that carry each photo's SKU in
    a few channels under noise; a teacher embedding per SKU."""
    from retail_reid.models.lane_tail import PER_PHOTO

    rng = np.random.default_rng(0)
    codes = rng.normal(size=(skus, 112, 1, 1))
    labels = np.repeat(np.arange(skus), photos)
    maps = codes[np.repeat(labels, PER_PHOTO)] + rng.normal(size=(len(labels) * PER_PHOTO, 112, 4, 4))
    np.save(folder / "train_maps.npy", maps.astype(np.float16))
    np.save(folder / "val_maps.npy", maps[: 2 * PER_PHOTO].astype(np.float16))
    teacher = rng.normal(size=(skus, 32))[labels]
    np.save(folder / "teacher.npy", (teacher / np.linalg.norm(teacher, axis=1, keepdims=True)).astype(np.float32))
    meta = {
        "backbone": "tf_efficientnet_lite0",
        "tail_stages": 2,
        "size": 64,
        "seed": 0,
        "train_labels": [f"sku{i}" for i in labels],
        "n_gallery": len(labels),
        "val_labels": [],
    }
    (folder / "meta.json").write_text(json.dumps(meta))


def test_training_lowers_both_losses_and_a_run_in_slices_ends_where_one_run_through_ends(tmp_path: Path):
    import torch

    from retail_reid.models.lane_tail import TailCache, TailRecipe, tail_embeddings, train_tail

    _synthetic_cache(tmp_path)
    cache = TailCache.open(tmp_path)
    recipe = TailRecipe(epochs=4, skus_per_batch=8)
    whole, summary = train_tail(cache, recipe)
    (metric0, pull0), (metric, pull) = summary["losses"][0], summary["losses"][-1]
    assert summary["epochs"] == 4 and summary["photos"] == 64
    assert metric < metric0 and pull < pull0
    emb = tail_embeddings(cache, whole, "train", np.arange(3))
    assert emb.shape == (3, 32) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    checkpoint = tmp_path / "checkpoint.pt"
    _, first = train_tail(cache, recipe, checkpoint=checkpoint, epochs_now=2)
    assert first["epochs"] == 2 and len(first["losses"]) == 2
    sliced, rest = train_tail(cache, recipe, checkpoint=checkpoint)
    assert rest["epochs"] == 4 and rest["losses"][:2] == first["losses"] and rest["losses"] == summary["losses"]
    for (name, a), b in zip(whole.state_dict().items(), sliced.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_checkpoint_of_other_settings_is_refused_by_name(tmp_path: Path):
    from retail_reid.models.lane_tail import TailCache, TailRecipe, train_tail

    _synthetic_cache(tmp_path)
    cache = TailCache.open(tmp_path)
    checkpoint = tmp_path / "checkpoint.pt"
    train_tail(cache, TailRecipe(epochs=2, skus_per_batch=8), checkpoint=checkpoint, epochs_now=1)
    with pytest.raises(ValueError, match=r"checkpoint.pt: saved by a run with other settings \(distill\)"):
        train_tail(cache, TailRecipe(epochs=2, skus_per_batch=8, distill=1.0), checkpoint=checkpoint)
    with pytest.raises(ValueError, match="lower --skus-per-batch"):
        train_tail(cache, TailRecipe(epochs=1, skus_per_batch=32))
