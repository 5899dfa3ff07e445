"""The lane-references folder as the gallery reads it: its layout, its per-product manifests, and the
kept crops offered as gallery references (`reid gallery accept-lane-references`, the console's
lane-references page). The lane writes the folder (pipeline/lane_references.py, its sampler); what it
holds is gallery knowledge, so it is defined here and the lane imports it.

Layout under ROOT (STATE/lane-references for `reid edge`, `reid replay --lane-references DIR`):

    images/ab/<sha256>.jpg      the crops, content-addressed (the same bytes are kept once)
    products/<key>.json         per product: its SKU and its crops (file, confidence, quality, time, lane)
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from retail_reid.durable import replace_atomically
from retail_reid.errors import ReidError

FOLDER = "lane-references"  # under a lane's state folder
IMAGES = "images"
PRODUCTS = "products"
SHA256 = re.compile(r"[0-9a-f]{64}")


class LaneReferenceError(ReidError, OSError):
    """A lane-references folder that cannot be read or written; the message names it."""


@dataclass(frozen=True, kw_only=True)
class LaneCrop:
    """One kept crop and why it was kept."""

    sha256: str
    image: str  # relative to the folder's root
    bytes: int
    confidence: float
    quality: float  # the crop's quality score (pipeline.view_quality), 0-1
    ts: float  # lane (POS) clock, the pass's end
    lane: str
    track_id: int


@dataclass
class ProductSample:
    sku: str
    crops: list[LaneCrop] = field(default_factory=list)  # oldest first


def product_key(sku: str) -> str:
    """A file name for any SKU (SKUs may hold any printable text)."""
    return hashlib.sha256(sku.encode("utf-8")).hexdigest()[:24]


def read_samples(root: Path) -> dict[str, ProductSample]:
    """The products' samples in a lane-references folder (an unreadable manifest is skipped)."""
    found: dict[str, ProductSample] = {}
    for path in sorted((root / PRODUCTS).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            sample = ProductSample(str(data["sku"]), [LaneCrop(**c) for c in data["crops"]])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        found[sample.sku] = sample
    return found


def write_sample(root: Path, sample: ProductSample) -> None:
    """Write `sample`'s manifest atomically (its crops are written before it)."""
    body = {"sku": sample.sku, "crops": [asdict(c) for c in sample.crops]}
    path = root / PRODUCTS / f"{product_key(sample.sku)}.json"
    replace_atomically(path, json.dumps(body, indent=1).encode("utf-8"), "lane-reference-manifest")


@dataclass(frozen=True, kw_only=True)
class Suggestion:
    """A kept crop offered as a reference of `sku`: the file it is in and why it was kept."""

    sku: str
    crop: LaneCrop
    path: Path
    folder: Path  # the lane-references folder it is in


def references_folder(path: Path) -> Path:
    """A lane-references folder given itself or the lane's state folder that holds one."""
    for candidate in (path / FOLDER, path):
        if (candidate / PRODUCTS).is_dir():
            return candidate
    raise LaneReferenceError(
        f"{path}: no lane references here (expected {path / FOLDER / PRODUCTS} or {path / PRODUCTS})"
    )


def suggestions(folders: list[Path]) -> dict[str, list[Suggestion]]:
    """Every kept crop of the given folders by SKU, most confident first. A manifest line that does
    not name its own content-addressed file is skipped: no manifest can point outside its folder."""
    found: dict[str, list[Suggestion]] = {}
    for folder in folders:
        for sku, sample in read_samples(folder).items():
            for crop in sample.crops:
                if not SHA256.fullmatch(crop.sha256) or crop.image != f"{IMAGES}/{crop.sha256[:2]}/{crop.sha256}.jpg":
                    continue
                path = folder / crop.image
                if path.is_file() and not path.is_symlink():
                    found.setdefault(sku, []).append(Suggestion(sku=sku, crop=crop, path=path, folder=folder))
    for items in found.values():
        items.sort(key=lambda s: (-s.crop.confidence, -s.crop.ts))
    return found


def choose_automatic(
    found: dict[str, list[Suggestion]],
    *,
    min_confidence: float,
    max_per_product: int,
    products: set[str],
    lane_refs: dict[str, int],
    known: set[str],
) -> list[Suggestion]:
    """The automatic mode's rules: only products the gallery holds; only crops at or above
    `min_confidence` not already references (`known` sha256s); per product, the most confident
    first until it holds `max_per_product` lane references (`lane_refs`: how many it holds now)."""
    chosen: list[Suggestion] = []
    for sku in sorted(found.keys() & products):
        room = max_per_product - lane_refs.get(sku, 0)
        seen: set[str] = set()
        for s in found[sku]:
            if room <= 0:
                break
            if s.crop.confidence < min_confidence or s.crop.sha256 in known or s.crop.sha256 in seen:
                continue
            seen.add(s.crop.sha256)
            chosen.append(s)
            room -= 1
    return chosen
