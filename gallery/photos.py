"""Reading reference photos for the gallery: decode (refusing bad files with their name), embed,
and fingerprint them twice: sha256 of the bytes (the same photo is stored once, and added once) and
a perceptual hash of the pixels (the same picture re-saved or resized, for `check`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from retail_reid.compat import StrEnum
from retail_reid.gallery.image_store import image_extension, image_relpath, sha256_bytes
from retail_reid.images import ImageError, decode_image
from retail_reid.models.runtime import OnnxEmbedder
from retail_reid.userfiles import read_user_file


class RefOrigin(StrEnum):
    """Where a reference came from, as the catalogue shows it."""

    PHOTO = "photo"  # a photo an operator added (upload, add, import-folder, bundle)
    LANE = "lane"  # a crop a lane saw of a verified scan (lane references, docs/console.md)
    RENDERING = "rendering"  # a lane-camera view of a photo (gallery/renderings.py); never shown as a photo


@dataclass(frozen=True)
class Photo:
    """A readable reference photo, ready to be stored under `sku`."""

    sku: str
    path: Path  # where its bytes are read from now
    source: str  # where the operator added it from (recorded in the gallery)
    sha256: str
    ext: str
    phash: int  # 64 bits as a signed integer (SQLite's INTEGER)
    origin: RefOrigin = RefOrigin.PHOTO

    @property
    def relpath(self) -> str:
        return image_relpath(self.sha256, self.ext)


def perceptual_hash(image: np.ndarray) -> int:
    """DCT hash: the signs of the 8x8 lowest frequencies of a 32x32 grey thumbnail against their median.

    Robust to re-encoding, resizing and small colour changes; two different product photos of
    the sample set differ in at least 14 of the 64 bits.
    """
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    low = cv2.dct(cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA))[:8, :8].ravel()
    bits = np.packbits(low > np.median(low[1:]))
    return int.from_bytes(bits.tobytes(), "big", signed=True)


def read_bytes(path: Path) -> bytes:
    return read_user_file(path, "image", ImageError)


def embed_photos(
    items: Sequence[tuple[str, Path]], embedder: OnnxEmbedder, progress: bool = False
) -> tuple[list[Photo], np.ndarray, list[str]]:
    """Read and embed (sku, path) pairs; a bad file or a repeated photo does not stop the others.

    Returns the good photos, their embeddings (rows in the same order) and one error message per bad file.
    """
    photos: list[Photo] = []
    errors: list[str] = []
    seen: dict[str, Path] = {}

    def readable() -> Iterator[np.ndarray]:
        for sku, path in tqdm(items, desc="embed", unit="img", disable=not progress):
            try:
                data = read_bytes(path)
                image = decode_image(data, str(path))
            except ImageError as e:
                errors.append(str(e))
                continue
            sha = sha256_bytes(data)
            if sha in seen:
                errors.append(f"{path}: the same photo as {seen[sha]} (given twice)")
                continue
            seen[sha] = path
            photos.append(Photo(sku, path, str(path), sha, image_extension(data), perceptual_hash(image)))
            yield image

    vectors = embedder.embed(readable())
    return photos, vectors, errors
