"""YOLO output layouts and export metadata: raw YOLOv8 and YOLOv5 heads and end-to-end (1, K, 6)
boxes, from small ONNX models built here with and without the metadata Ultralytics writes."""

from pathlib import Path

import numpy as np
import pytest

from retail_reid.pipeline.config import ConfigError, DetectorConfig, OnnxDetectorConfig, load_config
from retail_reid.pipeline.detector import make_detector
from retail_reid.pipeline.types import Frame, Zone
from retail_reid.pipeline.yolo import (
    MAX_METADATA_CHARS,
    DetectorError,
    YoloLayout,
    YoloMetadata,
    decode_yolo,
    parse_metadata,
)

NAMES = "{0: 'person', 1: 'bottle'}"
# What Ultralytics writes (str() of each value) for an end-to-end export (YOLO26, YOLOv10, nms=True).
ULTRALYTICS_E2E = {
    "description": "Ultralytics YOLO26n model trained on coco.yaml",
    "author": "Ultralytics",
    "stride": "32",
    "task": "detect",
    "batch": "1",
    "imgsz": "[64, 96]",
    "names": NAMES,
    "args": "{'batch': 1, 'half': False, 'dynamic': True, 'nms': False}",
    "channels": "3",
    "end2end": "True",
}
RAW = {**ULTRALYTICS_E2E, "end2end": "False"}

# Zone 192 x 64 into a 64 x 96 (height x width) input: scale 0.5, padded 16 px above and below.
ZONE = Zone(100, 50, 292, 114)
BOX_IN = [10, 20, 30, 40]  # xyxy, input pixels
BOX_OUT = [120, 58, 160, 98]  # x / 0.5 + 100, (y - 16) / 0.5 + 50
BOX2_IN, BOX2_OUT = [50, 20, 70, 40], [200, 58, 240, 98]


def _end_to_end_output() -> np.ndarray:
    out = np.zeros((1, 300, 6), np.float32)  # unused rows are zeros, as exported
    out[0, :3] = [[*BOX_IN, 0.9, 1], [*BOX2_IN, 0.8, 0], [60, 30, 90, 44, 0.1, 1]]
    return out


def _cxcywh(box: list[int]) -> list[float]:
    return [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]]


def _v8_output() -> np.ndarray:
    out = np.zeros((1, 6, 8), np.float32)
    out[0, :, 0] = [*_cxcywh(BOX_IN), 0.1, 0.9]
    out[0, :, 1] = [*_cxcywh(BOX2_IN), 0.8, 0.1]
    return out


def _v5_output() -> np.ndarray:
    out = np.zeros((1, 8, 7), np.float32)
    out[0, 0] = [*_cxcywh(BOX_IN), 1.0, 0.1, 0.9]
    out[0, 1] = [*_cxcywh(BOX2_IN), 0.8, 1.0, 0.2]
    return out


def _model(
    path: Path, output: np.ndarray, metadata: dict[str, str] | None, dynamic: bool = True, batch: int = 1
) -> str:
    """An ONNX model whose output is `output` (plus 0 x the input's mean, so the input is used),
    with a dynamic (or fixed 64 x 96) NCHW input and the given metadata_props."""
    onnx = pytest.importorskip("onnx")  # the [train] extra; without it these tests are skipped
    from onnx import TensorProto, helper

    dims = ["batch", 3, "height", "width"] if dynamic else [batch, 3, 64, 96]
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["fixed", "nothing"], ["output0"]),
    ]
    inits = [
        helper.make_tensor("fixed", TensorProto.FLOAT, output.shape, output.ravel()),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
    ]
    graph = helper.make_graph(
        nodes,
        "yolo_layout",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output.shape))],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    if metadata:
        helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def _detect(model: str, **config) -> list[tuple[list[float], float]]:
    det = make_detector(ZONE, DetectorConfig(kind="onnx", onnx=OnnxDetectorConfig(model=model, **config)))
    found = det.detect(Frame(index=0, ts=0.0, image=np.zeros((200, 400, 3), np.uint8)))
    return sorted(zip(found.xyxy.tolist(), found.confidence.tolist(), strict=True), key=lambda b: -b[1])


def _expect(found, boxes_scores) -> None:
    assert len(found) == len(boxes_scores), found
    for (box, score), (want_box, want_score) in zip(found, boxes_scores, strict=True):
        assert box == pytest.approx(want_box, abs=1.0) and score == pytest.approx(want_score, abs=1e-5)


@pytest.mark.parametrize(
    ("output", "metadata"),
    [(_end_to_end_output, ULTRALYTICS_E2E), (_v8_output, RAW), (_v5_output, RAW)],
    ids=["end2end", "yolov8", "yolov5"],
)
def test_each_layout_with_ultralytics_metadata_gives_the_same_boxes(tmp_path, output, metadata):
    # The input is dynamic: its size (64 x 96, not square) comes from the metadata's imgsz.
    model = _model(tmp_path / "m.onnx", output(), metadata)
    _expect(_detect(model, conf_threshold=0.5), [(BOX_OUT, 0.9), (BOX2_OUT, 0.8)])
    # Classes by name, looked up in the metadata's names.
    _expect(_detect(model, conf_threshold=0.5, classes=["bottle"]), [(BOX_OUT, 0.9)])
    _expect(_detect(model, conf_threshold=0.5, classes=[0]), [(BOX2_OUT, 0.8)])
    with pytest.raises(DetectorError, match="has no class 'cup' \\(it has person, bottle\\)"):
        _detect(model, classes=["cup"])
    with pytest.raises(DetectorError, match=r"classes \[2\] out of range: the model has 2 classes"):
        _detect(model, classes=[2])


def test_end_to_end_boxes_without_metadata_need_the_layout_named(tmp_path):
    # The (1, 300, 6) output once read as a one-class YOLOv5 head gave boxes like [110, 20, 490, 220]
    # with scores of 34; without metadata it cannot be told from one, so it is refused.
    model = _model(tmp_path / "bare.onnx", _end_to_end_output(), None, dynamic=False)
    with pytest.raises(DetectorError, match=r"detection output \(1, 300, 6\).*set detector.onnx.layout"):
        _detect(model)
    _expect(_detect(model, conf_threshold=0.5, layout=YoloLayout.END_TO_END), [(BOX_OUT, 0.9), (BOX2_OUT, 0.8)])
    with pytest.raises(DetectorError, match=r"is a name, but .* names no classes"):
        _detect(model, layout=YoloLayout.END_TO_END, classes=["bottle"])
    # Raw heads without metadata are still told apart by their shape.
    for name, output in (("v8", _v8_output()), ("v5", _v5_output())):
        model = _model(tmp_path / f"{name}.onnx", output, None, dynamic=False)
        _expect(_detect(model, conf_threshold=0.5), [(BOX_OUT, 0.9), (BOX2_OUT, 0.8)])


def test_a_layout_that_fits_nothing_is_refused_in_one_line_naming_the_shape(tmp_path):
    four = {**RAW, "names": "{0: 'a', 1: 'b', 2: 'c', 3: 'd'}"}
    with pytest.raises(DetectorError, match=r"output \(1, 6, 8\) fits no known layout for the 4 classes"):
        _detect(_model(tmp_path / "a.onnx", _v8_output(), four))
    with pytest.raises(DetectorError, match=r"output \(1, 6, 8\) does not fit the end2end layout"):
        _detect(_model(tmp_path / "b.onnx", _v8_output(), None), layout=YoloLayout.END_TO_END)
    with pytest.raises(DetectorError, match=r"output \(1, 2, 3, 4\): expected"):
        _detect(_model(tmp_path / "c.onnx", np.zeros((1, 2, 3, 4), np.float32), None))
    with pytest.raises(DetectorError, match="takes batches of 4 images; export it with batch=1"):
        _detect(_model(tmp_path / "f.onnx", _v8_output(), RAW, dynamic=False, batch=4))
    with pytest.raises(DetectorError, match="a 'segment' model; the detector needs a 'detect' model"):
        _detect(_model(tmp_path / "d.onnx", _v8_output(), {**RAW, "task": "segment"}))
    # nms=True exports of raw-head models are end-to-end too, by their args.
    nms = {**RAW, "args": "{'nms': True}"}
    del nms["end2end"]
    _expect(
        _detect(_model(tmp_path / "e.onnx", _end_to_end_output(), nms), conf_threshold=0.5),
        [(BOX_OUT, 0.9), (BOX2_OUT, 0.8)],
    )


def test_decode_yolo_end_to_end_rows_are_final_boxes():
    boxes, scores = decode_yolo(_end_to_end_output(), 0.05, [1], layout=YoloLayout.END_TO_END)
    assert boxes.tolist() == [BOX_IN, [60, 30, 90, 44]] and scores == pytest.approx([0.9, 0.1])
    meta = YoloMetadata(names={0: "person", 1: "bottle"}, end_to_end=True)
    assert decode_yolo(_end_to_end_output(), 0.5, [], meta=meta)[0].tolist() == [BOX_IN, BOX2_IN]


def test_metadata_is_parsed_as_literals_and_bounded():
    meta = parse_metadata(ULTRALYTICS_E2E, "m.onnx")
    assert meta == YoloMetadata(
        names={0: "person", 1: "bottle"}, imgsz=(64, 96), task="detect", end_to_end=True, channels=3
    )
    assert parse_metadata({}, "m.onnx") == YoloMetadata()
    # Export arguments that are not literals (a newer exporter's objects) only lose their nms flag.
    assert parse_metadata({"args": "{'device': device(type='cpu'), 'nms': True}", "names": NAMES}, "m") == YoloMetadata(
        names={0: "person", 1: "bottle"}
    )
    assert parse_metadata({"names": "['a', 'b']", "imgsz": "320"}, "m").imgsz == (320, 320)  # YOLOv5 style lists
    hostile = {
        "names": "__import__('os').system('touch /tmp/owned')",
        "imgsz": "[64, 1e9]",
    }
    with pytest.raises(DetectorError, match=r"m.onnx: metadata 'names' is not a Python literal"):
        parse_metadata({"names": hostile["names"]}, "m.onnx")
    with pytest.raises(DetectorError, match="metadata 'imgsz' must be"):
        parse_metadata({"imgsz": hostile["imgsz"]}, "m.onnx")
    with pytest.raises(DetectorError, match=f"more than {MAX_METADATA_CHARS}"):
        parse_metadata({"names": "{" + "0: 'x', " * 40000 + "}"}, "m.onnx")
    with pytest.raises(DetectorError, match="not a Python literal"):
        parse_metadata({"names": "[" * 5000 + "]" * 5000}, "m.onnx")
    with pytest.raises(DetectorError, match=r"must number the classes 0..1"):
        parse_metadata({"names": "{0: 'a', 5: 'b'}"}, "m.onnx")


def test_config_takes_a_layout_and_class_names(tmp_path):
    cfg = tmp_path / "lane.toml"
    cfg.write_text(
        '[detector]\nkind = "onnx"\n[detector.onnx]\nmodel = "d.onnx"\nlayout = "end2end"\nclasses = ["bottle", 3]\n'
    )
    onnx = load_config(cfg).detector.onnx
    assert onnx.layout is YoloLayout.END_TO_END and onnx.classes == ["bottle", 3]
    cfg.write_text('[detector.onnx]\nlayout = "yolo9"\n')
    with pytest.raises(ConfigError, match=r"detector.onnx.layout: must be one of auto, yolov8, yolov5, end2end"):
        load_config(cfg)
    cfg.write_text("[detector.onnx]\nclasses = [true]\n")
    with pytest.raises(ConfigError, match=r"detector\.onnx\.classes\[0\]: must be int or str, got bool True"):
        load_config(cfg)
