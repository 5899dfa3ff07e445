"""Export a trained embedder to a self-describing ONNX file, check it against torch on real
images, calibrate it on validation data, and quantise it to int8 with onnxruntime."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from retail_reid.errors import ReidError
from retail_reid.images import read_image
from retail_reid.models.calibration import Calibration
from retail_reid.models.net import FlipAverage
from retail_reid.models.onnx_file import save_whole, set_info
from retail_reid.models.preprocess import Preprocess
from retail_reid.models.runtime import INPUT_NAME, OUTPUT_NAME, ModelInfo, OnnxEmbedder

OPSET = 18  # the dynamo exporter's own opset; folds TF-style 'same' padding into the convolutions
PARITY_MIN_COSINE = 0.9999


class ParityError(ReidError):
    """The ONNX graph does not reproduce the torch network."""


def write_metadata(path: Path, info: ModelInfo) -> None:
    """Replace the model's metadata; the file is swapped in whole, never left half written."""
    model = onnx.load(str(path))
    set_info(model, info)
    save_whole(model, path)


def export_onnx(net: torch.nn.Module, pre: Preprocess, out: Path, extra: dict, flip_tta: bool = True) -> Path:
    """Write net (optionally with test-time flip averaging baked in) as ONNX with dynamic batch."""
    net = net.eval()
    graph = (FlipAverage(net) if flip_tta else net).eval()
    dummy = torch.zeros(1, 3, pre.size, pre.size)
    with torch.no_grad():
        dim = graph(dummy).shape[1]
    out.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        graph,
        (dummy,),
        str(out),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes={"x": {0: batch}},
        opset_version=OPSET,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    write_metadata(out, ModelInfo(dim, pre, (), {**extra, "flip_tta": flip_tta}))
    return out


def cpu_session(net: torch.nn.Module, size: int, threads: int) -> ort.InferenceSession:
    """`net` (an image network, input "x" of size x size, any batch) as an onnxruntime CPU session,
    through a temporary ONNX file: the caches run frozen network parts there, several times faster
    than torch eager on a CPU."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "net.onnx"
        torch.onnx.export(
            net.eval(),
            (torch.zeros(1, 3, size, size),),
            str(path),
            input_names=["x"],
            dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}},
            dynamo=True,
            external_data=False,
            verbose=False,
        )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def check_parity(net: torch.nn.Module, onnx_path: Path, images: Sequence[Path]) -> float:
    """The smallest cosine similarity between torch and ONNX embeddings of real images."""
    emb = OnnxEmbedder(onnx_path)
    graph = FlipAverage(net.eval()) if emb.info.extra.get("flip_tta") else net.eval()
    x = np.stack([emb.preprocess(read_image(p)) for p in images])
    with torch.no_grad():
        ref = torch.nn.functional.normalize(graph(torch.from_numpy(x)), dim=1).numpy()
    got = emb.embed_tensors(x)
    worst = float((ref * got).sum(1).min())
    if worst < PARITY_MIN_COSINE:
        raise ParityError(
            f"{onnx_path}: ONNX and torch embeddings differ (min cosine {worst:.6f} < {PARITY_MIN_COSINE})"
        )
    return worst


def set_calibration(path: Path, calibrations: Sequence[Calibration]) -> None:
    """Store the model's calibrations, one per SKU scoring, the default first."""
    info = OnnxEmbedder(path).info
    write_metadata(path, ModelInfo(info.embedding_dim, info.preprocess, tuple(calibrations), info.extra))


class _ImageReader(CalibrationDataReader):
    """Feeds real, preprocessed images to onnxruntime's static quantisation calibrator."""

    def __init__(self, pre: Preprocess, images: Sequence[Path]):
        # one image per batch: histogram calibrators need equally shaped batches
        self.it = (pre(read_image(p))[None] for p in images)

    def get_next(self) -> dict | None:
        x = next(self.it, None)
        return None if x is None else {INPUT_NAME: x}


def quantize_int8(fp32: Path, out: Path, calibration_images: Sequence[Path]) -> Path:
    """Static int8 quantisation (QDQ, per-channel weights) calibrated on real images; the model's
    metadata is carried over (recalibrate afterwards: int8 scores shift slightly). A composed model's
    join (`reid compose`: centring the ImageNet features, weighing, joining) stays in float: centred
    features are small differences that 8 bits over the uncentred range would blur. Weights use 7
    of the 8 bits (`reduce_range`): onnxruntime's uint8 x int8 kernels on x86 CPUs without VNNI
    (AVX2 only, like this project's AMD EPYC) saturate their 16-bit sums with full-range weights;
    there the shipped int8 model's embeddings kept a mean cosine of 0.93 to fp32, with 7 bits 0.97."""
    info = OnnxEmbedder(fp32).info
    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        quant_pre_process(str(fp32), str(prepped), skip_symbolic_shape=True)
        quantize_static(
            str(prepped),
            str(out),
            _ImageReader(info.preprocess, calibration_images),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=True,  # 7-bit weights: x86 CPUs without VNNI saturate 8-bit products (int8 guide)
            nodes_to_exclude=[
                *info.extra.get("composed", {}).get("join_nodes", []),
                *info.extra.get("lane_head", {}).get("join_nodes", []),  # a lane head's residual, in float too
            ],
        )
    write_metadata(
        out,
        ModelInfo(info.embedding_dim, info.preprocess, info.calibrations, {**info.extra, "quantized": "int8-static"}),
    )
    return out
