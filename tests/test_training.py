"""Training side (needs the [train] extra): ImageNet weight mapping, miners, a short real training
run, export parity and int8 quantisation."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from retail_reid.images import read_image  # noqa: E402
from retail_reid.models.backbone import WeightsError, create_backbone, map_state_dict_in_order  # noqa: E402
from retail_reid.models.data import LabelledImages  # noqa: E402
from retail_reid.models.datasets import folder_set  # noqa: E402
from retail_reid.models.losses import build_objective  # noqa: E402
from retail_reid.models.preprocess import Preprocess  # noqa: E402
from retail_reid.models.runtime import OnnxEmbedder  # noqa: E402

SAMPLE = Path("sample/grocery")
pytestmark = pytest.mark.train


@pytest.fixture(scope="module", autouse=True)
def _threads():
    torch.set_num_threads(2)


def test_mapped_imagenet_weights_recognise_a_banana_and_a_granny_smith():
    net = create_backbone().eval()
    pre = Preprocess(size=224)
    for folder, imagenet_class in (("Banana", 954), ("Granny-Smith", 948)):
        x = np.stack([pre(read_image(p)) for p in sorted((SAMPLE / "train" / folder).glob("*.jpg"))[:3]])
        with torch.no_grad():
            top = net(torch.from_numpy(x)).argmax(1)
        assert (top == imagenet_class).sum() >= 2, (folder, top.tolist())


def test_weight_mapping_checks_every_shape():
    net = create_backbone(pretrained=False)
    sd = list(net.state_dict().items())
    renamed = {f"w{i}": v for i, (_, v) in enumerate(sd)}
    assert list(map_state_dict_in_order(renamed, net, "x").keys()) == [k for k, _ in sd]
    bad = dict(renamed)
    bad["w0"] = torch.zeros(1, 2, 3)
    with pytest.raises(WeightsError, match="w0 has shape"):
        map_state_dict_in_order(bad, net, "x")
    with pytest.raises(WeightsError, match="tensors"):
        map_state_dict_in_order(dict(list(renamed.items())[:-1]), net, "x")


def test_no_hub_download_for_other_backbones():
    with pytest.raises(WeightsError, match="nothing is downloaded"):
        create_backbone("resnet18", pretrained=True)


def _angles(degrees):
    r = np.deg2rad(degrees)
    return torch.tensor(np.stack([np.cos(r), np.sin(r)], 1), dtype=torch.float32)


@pytest.mark.parametrize("kind", ["all", "hard", "semihard", "easy"])
def test_triplet_miner_types_select_what_they_claim(kind):
    margin = 0.2
    # class 0 at 0 and 40 degrees; class 1 at 30 (hard for 0/40), 50 (semi-hard), 120 and 130 (easy)
    emb = _angles([0, 40, 30, 50, 120, 130])
    labels = torch.tensor([0, 0, 1, 1, 1, 1])
    miner = build_objective("triplet", 2, 2, kind, margin).miner
    a, p, n = (t.tolist() for t in miner(emb, labels))
    got = set(zip(a, p, n, strict=True))
    d = torch.cdist(emb, emb)
    want = set()
    for i in range(6):
        for j in range(6):
            for k in range(6):
                if i == j or labels[i] != labels[j] or labels[i] == labels[k]:
                    continue
                gap = float(d[i, k] - d[i, j])  # how much further the negative is than the positive
                rule = {"all": gap <= margin, "hard": gap <= 0, "semihard": 0 < gap <= margin, "easy": gap > margin}[
                    kind
                ]
                if rule:
                    want.add((i, j, k))
    assert got == want and got  # every type finds some triplets in this layout
    if kind == "hard":
        assert (0, 1, 2) in got  # 30 deg lies nearer 0 deg than its positive at 40 deg
    if kind == "easy":
        assert (0, 1, 4) in got


def test_unknown_loss_and_miner_are_refused():
    with pytest.raises(ValueError, match="unknown loss"):
        build_objective("hinge", 8, 2)
    with pytest.raises(ValueError, match="miner type"):
        build_objective("triplet", 8, 2, "medium")


def test_eval_transform_equals_runtime_preprocessing():
    """Validation during training must see exactly what the ONNX runtime will see."""
    images = folder_set(SAMPLE / "val").only({"Lime", "Kiwi"})
    pre = OnnxEmbedder().preprocess
    data = LabelledImages(images, {"Lime": 0, "Kiwi": 1}, pre, train=False, progress=False)
    for i, path in enumerate(images.paths):
        assert np.array_equal(data[i][0].numpy(), pre(read_image(path)))


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """One short real training run on four sample SKUs at low resolution."""
    from retail_reid.models.train import TrainConfig, train

    skus = {"Banana", "Granny-Smith", "Oatly-Oat-Milk", "Red-Bell-Pepper"}
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(
        out=str(out),
        size=96,
        epochs=4,
        skus_per_batch=4,
        per_sku=4,
        steps_per_epoch=4,
        loss="triplet",
        miner="semihard",
        lr_backbone=5e-4,
        lr_head=5e-3,
        warmup_epochs=0.25,
        seed=0,
    )
    best = train(cfg, folder_set(SAMPLE / "train").only(skus), folder_set(SAMPLE / "val").only(skus), progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return best, rows, out


def test_training_loss_falls_and_retrieval_beats_chance(short_run):
    best, rows, out = short_run
    assert len(rows) == 4 and best.exists() and (out / "last.pt").exists()
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert max(r["val_precision_at_1"] for r in rows) > 0.5  # chance with 4 SKUs is about 0.25


def test_resume_continues_from_the_last_epoch(short_run, tmp_path):
    from retail_reid.models.train import TrainConfig, train

    _, _, out = short_run
    cfg = TrainConfig(**json.loads((out / "config.json").read_text())["config"])
    cfg.epochs = 5
    skus = {"Banana", "Granny-Smith", "Oatly-Oat-Milk", "Red-Bell-Pepper"}
    train(
        cfg, folder_set(SAMPLE / "train").only(skus), folder_set(SAMPLE / "val").only(skus), resume=True, progress=False
    )
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4, 5]


def test_fine_tuning_from_a_trained_run_with_checkout_views(short_run, tmp_path):
    from retail_reid.models.train import TrainConfig, train

    best, _, _ = short_run
    skus = {"Banana", "Granny-Smith", "Oatly-Oat-Milk", "Red-Bell-Pepper"}
    train_set, val_set = folder_set(SAMPLE / "train").only(skus), folder_set(SAMPLE / "val").only(skus)
    cfg = TrainConfig(
        out=str(tmp_path / "ft"),
        size=96,
        epochs=1,
        skus_per_batch=4,
        per_sku=4,
        steps_per_epoch=2,
        lr_backbone=1e-9,
        lr_head=1e-9,
        warmup_epochs=0.0,
        init=str(best),
        augment="checkout",
    )
    tuned = torch.load(train(cfg, train_set, val_set, progress=False), weights_only=True)
    start = torch.load(best, weights_only=True)
    weights = [
        k for k in start["model"] if "running_" not in k and "num_batches" not in k
    ]  # batch-norm statistics move anyway
    for k in weights:  # started from the run's weights (a learning rate of ~0 keeps them)
        assert torch.allclose(tuned["model"][k], start["model"][k], atol=1e-4), k
    with pytest.raises(ValueError, match="not found"):
        train(
            TrainConfig(out=str(tmp_path / "none"), init=str(tmp_path / "missing.pt")),
            train_set,
            val_set,
            progress=False,
        )
    with pytest.raises(ValueError, match="64-d"):
        train(
            TrainConfig(out=str(tmp_path / "bad"), size=96, dim=64, epochs=1, init=str(best)),
            train_set,
            val_set,
            progress=False,
        )


def test_checkout_views_are_sometimes_partly_hidden_by_a_hand():
    from retail_reid.models.data import SKIN_RGB, train_transform

    pre = Preprocess(size=96)
    img = torch.from_numpy(
        np.ascontiguousarray(read_image(sorted((SAMPLE / "train" / "Banana").glob("*.jpg"))[0])[:, :, ::-1])
    ).permute(2, 0, 1)
    skin = ((torch.tensor(SKIN_RGB) - torch.tensor(pre.mean)) / torch.tensor(pre.std))[None, :, None, None]
    hidden = {}
    for augment in ("checkout", "checkout-hard"):
        torch.manual_seed(0)
        np.random.seed(0)
        views = torch.stack([train_transform(pre, augment)(img) for _ in range(64)])
        assert views.shape == (64, 3, 96, 96) and torch.isfinite(views).all()
        hidden[augment] = ((views - skin).abs().amax(1) < 1e-5).flatten(1).float().mean(1)  # share painted as hand
        assert 0 < int((hidden[augment] > 0).sum()) < 64  # p = 0.3, 0.5
    # the hard camera's hand: more often, and over more of the item (up to a third)
    assert (hidden["checkout-hard"] > 0).sum() > (hidden["checkout"] > 0).sum()
    assert hidden["checkout-hard"].max() > 0.15 > hidden["checkout"].max()
    with pytest.raises(ValueError, match="augment"):
        train_transform(pre, "studio")


def test_lane_camera_views_are_small_blurred_noisy_and_compressed_then_scaled_back():
    from retail_reid.models.data import LaneCamera
    from retail_reid.models.views import motion_kernel as _motion_kernel

    k = _motion_kernel(7, 0.0)
    assert k.shape == (7, 7) and abs(float(k.sum()) - 1.0) < 1e-6 and (k[3] > 0).all() and k[[0, 6]].sum() == 0
    assert abs(float(_motion_kernel(5, 90.0)[:, 2].sum()) - 1.0) < 1e-5  # vertical motion: one column
    np.random.seed(0)
    img = torch.from_numpy(
        np.ascontiguousarray(read_image(sorted((SAMPLE / "train" / "Oatly-Oat-Milk").glob("*.jpg"))[0])[:, :, ::-1])
    )
    img = img.permute(2, 0, 1)[:, :280, :280].contiguous()
    cam = LaneCamera((90, 120))
    views = [cam(img) for _ in range(8)]
    assert all(v.shape == img.shape and v.dtype == torch.uint8 for v in views)

    def detail(x: torch.Tensor) -> float:  # energy of the finest scale: what a small, blurred view loses
        g = cv2.cvtColor(np.ascontiguousarray(x.permute(1, 2, 0).numpy()), cv2.COLOR_RGB2GRAY)
        return float(cv2.Laplacian(g, cv2.CV_32F).var())

    assert max(detail(v) for v in views) < 0.5 * detail(img)
    np.random.seed(1)
    again = LaneCamera((90, 120))(img)
    np.random.seed(1)
    assert torch.equal(again, LaneCamera((90, 120))(img))  # seeded like the rest of training


def test_interpolating_a_run_with_its_fine_tuned_copy(short_run, tmp_path):
    from retail_reid.cli import main as reid
    from retail_reid.models.interpolate import interpolate
    from retail_reid.models.train import load_checkpoint

    best, _, _ = short_run
    start = torch.load(best, weights_only=True)
    tuned = {**start, "model": {k: v + 1.0 if v.is_floating_point() else v + 5 for k, v in start["model"].items()}}
    torch.save(tuned, tmp_path / "tuned.pt")
    floats = [k for k, v in start["model"].items() if v.is_floating_point()]
    for w in (0.0, 0.25, 1.0):
        mixed = torch.load(
            interpolate(best, tmp_path / "tuned.pt", w, tmp_path / f"w{w}" / "best.pt"), weights_only=True
        )
        for k in floats:
            assert torch.allclose(mixed["model"][k], start["model"][k] + w, atol=1e-6), (w, k)
        counters = [k for k in start["model"] if k not in floats]
        assert counters and all(torch.equal(mixed["model"][k], tuned["model"][k]) for k in counters)
        assert mixed["interpolated"]["weight"] == w and mixed["skus"] == start["skus"]
    net, pre, _ = load_checkpoint(tmp_path / "w0.25" / "best.pt")  # exportable like any run
    assert pre.size == 96 and sum(p.numel() for p in net.parameters()) > 0
    assert (
        reid(["interpolate", str(best), str(tmp_path / "tuned.pt"), "--weight", "0.5", "--out", str(tmp_path / "cli")])
        == 0
    )
    assert (tmp_path / "cli" / "best.pt").is_file()

    other = {**start, "config": {**start["config"], "dim": 64}}
    torch.save(other, tmp_path / "other.pt")
    torch.save({"weights": 1}, tmp_path / "junk.pt")
    shape = {**start, "model": {**start["model"], floats[0]: torch.zeros(3)}}
    torch.save(shape, tmp_path / "shape.pt")
    for path, weight, message in (
        (tmp_path / "tuned.pt", 1.5, "between 0"),
        (tmp_path / "missing.pt", 0.5, "not found"),
        (tmp_path / "other.pt", 0.5, "dim 128 against 64"),
        (tmp_path / "junk.pt", 0.5, "not a checkpoint"),
        (tmp_path / "shape.pt", 0.5, "shape of " + floats[0]),
    ):
        with pytest.raises(ValueError, match=message):
            interpolate(best, path, weight, tmp_path / "bad" / "best.pt")
        assert not (tmp_path / "bad" / "best.pt").exists()
    assert (
        reid(["interpolate", str(best), str(tmp_path / "missing.pt"), "--weight", "0.5", "--out", str(tmp_path / "x")])
        == 2
    )
    assert (
        reid(["export", str(tmp_path / "junk.pt"), "--out", str(tmp_path / "x.onnx"), "--gallery", "g", "--calib", "c"])
        == 2
    )


@pytest.mark.parametrize("flip", [True, False])
def test_a_checkpoint_rebuilt_from_an_export_computes_the_same_and_trains(short_run, tmp_path, flip):
    from retail_reid.cli import main as reid
    from retail_reid.models.export import export_onnx
    from retail_reid.models.train import load_checkpoint

    best, _, _ = short_run
    net, pre, state = load_checkpoint(best)
    onnx_path = export_onnx(net, pre, tmp_path / "m.onnx", {"backbone": state["config"]["backbone"]}, flip_tta=flip)
    photos = sorted((SAMPLE / "train").glob("*/*.jpg"))
    rebuilt = tmp_path / "rebuilt" / "best.pt"
    # the rebuild checks its own parity with the file (min cosine >= the export's bound) or fails
    assert (
        reid(
            [
                "checkpoint-from-onnx",
                str(onnx_path),
                "--out",
                str(rebuilt),
                "--photos",
                str(SAMPLE / "train"),
                "--count",
                "64",
            ]
        )
        == 0
    )
    again, again_pre, again_state = load_checkpoint(rebuilt)
    assert again_pre == pre and again_state["config"]["dim"] == state["config"]["dim"]
    # recalibrated batch norms: a training batch of such photos is normalised much as in evaluation
    x = torch.from_numpy(np.stack([pre(read_image(p)) for p in photos[::4][:32]]))
    with torch.no_grad():
        evaluated = torch.nn.functional.normalize(again.eval()(x), dim=1)
        trained = torch.nn.functional.normalize(again.train()(x), dim=1)
    assert float((evaluated * trained).sum(1).mean()) > 0.9
    assert (
        reid(
            [
                "train",
                "--root",
                str(SAMPLE),
                "--train",
                str(SAMPLE / "train"),
                "--val",
                str(SAMPLE / "val"),
                "--out",
                str(tmp_path / "ft"),
                "--init",
                str(rebuilt),
                "--size",
                "96",
                "--epochs",
                "1",
                "--steps-per-epoch",
                "1",
                "--skus-per-batch",
                "4",
                "--per-sku",
                "2",
                "--quiet",
            ]
        )
        == 0
    )


def test_a_checkpoint_is_not_rebuilt_from_what_is_not_a_reid_export(short_run, tmp_path, capsys):
    from retail_reid.cli import main as reid
    from retail_reid.models.export import export_onnx
    from retail_reid.models.train import load_checkpoint

    net, pre, _ = load_checkpoint(short_run[0])
    nameless = export_onnx(net, pre, tmp_path / "m.onnx", {})
    args = ["--out", str(tmp_path / "x.pt"), "--photos", str(SAMPLE / "train"), "--count", "4"]
    assert reid(["checkpoint-from-onnx", str(nameless), *args]) == 2
    assert "names no backbone" in capsys.readouterr().err
    assert reid(["checkpoint-from-onnx", str(tmp_path / "missing.onnx"), *args]) == 2
    assert not (tmp_path / "x.pt").exists()


def test_export_parity_calibration_and_int8(short_run, tmp_path):
    from retail_reid.models.evaluate import calibrate, embed_set
    from retail_reid.models.export import check_parity, export_onnx, quantize_int8, set_calibration
    from retail_reid.models.train import load_checkpoint

    best, _, _ = short_run
    net, pre, _ = load_checkpoint(best)
    fp32 = export_onnx(net, pre, tmp_path / "m.onnx", {"backbone": "test"})
    val = sorted((SAMPLE / "val").glob("*/*.jpg"))
    assert check_parity(net, fp32, val[:8]) >= 0.9999
    gallery, queries = folder_set(SAMPLE / "train"), folder_set(SAMPLE / "val")
    emb = OnnxEmbedder(fp32)
    set_calibration(fp32, calibrate(embed_set(emb, gallery), embed_set(emb, queries)))
    cal = OnnxEmbedder(fp32)
    assert "far_0.01" in cal.calibration.thresholds and cal.calibration.scoring == "centroid"
    assert cal.calibration_for("nearest").threshold("far_0.01") > cal.calibration.threshold(
        "far_0.01"
    )  # a centroid is never as near

    # `reid calibrate` refits in place and can make the other scoring the default
    from retail_reid.cli import main as reid

    assert (
        reid(
            [
                "calibrate",
                str(fp32),
                "--gallery",
                str(SAMPLE / "train"),
                "--calib",
                str(SAMPLE / "val"),
                "--scoring",
                "nearest",
                "--quiet",
            ]
        )
        == 0
    )
    recal = OnnxEmbedder(fp32)
    assert recal.calibration.scoring == "nearest" and recal.calibration == cal.calibration_for("nearest")
    assert recal.fingerprint == cal.fingerprint  # only the metadata changed: galleries stay bound to the model
    assert not list(tmp_path.glob(".*.tmp"))  # the rewrite left no temporary file
    before = fp32.read_bytes()
    strangers = tmp_path / "q" / "Unknown-SKU"
    strangers.mkdir(parents=True)
    for p in val[:2]:
        (strangers / p.name).write_bytes(p.read_bytes())
    assert (
        reid(["calibrate", str(fp32), "--gallery", str(SAMPLE / "train"), "--calib", str(tmp_path / "q"), "--quiet"])
        == 2
    )
    one_sku = tmp_path / "refs" / "Banana"
    one_sku.mkdir(parents=True)
    for p in sorted((SAMPLE / "train" / "Banana").glob("*.jpg"))[:2]:
        (one_sku / p.name).write_bytes(p.read_bytes())
    assert (
        reid(["calibrate", str(fp32), "--gallery", str(tmp_path / "refs"), "--calib", str(SAMPLE / "val"), "--quiet"])
        == 2
    )
    assert fp32.read_bytes() == before  # refused without touching the model

    int8 = quantize_int8(fp32, tmp_path / "m8.onnx", list(gallery.paths[::4]))
    e32, e8 = OnnxEmbedder(fp32), OnnxEmbedder(int8)
    assert e8.info.extra["quantized"] == "int8-static" and e8.dim == e32.dim
    imgs = [read_image(p) for p in val[:8]]
    cos = (e32.embed(imgs) * e8.embed(imgs)).sum(1)
    # A 16-step toy model: its int8 agreement varies with the CPU's float kernels (0.85 to 0.95 per
    # image on an AMD EPYC); the shipped pair's agreement is held to more in test_runtime.
    assert cos.mean() > 0.9 and cos.min() > 0.8
    assert (
        int8.stat().st_size < fp32.stat().st_size * 0.35
    )  # int8 weights stored once each: the shipped pair measures 0.29
