"""Writing ONNX embedder files (torch-free, needs the `onnx` package): their metadata, and the file
swapped in whole so a crash never leaves a half-written model where a lane would load it."""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from retail_reid.models.runtime import METADATA_KEY, ModelInfo


def set_info(model: onnx.ModelProto, info: ModelInfo) -> None:
    """Replace the model's metadata with `info`."""
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info.to_json()


def save_whole(model: onnx.ModelProto, path: Path) -> None:
    """Save to a temporary file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        onnx.save(model, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
