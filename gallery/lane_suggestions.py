"""The lane-references folder as the gallery reads it: its layout, its per-product manifests, and the
kept crops offered as gallery references (`reid gallery accept-lane-references`, the console's
lane-references page). The lane writes the folder (pipeline/lane_references.py, its sampler); what it
holds is gallery knowledge, so it is defined here and the lane imports it.

Layout under ROOT (STATE/lane-references for `reid edge`, `reid replay --lane-references DIR`):

    images/ab/<sha256>.jpg      the crops, content-addressed (the same bytes are kept once)
    products/<key>.json         per product: its SKU and its crops (file, confidence, quality, time, lane,
                                and the policy that kept it with the camera's best SKU and similarity then)

A crop kept by the `confident` policy is a suggestion: the camera verified its scan. One kept by the
`till` policy is a candidate: only the till labelled it, so the automatic mode accepts it only by
consensus (`choose_consensus`): it must look more like the rest of its SKU than like any other SKU.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from retail_reid.compat import StrEnum
from retail_reid.durable import replace_atomically
from retail_reid.errors import ReidError
from retail_reid.gallery.photos import embed_photos
from retail_reid.models.runtime import OnnxEmbedder

if TYPE_CHECKING:
    from retail_reid.gallery.reading import GalleryReader

FOLDER = "lane-references"  # under a lane's state folder
IMAGES = "images"
PRODUCTS = "products"
SHA256 = re.compile(r"[0-9a-f]{64}")


class LaneReferenceError(ReidError, OSError):
    """A lane-references folder that cannot be read or written; the message names it."""


class LabelPolicy(StrEnum):
    """Which passes label crops for the gallery (`[lane_references] policy`)."""

    CONFIDENT = "confident"  # the camera verified the scan with high confidence: a suggestion
    TILL = "till"  # the till alone named the item unambiguously (one scan, one item, no void, no quantity): a candidate


@dataclass(frozen=True, kw_only=True)
class LaneCrop:
    """One kept crop and why it was kept. The fields after `track_id` came with the till policy; a
    manifest written before them reads as the confident policy with the camera's SKU unrecorded."""

    sha256: str
    image: str  # relative to the folder's root
    bytes: int
    confidence: float  # calibrated confidence of the camera's match (confident: of the scanned SKU; till: of seen_sku)
    quality: float  # the crop's quality score (pipeline.view_quality), 0-1
    ts: float  # lane (POS) clock, the pass's end
    lane: str
    track_id: int
    policy: LabelPolicy = LabelPolicy.CONFIDENT
    seen_sku: str | None = None  # the camera's best SKU for the pass when it was kept
    seen_score: float | None = None  # ... and its similarity

    @property
    def day(self) -> int:
        """The day of the lane's clock it was kept on (UTC days for a POS clock in epoch seconds)."""
        return int(self.ts // 86400)


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
            crops = [
                LaneCrop(**{**c, "policy": LabelPolicy(c.get("policy", LabelPolicy.CONFIDENT))}) for c in data["crops"]
            ]
            sample = ProductSample(str(data["sku"]), crops)
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


def lane_source(s: Suggestion) -> str:
    """What the gallery records as a lane reference's source: its lane, time and policy, then its
    file. The lane's name is quoted, so `lane_prefix` finds exactly that lane's references."""
    return f"{lane_prefix(s.crop.lane)}{s.crop.ts:.3f} ({s.crop.policy.value}): {s.path}"


def lane_prefix(lane: str) -> str:
    """How every source `lane_source` records for `lane` begins."""
    return f"lane {json.dumps(lane, ensure_ascii=False)} at "


def choose_automatic(
    found: dict[str, list[Suggestion]],
    *,
    min_confidence: float,
    max_per_product: int,
    products: set[str],
    lane_refs: dict[str, int],
    known: set[str],
) -> list[Suggestion]:
    """The automatic mode's rules: only products the gallery holds; only crops of the confident
    policy at or above `min_confidence` not already references (`known` sha256s); per product, the
    most confident first until it holds `max_per_product` lane references (`lane_refs`: how many it
    holds now). Candidates of the till policy are never chosen here (`choose_consensus` does)."""
    chosen: list[Suggestion] = []
    for sku in sorted(found.keys() & products):
        room = max_per_product - lane_refs.get(sku, 0)
        seen: set[str] = set()
        for s in found[sku]:
            if room <= 0:
                break
            if (
                s.crop.policy is not LabelPolicy.CONFIDENT
                or s.crop.confidence < min_confidence
                or s.crop.sha256 in known
                or s.crop.sha256 in seen
            ):
                continue
            seen.add(s.crop.sha256)
            chosen.append(s)
            room -= 1
    return chosen


@dataclass(frozen=True, kw_only=True)
class Consensus:
    """When a till candidate may become a reference (`choose_consensus`); each limit is checked when
    built, a value out of it is a one-line error naming the option."""

    margin: float = 0.05  # own centroid's cosine over the best other SKU's, at least; [0, 1]
    min_passes: int = 3  # candidate passes of the SKU, at least; [1, 1000]
    min_days: int = 1  # distinct days those passes fall on, at least; [1, 366]

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {
        "margin": (0.0, 1.0),
        "min_passes": (1, 1000),
        "min_days": (1, 366),
    }

    def __post_init__(self) -> None:
        for name, (low, high) in self.LIMITS.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise LaneReferenceError(f"--{name.replace('_', '-')} must be in [{low:g}, {high:g}], got {value}")


def candidate_vectors(found: dict[str, list[Suggestion]], embedder: OnnxEmbedder) -> dict[str, np.ndarray]:
    """The embeddings of the till candidates in `found`, by sha256 (a crop that cannot be read has none)."""
    items = [(s.sku, s.path) for ss in found.values() for s in ss if s.crop.policy is LabelPolicy.TILL]
    photos, vectors, _ = embed_photos(items, embedder)
    return {p.sha256: v for p, v in zip(photos, vectors, strict=True)}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _pass_of(c: LaneCrop) -> tuple[str, int, float]:
    return c.lane, c.track_id, c.ts


def choose_consensus(
    found: dict[str, list[Suggestion]],
    *,
    vectors: Mapping[str, np.ndarray],
    refs: Mapping[str, np.ndarray],
    rules: Consensus,
    max_per_product: int,
    lane_refs: dict[str, int],
    known: set[str],
) -> list[Suggestion]:
    """Till candidates that agree with their SKU. `vectors`: each candidate's embedding by sha256
    (unit length; a candidate without one is skipped); `refs`: each SKU's current references (rows,
    unit length), whose SKUs are the products the gallery holds.

    A SKU's candidates (not already references) count only with at least `min_passes` passes on
    at least `min_days` days. Then a candidate c of SKU s is accepted when

        cos(c, own) - max over SKUs t != s of cos(c, rival(t)) >= margin,
        own = unit(unit(mean(refs[s])) + unit(mean(candidates of s from other passes)))
        rival(t) = unit(unit(mean(refs[t])) + unit(mean(candidates of t)))

    (the photos' centroid alone where there are no such candidates): the photos and the lane's crops
    weigh alike, so neither a few odd photos nor a run of switched items decides alone, and every
    SKU is looked at the same way: a lane crop resembles other lane crops (their blur, light and
    hands) more than any photo, so against rivals of photos alone a switched item's crop passed as
    its scanned SKU's (docs/gallery.md). Per product, the widest margins first until it holds
    `max_per_product` lane references."""
    skus = sorted(refs)
    if not skus:
        return []
    pending = {sku: _pending(found.get(sku, []), vectors, known) for sku in skus}
    centroids = np.stack([_unit(refs[t].mean(axis=0)) for t in skus])
    rivals_all = np.stack(
        [
            _unit(centroids[i] + _unit(np.mean([vectors[s.crop.sha256] for s in pending[t]], axis=0)))
            if pending[t]
            else centroids[i]
            for i, t in enumerate(skus)
        ]
    )
    chosen: list[Suggestion] = []
    for sku in sorted(found.keys() & refs.keys()):
        cands = pending[sku]
        passes = {_pass_of(s.crop) for s in cands}
        if len(passes) < rules.min_passes or len({s.crop.day for s in cands}) < rules.min_days:
            continue
        own_photos = centroids[skus.index(sku)]
        rivals = np.delete(rivals_all, skus.index(sku), axis=0)
        scored: list[tuple[float, Suggestion]] = []
        for s in cands:
            v = vectors[s.crop.sha256]
            others = [vectors[o.crop.sha256] for o in cands if _pass_of(o.crop) != _pass_of(s.crop)]
            own = _unit(own_photos + _unit(np.mean(others, axis=0))) if others else own_photos
            best_rival = float((rivals @ v).max()) if len(rivals) else -1.0
            margin = float(own @ v) - best_rival
            if margin >= rules.margin:
                scored.append((margin, s))
        scored.sort(key=lambda m: -m[0])
        room = max_per_product - lane_refs.get(sku, 0)
        chosen.extend(s for _, s in scored[: max(room, 0)])
    return chosen


def _pending(found: list[Suggestion], vectors: Mapping[str, np.ndarray], known: set[str]) -> list[Suggestion]:
    """A SKU's till candidates that are not references yet and have an embedding, each crop once."""
    pending: dict[str, Suggestion] = {}
    for s in found:
        if s.crop.policy is LabelPolicy.TILL and s.crop.sha256 not in known and s.crop.sha256 in vectors:
            pending.setdefault(s.crop.sha256, s)
    return list(pending.values())


def choose_accepted(
    found: dict[str, list[Suggestion]],
    store: GalleryReader,
    *,
    min_confidence: float,
    max_per_product: int,
    rules: Consensus,
    model: str | Path | None = None,
) -> list[Suggestion]:
    """What the automatic mode accepts into `store`'s gallery: the confident crops (`choose_automatic`),
    then the till candidates that pass the consensus (`choose_consensus`) in the room left."""
    lane_refs, known = store.lane_reference_counts(), store.reference_hashes()
    chosen = choose_automatic(
        found,
        min_confidence=min_confidence,
        max_per_product=max_per_product,
        products={r.product.sku for r in store.products()},
        lane_refs=lane_refs,
        known=known,
    )
    if not any(s.crop.policy is LabelPolicy.TILL for ss in found.values() for s in ss):
        return chosen
    for s in chosen:
        lane_refs[s.sku] = lane_refs.get(s.sku, 0) + 1
    return chosen + choose_consensus(
        found,
        vectors=candidate_vectors(found, store.embedder(model=model)),
        refs=store.reference_vectors(),
        rules=rules,
        max_per_product=max_per_product,
        lane_refs=lane_refs,
        known=known | {s.crop.sha256 for s in chosen},
    )
