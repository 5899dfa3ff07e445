"""Reading product photos and crops robustly: every failure names the file and says why.

Photos come from operators, bundles and folders nobody checked, so an image's size is read from its
header (Pillow reads only the header) and refused before a pixel is decoded: a 1 MB file can
declare 12000 x 12000 16-bit pixels, gigabytes once decoded.

Memory per image is bounded. A JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling,
`cv2.IMREAD_REDUCED_*`) so that its longest side is at most `MAX_SIDE`: at most 4096 x 4096 x 3
bytes (48 MiB) for any JPEG up to `MAX_JPEG_PIXELS`. Other formats (PNG, TIFF, WebP, BMP) cannot be
decoded smaller, so they are held to `MAX_PIXELS`: at most 24 Mpx x 3 bytes (69 MiB) for 8-bit RGB,
and 183 MiB for the rarest case, 16-bit RGBA; once decoded they are shrunk to `MAX_SIDE` at once.
The embedder uses 288 px, so nothing is lost. At most `DECODES_AT_ONCE` decodes run at once per
process (the console serves uploads on several threads).
"""

from __future__ import annotations

import io
import struct
import threading
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from retail_reid.errors import ReidError
from retail_reid.userfiles import read_user_file

MIN_SIDE = 8  # smaller images carry no product detail; refuse rather than embed noise
MAX_PIXELS = 24_000_000  # formats decoded whole: 6000 x 4000, a DSLR photo
MAX_JPEG_PIXELS = 120_000_000  # JPEGs are decoded reduced; above ~11k x 11k surely not a product photo
MAX_SIDE = 4096  # longest side kept of a decoded image
DECODES_AT_ONCE = 2
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})  # what a folder of images holds
REDUCED = ((2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4), (8, cv2.IMREAD_REDUCED_COLOR_8))
_decode_slots = threading.BoundedSemaphore(DECODES_AT_ONCE)


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


def check_size(width: int, height: int, name: str, limit: int = MAX_PIXELS) -> None:
    """Refuse images too small to show a product or too large to be a photo of one (`limit`
    pixels: `MAX_JPEG_PIXELS` for a JPEG, which is decoded reduced)."""
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"{name}: image is {width}x{height} pixels, smaller than the minimum {MIN_SIDE}x{MIN_SIDE}")
    if width * height > limit:
        raise ImageError(f"{name}: image is {width}x{height} pixels, more than the limit of {limit} pixels")


def read_header(data: bytes, name: str = "<bytes>") -> tuple[int, int, str]:
    """(width, height, format) as the image's header declares them, without decoding the pixels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as im:
                return im.size[0], im.size[1], im.format or ""
        except Image.DecompressionBombError:  # Pillow's own limit, above ours
            raise ImageError(
                f"{name}: image is more than the limit of {MAX_JPEG_PIXELS} pixels (says its header)"
            ) from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error):
            raise ImageError(f"{name}: not a readable image (corrupt or unsupported format)") from None


def _jpeg_flags(width: int, height: int) -> int:
    """The imdecode flags of a JPEG: reduced by 2, 4 or 8 (the least that brings its longest side
    to `MAX_SIDE`, or 8) when it is larger, EXIF orientation ignored as in a whole decode."""
    longest, flags = max(width, height), cv2.IMREAD_UNCHANGED
    for factor, flag in REDUCED:
        if longest > MAX_SIDE * factor // 2:
            flags = flag | cv2.IMREAD_IGNORE_ORIENTATION
    return flags


def shrink(img: np.ndarray) -> np.ndarray:
    """`img` with its longest side at most `MAX_SIDE` (area averaging), or itself."""
    h, w = img.shape[:2]
    scale = MAX_SIDE / max(h, w)
    if scale >= 1:
        return img
    return cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to uint8 BGR of at most `MAX_SIDE` pixels a side, refusing
    empty, corrupt and truncated data, and images whose header declares a size out of bounds
    (before decoding them)."""
    if not data:
        raise ImageError(f"{name}: file is empty (0 bytes)")
    if _is_truncated(data):
        raise ImageError(f"{name}: image file is truncated (no end-of-image marker)")
    width, height, kind = read_header(data, name)
    jpeg = kind == "JPEG"
    check_size(width, height, name, MAX_JPEG_PIXELS if jpeg else MAX_PIXELS)
    flags = _jpeg_flags(width, height) if jpeg else cv2.IMREAD_UNCHANGED
    with _decode_slots:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
        if img is None:
            raise ImageError(f"{name}: not a readable image (corrupt or unsupported format)")
        return to_bgr8(shrink(img), name)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 BGR (OpenCV's order), with an error that names the file."""
    return decode_image(read_user_file(path, "image", ImageError), str(path))
