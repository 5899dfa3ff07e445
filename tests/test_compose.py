"""`reid compose` (issue 11): a fine-tuned embedder and ImageNet features in one ONNX graph, the layers
both compute from the same weights run once, the composed cosine the weighted sum of the two."""

import json

import numpy as np
import pytest
from gallery_fixtures import VAL

from retail_reid.cli import main
from retail_reid.images import read_image
from retail_reid.models.runtime import METADATA_KEY, OnnxEmbedder

onnx = pytest.importorskip("onnx")  # building models is the [train] extra's
pytestmark = pytest.mark.train

from retail_reid.models.compose import ComposeError, compose, principal_basis, shared_prefix  # noqa: E402


def _photos(n: int = 12) -> list[np.ndarray]:
    return [read_image(p) for p in sorted(VAL.glob("*/*.jpg"))[:n]]


def test_a_model_composed_with_itself_shares_every_node_and_joins_the_two_views(tmp_path, embedder):
    graph = onnx.load(str(embedder.path)).graph
    assert shared_prefix(graph, graph)[1] == len(graph.node)
    mean = np.linspace(-0.05, 0.05, embedder.dim).astype(np.float32)
    out = compose(embedder.path, embedder.path, 0.3, mean, tmp_path / "c.onnx")
    composed = OnnxEmbedder(out)
    assert composed.dim == 2 * embedder.dim and composed.preprocess == embedder.preprocess
    assert composed.info.extra["composed"]["shared_nodes"] == len(graph.node)
    assert len(onnx.load(str(out)).graph.node) == len(graph.node) + 5  # nothing computed twice
    photos = _photos()
    a = embedder.embed(photos)
    general = a - mean
    general /= np.linalg.norm(general, axis=1, keepdims=True)
    expected = np.concatenate([np.sqrt(0.7) * a, np.sqrt(0.3) * general], axis=1)
    got = composed.embed(photos)
    assert np.abs(got - expected).max() < 1e-5
    assert np.allclose(got @ got.T, 0.7 * a @ a.T + 0.3 * general @ general.T, atol=1e-5)


def test_the_imagenet_features_can_be_projected_onto_their_leading_principal_directions(tmp_path, embedder):
    photos = _photos(24)
    a = embedder.embed(photos)
    mean, basis = principal_basis(a, 8)
    assert np.allclose(basis.T @ basis, np.eye(8), atol=1e-5)  # orthonormal directions
    variance = ((a - mean) @ basis).var(0)
    assert np.all(np.diff(variance) <= 1e-6)  # leading first
    out = compose(embedder.path, embedder.path, 0.3, mean, tmp_path / "c.onnx", basis)
    composed = OnnxEmbedder(out)
    assert composed.dim == embedder.dim + 8 and composed.info.extra["composed"]["imagenet_dims"] == 8
    general = (a - mean) @ basis
    general /= np.linalg.norm(general, axis=1, keepdims=True)
    expected = np.concatenate([np.sqrt(0.7) * a, np.sqrt(0.3) * general], axis=1)
    assert np.abs(composed.embed(photos) - expected).max() < 1e-4
    with pytest.raises(ComposeError, match="k must be between 1 and 23"):
        principal_basis(a, 24)
    with pytest.raises(ComposeError, match="projection has shape"):
        compose(embedder.path, embedder.path, 0.3, mean, tmp_path / "d.onnx", basis[:5])
    assert not (tmp_path / "d.onnx").exists()


def _with_size(src, dest, size: int):
    model = onnx.load(str(src))
    info = json.loads(model.metadata_props[0].value)
    info["preprocess"]["size"] = size
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(info)
    onnx.save(model, str(dest))
    return dest


def test_models_that_do_not_fit_together_are_refused_with_the_reason(tmp_path, embedder):
    other = _with_size(embedder.path, tmp_path / "224.onnx", 224)
    mean = np.zeros(embedder.dim, np.float32)
    with pytest.raises(ComposeError, match="share preprocessing"):
        compose(embedder.path, other, 0.3, mean, tmp_path / "c.onnx")
    with pytest.raises(ComposeError, match="strictly between 0 and 1"):
        compose(embedder.path, embedder.path, 1.0, mean, tmp_path / "c.onnx")
    with pytest.raises(ComposeError, match="feature mean has shape"):
        compose(embedder.path, embedder.path, 0.3, mean[:5], tmp_path / "c.onnx")
    assert not (tmp_path / "c.onnx").exists()


def test_reid_compose_centres_calibrates_and_writes_the_model(tmp_path, embedder, capsys):
    out = tmp_path / "composed.onnx"
    args = ["compose", str(embedder.path), str(embedder.path), "--weight", "0.5", "--out", str(out)]
    args += ["--gallery", "sample/grocery/train", "--calib", "sample/grocery/val", "--quiet"]
    assert main(args) == 0
    composed = OnnxEmbedder(out)
    assert {c.scoring for c in composed.info.calibrations} == {"centroid", "nearest"}
    assert composed.calibration.scoring == "centroid" and "far_0.01" in composed.calibration.thresholds
    assert "0.5 x" in capsys.readouterr().out
    projected = tmp_path / "projected.onnx"
    assert main([*args[:6], str(projected), *args[7:], "--pca", "16"]) == 0
    assert OnnxEmbedder(projected).dim == embedder.dim + 16
    assert "16 principal directions kept" in capsys.readouterr().out
    zero = [*args[:3], "--weight", "0", "--out", str(tmp_path / "zero.onnx"), *args[7:]]
    assert main(zero) == 2 and not (tmp_path / "zero.onnx").exists()
    assert "strictly between 0 and 1" in capsys.readouterr().err


def test_reid_quantize_writes_a_calibrated_int8_model_that_keeps_the_fp32_geometry(tmp_path, embedder):
    out = tmp_path / "int8.onnx"
    args = ["quantize", str(embedder.path), "--out", str(out), "--gallery", "sample/grocery/train"]
    assert main([*args, "--calib", "sample/grocery/val", "--int8-images", "40", "--quiet"]) == 0
    int8 = OnnxEmbedder(out)
    assert int8.info.extra["quantized"] == "int8-static" and int8.dim == embedder.dim
    assert int8.calibration.scoring == "centroid" and out.stat().st_size < embedder.path.stat().st_size * 0.5
    photos = _photos(24)
    cos = (embedder.embed(photos) * int8.embed(photos)).sum(1)
    # 7-bit weights (reduce_range): on this project's AVX2-only CPU full-range int8 kept 0.93 on average
    assert cos.mean() > 0.95, cos
