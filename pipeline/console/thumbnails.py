"""A small picture per alert for the alert list: its first crop (or the lane mid-pass when it kept
no crop), shrunk to `SIDE` pixels and encoded as a JPEG. The file is bounded before it is read and
decoded (`retail_reid.images.decode_image`), and each thumbnail is made once per version of its
file (kept in memory, `CACHED` of them at most; the browser keeps it too)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2

from retail_reid.images import ImageError, decode_image

SIDE = 96  # longest side of a thumbnail, pixels
MAX_SOURCE_BYTES = 16 << 20  # a crop or a lane frame the lane wrote is far smaller
CACHED = 2048  # thumbnails kept: a day of a busy lane's list pages, at about 4 KB each
QUALITY = 80


def thumbnail(path: Path) -> bytes | None:
    """The thumbnail of the image file `path` (already checked to lie in its folder), or None if it
    is too large or not an image."""
    try:
        st = path.stat()
    except OSError:
        return None
    return _made(str(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=CACHED)
def _made(path: str, mtime_ns: int, size: int) -> bytes | None:
    """Keyed by the file's version (mtime, size): a file replaced is read again."""
    if size > MAX_SOURCE_BYTES:
        return None
    try:
        with open(path, "rb") as f:
            image = decode_image(f.read(MAX_SOURCE_BYTES + 1), Path(path).name)
    except (OSError, ImageError):
        return None
    h, w = image.shape[:2]
    scale = min(1.0, SIDE / max(h, w))
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
    return jpeg.tobytes() if ok else None
