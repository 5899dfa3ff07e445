"""Reading product photos and crops robustly: every failure names the file and says why.

Photos come from operators, bundles and folders nobody checked, so an image's size is read from its
header (Pillow reads only the header) and refused before a pixel is decoded: a 1 MB file can
declare 12000 x 12000 16-bit pixels, gigabytes once decoded.
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from retail_reid.errors import ReidError
from retail_reid.userfiles import read_user_file

MIN_SIDE = 8  # smaller images carry no product detail; refuse rather than embed noise
MAX_PIXELS = 120_000_000  # above ~11k x 11k an image is almost surely not a crop or a product photo


class ImageError(ReidError, ValueError):
    """An image that cannot be used; the message names the file."""


def _is_truncated(data: bytes) -> bool:
    """JPEG and PNG files carry an end marker; a file cut short lacks it (OpenCV decodes it anyway)."""
    if data[:3] == b"\xff\xd8\xff":
        return b"\xff\xd9" not in data[-1024:]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in data[-64:]
    return False


def to_bgr8(img: np.ndarray, name: str = "<array>") -> np.ndarray:
    """Normalise any decoded image (gray, 16-bit, float, BGRA) to 3-channel uint8 BGR."""
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise ImageError(f"{name}: unsupported image shape {img.shape}")
    if img.dtype == np.uint16:
        img = (img // 257).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageError(f"{name}: unsupported pixel type {img.dtype}")
    if img.shape[2] == 1:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    h, w = img.shape[:2]
    check_size(w, h, name)
    return np.ascontiguousarray(img)


def check_size(width: int, height: int, name: str) -> None:
    """Refuse images too small to show a product or too large to be a photo of one."""
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"{name}: image is {width}x{height} pixels, smaller than the minimum {MIN_SIDE}x{MIN_SIDE}")
    if width * height > MAX_PIXELS:
        raise ImageError(f"{name}: image is {width}x{height} pixels, more than the limit of {MAX_PIXELS} pixels")


def header_size(data: bytes, name: str = "<bytes>") -> tuple[int, int]:
    """(width, height) as the image's header declares them, without decoding the pixels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as im:
                return im.size
        except Image.DecompressionBombError:  # Pillow's own limit, above ours
            raise ImageError(f"{name}: image is more than the limit of {MAX_PIXELS} pixels (says its header)") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error):
            raise ImageError(f"{name}: not a readable image (corrupt or unsupported format)") from None


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to uint8 BGR, refusing empty, corrupt and truncated data, and
    images whose header declares a size out of bounds (before decoding them)."""
    if not data:
        raise ImageError(f"{name}: file is empty (0 bytes)")
    if _is_truncated(data):
        raise ImageError(f"{name}: image file is truncated (no end-of-image marker)")
    check_size(*header_size(data, name), name)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageError(f"{name}: not a readable image (corrupt or unsupported format)")
    return to_bgr8(img, name)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 BGR (OpenCV's order), with an error that names the file."""
    return decode_image(read_user_file(path, "image", ImageError), str(path))
