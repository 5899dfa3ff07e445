"""An alert's crops matched against the gallery as the lanes match them (each crop embedded with
the gallery's model and scored by the lanes' `Gallery`), so that an operator adding them as
references of a product sees which crops look more like another product, and the console can
refuse those: a crop that matches another SKU better would teach the gallery a wrong product."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from retail_reid.errors import ReidError
from retail_reid.gallery.matching import Gallery
from retail_reid.images import read_image

MAX_CROP_BYTES = 16 * 2**20  # a crop file larger than this is not read (lanes write crops of some KB)


@dataclass(frozen=True)
class AlertCrop:
    number: int  # 1-based among the alert's crops, as the page names them
    index: int  # its place in the alert's evidence list (its picture's address)
    path: Path  # checked to lie inside the alert's folder


@dataclass(frozen=True)
class CropMatch:
    crop: AlertCrop
    best_sku: str | None  # the SKU it looks most like; None for an unreadable crop or an empty gallery
    best_score: float  # cosine similarity, scored as the lanes score
    target_score: float  # its similarity to the target SKU (-1.0 where the target has no references)
    problem: str | None = None  # why it could not be read

    @property
    def elsewhere(self) -> bool:
        """It matches another SKU better than the target."""
        return self.best_sku is not None and self.best_score > self.target_score

    def describe(self, target: str) -> str:
        return (
            f"crop {self.crop.number} looks more like {self.best_sku} ({self.best_score:.3f}) "
            f"than {target} ({self.target_score:.3f})"
        )


def match_crops(gallery: Gallery, crops: list[AlertCrop], target: str) -> list[CropMatch]:
    """Each crop's best-matching SKU and its similarity to `target`, one crop at a time (each would
    be a reference of its own); a crop that cannot be read is named with its problem."""
    images, readable, found = [], [], {}
    for crop in crops:
        try:
            if crop.path.stat().st_size > MAX_CROP_BYTES:
                raise ReidError(f"{crop.path.name}: over {MAX_CROP_BYTES // 2**20} MiB, not read")
            images.append(read_image(crop.path))
            readable.append(crop)
        except (OSError, ReidError) as e:
            found[crop.index] = CropMatch(crop, None, -1.0, -1.0, problem=str(e))
    for crop, vector in zip(readable, gallery.embedder.embed(images), strict=True):
        v = gallery.verify(vector, target)
        best = (
            (target, v.similarity)
            if v.similarity >= v.best_other_similarity
            else (v.best_other_sku, v.best_other_similarity)
        )
        found[crop.index] = CropMatch(crop, best[0] if best[1] > -1.0 else None, best[1], v.similarity)
    return [found[c.index] for c in crops]
