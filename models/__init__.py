"""Embedder: training (torch, behind the [train] extra) and the torch-free ONNX runtime.

Only the torch-free pieces are re-exported here, so ``import models`` is safe on an edge box.
"""

from retail_reid.images import ImageError, read_image
from retail_reid.models.runtime import ModelError, OnnxEmbedder, default_model_path

__all__ = ["ImageError", "ModelError", "OnnxEmbedder", "default_model_path", "read_image"]
