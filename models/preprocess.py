"""The one preprocessing used by training's evaluation transform and by the runtime embedder.

Kept in numpy/OpenCV so the ONNX runtime and training share the exact same code; its
parameters travel in the model file's metadata.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

RESIZE_RULES = ("pad", "squash")


@dataclass(frozen=True)
class Preprocess:
    """How a BGR crop becomes the network's input tensor.

    resize: "pad" keeps the aspect ratio and pads to a square with the mean colour (checkout crops
    come in any shape and a product must not be cut or distorted); "squash" stretches to a square.
    """

    size: int = 224
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    colour: str = "RGB"
    resize: str = "pad"

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or not 16 <= self.size <= 1024:
            raise ValueError(f"preprocess.size must be an integer in [16, 1024], got {self.size!r}")
        if self.colour not in ("RGB", "BGR"):
            raise ValueError(f"preprocess.colour must be 'RGB' or 'BGR', got {self.colour!r}")
        if self.resize not in RESIZE_RULES:
            raise ValueError(f"preprocess.resize must be one of {RESIZE_RULES}, got {self.resize!r}")
        for field in ("mean", "std"):
            v = getattr(self, field)
            if len(v) != 3 or not all(isinstance(x, (int, float)) for x in v):
                raise ValueError(f"preprocess.{field} must be three numbers, got {v!r}")
        if min(self.std) <= 0:
            raise ValueError(f"preprocess.std must be positive, got {self.std!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"preprocess has unknown fields {sorted(unknown)}")
        d = dict(d)
        for field in ("mean", "std"):
            if field in d:
                d[field] = tuple(d[field])
        return cls(**d)

    def resize_to_square(self, bgr: np.ndarray) -> np.ndarray:
        """Resize (and pad) a uint8 BGR image to size x size, still uint8 BGR."""
        h, w = bgr.shape[:2]
        s = self.size
        if self.resize == "squash":
            interp = cv2.INTER_AREA if h * w > s * s else cv2.INTER_LINEAR
            return cv2.resize(bgr, (s, s), interpolation=interp)
        scale = s / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(bgr, (nw, nh), interpolation=interp)
        fill = [round(255 * m) for m in self.mean]
        if self.colour == "RGB":
            fill = fill[::-1]  # the mean is given in the network's colour order; the image is still BGR
        top, left = (s - nh) // 2, (s - nw) // 2
        return cv2.copyMakeBorder(resized, top, s - nh - top, left, s - nw - left, cv2.BORDER_CONSTANT, value=fill)

    def normalise(self, square_bgr: np.ndarray) -> np.ndarray:
        """uint8 BGR square -> float32 CHW in the network's colour order, mean/std normalised."""
        img = square_bgr[:, :, ::-1] if self.colour == "RGB" else square_bgr
        x: np.ndarray = img.astype(np.float32) / 255.0
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        return self.normalise(self.resize_to_square(bgr))
