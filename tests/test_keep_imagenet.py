"""The embedder that keeps the ImageNet features in view (issue 11): its geometry, training from a
feature cache, its checkpoint through `reid export`, and the lane camera fed BGR (marked train)."""

import json

import numpy as np
import pytest
from grocery_fixtures import SAMPLE, grocery_root

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.train


def _net(tail_stages: int, weight: float):
    from retail_reid.models.backbone import create_backbone
    from retail_reid.models.net import KeepImageNetNet

    torch.manual_seed(0)
    return KeepImageNetNet(create_backbone(), dim=16, tail_stages=tail_stages, imagenet_weight=weight).eval()


def test_the_embedding_cosine_is_the_weighted_sum_of_the_imagenet_and_the_trained_cosines():
    import torch.nn.functional as F

    net = _net(tail_stages=1, weight=0.3)
    net.feature_mean.normal_()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        e = net(x)
        z = net.trunk(x)
        general = F.normalize(net.imagenet_tail(z) - net.feature_mean, dim=1)
        trained = F.normalize(net.head(net.tail(z)), dim=1)
    assert e.shape == (4, net.out_dim) == (4, 1280 + 16)
    assert torch.allclose(e.norm(dim=1), torch.ones(4), atol=1e-5)
    expected = 0.3 * general @ general.T + 0.7 * trained @ trained.T
    assert torch.allclose(e @ e.T, expected, atol=1e-5)
    only = _net(tail_stages=0, weight=0.0)
    assert only(x).shape == (4, 16)  # weight 0: the trained projection alone


def test_training_moves_the_tail_and_head_and_never_the_imagenet_parts():
    net = _net(tail_stages=1, weight=0.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    net.train()
    loss = net(torch.randn(4, 3, 64, 64)).sum()
    loss.backward()
    opt.step()
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("tail.") for k in changed) and "head.weight" in changed
    assert not any(k.startswith(("trunk.", "imagenet_tail.")) for k in changed)  # weights and batch-norm statistics


def test_the_lane_camera_augmentation_hands_the_jpeg_encoder_bgr():
    from retail_reid.models.data import LaneCamera
    from retail_reid.models.views import lane_camera

    rng = np.random.RandomState(3)
    rgb = rng.randint(0, 255, (96, 128, 3), dtype=np.uint8)
    rgb[:, :64, 0] = 250  # a red half, where the R and B luma weights differ most
    np.random.seed(5)
    got = LaneCamera((40, 60), quality=(40, 40))(torch.from_numpy(rgb).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    np.random.seed(5)
    bgr_view = lane_camera(np.ascontiguousarray(rgb[:, :, ::-1]), np.random.mtrand._rand, (40, 60), quality=(40, 40))
    assert np.array_equal(got, bgr_view[:, :, ::-1])


def test_train_tail_from_a_cache_writes_a_checkpoint_that_exports_to_onnx(tmp_path, capsys):
    from retail_reid.cli import main
    from retail_reid.models.research.feature_cache import FeatureCache
    from retail_reid.models.research.folds import coarse_kinds, make_folds
    from retail_reid.models.runtime import OnnxEmbedder

    root = grocery_root(tmp_path)
    folds = make_folds(coarse_kinds(root / "classes.csv"), 3)
    (tmp_path / "folds.json").write_text(folds.to_json())
    cache, out = tmp_path / "cache", tmp_path / "run"
    args = ["train-tail", "--cache", str(cache), "--data", str(root), "--size", "64", "--views", "2"]
    args += [
        "--out",
        str(out),
        "--epochs",
        "2",
        "--dim",
        "16",
        "--skus-per-batch",
        "4",
        "--per-sku",
        "2",
        "--fold",
        "1",
        "--folds",
        str(tmp_path / "folds.json"),
    ]
    assert main([*args, "--threads", "2", "--quiet"]) == 0
    c = FeatureCache.open(cache)
    n_train = len(c.train_labels)
    assert c.array("train", "pooled").shape == (2 * n_train, 1280)  # 2 views of every train and catalog photo
    assert c.array("train", "tap1").shape[0] == c.array("train", "tap2").shape[0] == 2 * n_train
    rows, labels = c.eval_rows("lane camera + hand")
    assert len(labels) == len(list((SAMPLE / "val").glob("*/*.jpg"))) and rows[1] - rows[0] == 2  # view, mirror
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["held_out"]["photos"]) >= {"recall_at_1", "map_at_r", "tar_at_far_0.01"}
    state = torch.load(out / "best.pt", weights_only=True)
    assert state["skus"] == sorted(folds.trained(1)) and not set(state["skus"]) & folds.held_out(1)

    model = tmp_path / "m.onnx"
    export = ["export", str(out / "best.pt"), "--out", str(model), "--root", str(root)]
    export += ["--gallery", str(root / "train.txt"), "--calib", str(root / "val.txt"), "--quiet"]
    assert main(export) == 0  # checks ONNX against torch on real photos (ParityError otherwise)
    emb = OnnxEmbedder(model)
    assert emb.dim == 1280 + 16 and emb.info.extra["trained"] == "multi-similarity"
    wise = ["interpolate", "imagenet", str(out / "best.pt"), "--weight", "0.5", "--out", str(tmp_path / "w")]
    assert main(wise) == 2 and "keeps the ImageNet features" in capsys.readouterr().err
