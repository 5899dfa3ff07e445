"""The content-addressed photo store: each reference photo is kept once, under its sha256, with an
extension that says what its bytes are."""

from __future__ import annotations

import hashlib
from pathlib import Path

from retail_reid.durable import replace_atomically
from retail_reid.gallery.integrity import image_problem, set_aside

IMAGES_DIR = "images"

# Image formats recognised by their first bytes, so the stored file gets a truthful extension.
_MAGIC = (
    (b"\xff\xd8\xff", ".jpg"),
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"BM", ".bmp"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
)


def image_extension(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    return ".img"


def image_relpath(sha256: str, ext: str) -> str:
    """Where a photo with this content lives, relative to the gallery directory."""
    return f"{IMAGES_DIR}/{sha256[:2]}/{sha256}{ext}"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def store_image(root: Path, relpath: str, data: bytes) -> bool:
    """Put a photo into the content-addressed store; True if it was not there (whole) before. A stored
    copy that no longer matches its sha256 is set aside (DIR/damaged/) and replaced by these bytes."""
    path = root / relpath
    if path.is_file():
        if image_problem(path) is None:
            return False
        set_aside(root, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, data, "image")
    return True
