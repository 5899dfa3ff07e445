"""The torch-free embedder used by the gallery and the pipeline: an ONNX model file that
describes itself (preprocessing, embedding size, calibration) in its metadata."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from retail_reid.bounded_json import parse_object
from retail_reid.errors import ReidError
from retail_reid.images import ImageError, read_image
from retail_reid.models.calibration import Calibration
from retail_reid.models.preprocess import Preprocess

METADATA_KEY = "retail_reid"
FORMAT = "retail-reid-embedder"
FORMAT_VERSION = 1
MAX_METADATA_BYTES = 1 << 20  # the metadata is a few KB (preprocessing and calibration tables)
INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"


class ModelError(ReidError, ValueError):
    """A model file that cannot be used as an embedder; the message names the file."""


def default_model_path() -> Path:
    """The model shipped inside the package (trained on the grocery data, see docs/model-card.md)."""
    return Path(__file__).parent / "default" / "embedder.onnx"


@dataclass(frozen=True)
class ModelInfo:
    """What a model file's metadata says about it."""

    embedding_dim: int
    preprocess: Preprocess
    calibrations: tuple[
        Calibration, ...
    ]  # one per SKU scoring, the default first; empty only between export and calibration
    extra: dict

    @property
    def calibration(self) -> Calibration | None:
        """The default calibration (and so the gallery's default scoring), None if uncalibrated."""
        return self.calibrations[0] if self.calibrations else None

    @classmethod
    def parse(cls, raw: str | None, source: str) -> ModelInfo:
        if raw is None:
            raise ModelError(
                f"{source}: no '{METADATA_KEY}' metadata; not a retail-reid embedder (export it with `reid export`)"
            )
        meta = parse_object(raw, f"{source}: '{METADATA_KEY}' metadata", max_bytes=MAX_METADATA_BYTES, error=ModelError)
        if meta.get("format") != FORMAT:
            raise ModelError(f"{source}: metadata 'format' must be {FORMAT!r}")
        if meta.get("version") != FORMAT_VERSION:
            raise ModelError(
                f"{source}: metadata version {meta.get('version')!r} is not supported (expected {FORMAT_VERSION})"
            )
        try:
            dim = int(meta["embedding_dim"])
            pre = Preprocess.from_dict(meta["preprocess"])
            raw_cal = meta["calibration"]
            cals = tuple(
                Calibration.from_dict(c)
                for c in ([] if raw_cal is None else raw_cal if isinstance(raw_cal, list) else [raw_cal])
            )
        except KeyError as e:
            raise ModelError(f"{source}: metadata field {e} is missing") from None
        except (TypeError, ValueError) as e:
            raise ModelError(f"{source}: metadata is wrong: {e}") from None
        if dim <= 0:
            raise ModelError(f"{source}: metadata embedding_dim must be positive, got {dim}")
        extra = {
            k: v
            for k, v in meta.items()
            if k not in ("format", "version", "embedding_dim", "preprocess", "calibration")
        }
        if len({c.scoring for c in cals}) != len(cals):
            raise ModelError(f"{source}: metadata has two calibrations for the same scoring")
        return cls(dim, pre, cals, extra)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "embedding_dim": self.embedding_dim,
                "preprocess": self.preprocess.to_dict(),
                "calibration": [c.to_dict() for c in self.calibrations] or None,
                **self.extra,
            },
            sort_keys=True,
        )


METADATA_FIELD = 14  # ModelProto.metadata_props, where the preprocessing and calibration live


def model_fingerprint(data: bytes, source: str) -> str:
    """sha256 of an ONNX model file's bytes without its metadata: of everything that decides the
    embeddings. A gallery is bound to it, so recalibrating a model (which rewrites only its
    metadata) leaves galleries usable, while any change to the graph or its weights does not."""
    h = hashlib.sha256()
    pos = 0
    while pos < len(data):
        start = pos
        key, pos = _varint(data, pos, source)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(data, pos, source)
        elif wire == 2:
            size, pos = _varint(data, pos, source)
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ModelError(f"{source}: not an ONNX protobuf (wire type {wire} at byte {start})")
        if pos > len(data):
            raise ModelError(f"{source}: truncated ONNX protobuf (field {field} at byte {start})")
        if field != METADATA_FIELD:
            h.update(data[start:pos])
    return h.hexdigest()


def _varint(data: bytes, pos: int, source: str) -> tuple[int, int]:
    value, shift = 0, 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ModelError(f"{source}: truncated ONNX protobuf")


class OnnxEmbedder:
    """Maps BGR crops to L2-normalised embeddings with onnxruntime.

    >>> emb = OnnxEmbedder()            # the shipped default model
    >>> vecs = emb.embed([bgr_crop])    # (1, D) float32, unit rows
    """

    def __init__(
        self, path: str | Path | None = None, threads: int | None = None, batch_size: int = 32, arena: bool = True
    ):
        self.path = Path(path) if path is not None else default_model_path()
        if not self.path.is_file():
            raise ModelError(f"{self.path}: model file not found")
        opts = ort.SessionOptions()
        n = threads or int(os.environ.get("REID_THREADS", "0"))
        if n:
            opts.intra_op_num_threads = n
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # onnxruntime's CPU arena grows to the largest batch seen and never gives it back: a live lane,
        # whose batches vary with the passes ending in a frame, stepped up by tens of MB for each new
        # largest batch. `arena=False` (the edge) frees a batch's buffers after it, at about a quarter
        # more CPU per batch (docs/edge.md, "Memory over a day"); replays and enrolment keep the arena.
        opts.enable_cpu_mem_arena = arena
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise ModelError(f"{self.path}: not a loadable ONNX model ({str(e).splitlines()[0]})") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        self.info = ModelInfo.parse(raw, str(self.path))
        inputs = [i.name for i in self.session.get_inputs()]
        if inputs != [INPUT_NAME]:
            raise ModelError(f"{self.path}: expected one input named {INPUT_NAME!r}, found {inputs}")
        self.batch_size = batch_size
        self._fingerprint: str | None = None

    @property
    def dim(self) -> int:
        return self.info.embedding_dim

    @property
    def preprocess(self) -> Preprocess:
        return self.info.preprocess

    @property
    def calibration(self) -> Calibration:
        """Similarity -> confidence and the alert thresholds, fitted on validation data at export,
        for the model's default SKU scoring."""
        if self.info.calibration is None:
            raise ModelError(
                f"{self.path}: model is not calibrated; export it with calibration data (`reid export --calib ...`)"
            )
        return self.info.calibration

    def calibration_for(self, scoring: str) -> Calibration:
        """The calibration of scores made the `scoring` way ("nearest" or "centroid")."""
        found = [c for c in self.info.calibrations if c.scoring == scoring]
        if not found:
            have = ", ".join(c.scoring for c in self.info.calibrations) or "none"
            raise ModelError(
                f"{self.path}: model has no calibration for {scoring!r} scoring (it has: {have}); "
                "recalibrate it with `reid calibrate`"
            )
        return found[0]

    @property
    def fingerprint(self) -> str:
        """sha256 of the model without its metadata (`model_fingerprint`): a gallery is bound to it."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.path.read_bytes(), str(self.path))
        return self._fingerprint

    def embed_tensors(self, batch: np.ndarray) -> np.ndarray:
        """Embed already preprocessed NCHW float32 input; returns unit rows."""
        out = self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch, np.float32)})[0]
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.maximum(norms, 1e-12)).astype(np.float32)

    def embed(self, images: Iterable[np.ndarray]) -> np.ndarray:
        """Embed uint8 BGR images (any size) in batches of `batch_size`; returns (N, D) float32 unit rows.

        `images` may be a generator: it is consumed one batch at a time, so a caller can read files
        lazily (and skip the bad ones) without holding every decoded image in memory.
        """
        outs: list[np.ndarray] = []
        batch: list[np.ndarray] = []
        for image in images:
            batch.append(self.preprocess(image))
            if len(batch) == self.batch_size:
                outs.append(self.embed_tensors(np.stack(batch)))
                batch = []
        if batch:
            outs.append(self.embed_tensors(np.stack(batch)))
        return np.concatenate(outs) if outs else np.zeros((0, self.dim), np.float32)

    def embed_files(
        self, paths: Iterable[str | Path], progress: bool = False
    ) -> tuple[np.ndarray, list[int], list[str]]:
        """Embed image files; a bad file does not stop the others.

        Returns (embeddings of the good files in input order, their input indices, error messages).
        """
        from tqdm import tqdm

        good_idx: list[int] = []
        errors: list[str] = []

        def readable() -> Iterator[np.ndarray]:
            for i, p in enumerate(tqdm(list(paths), desc="embed", unit="img", disable=not progress)):
                try:
                    image = read_image(p)
                except ImageError as e:
                    errors.append(str(e))
                    continue
                good_idx.append(i)
                yield image

        return self.embed(readable()), good_idx, errors
