"""`reid gallery check`: what makes a gallery mislead the lanes, found before it does.

- confusable SKU pairs: references of two SKUs closer than the similarity at which the pipeline
  takes an item for the other SKU (the model's calibrated threshold), so switches between them are
  missed or wrongly alerted;
- outlier references: closer to another SKU's references than to any of its own, and below the
  calibrated EER threshold to its own (most likely a photo of the wrong product);
- duplicate photos: the same picture re-encoded or resized (equal or near perceptual hashes);
- SKUs with too few references to be recognised from different sides;
- lane-camera renderings out of step with their photos: a rendering whose photo is gone (it would
  still vote for its SKU), or a photo without the renderings the profile makes.

The first four look at photos and lane references only (a rendering is its photo seen through the
lane camera, not a photo of its own). Neighbours come from the published version's FAISS index, so
the check scales like matching does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from retail_reid.gallery import db
from retail_reid.gallery.damage import Damage, find_damage
from retail_reid.gallery.errors import GalleryError
from retail_reid.gallery.index import reference_vectors
from retail_reid.gallery.matching import Gallery
from retail_reid.gallery.photos import RefOrigin
from retail_reid.gallery.snapshot import Snapshot
from retail_reid.gallery.store import GalleryStore

NEIGHBOURS = 32  # nearest references looked at per reference
PHASH_BITS = 64
NEAR_DUPLICATE_BITS = 8  # re-saved or resized copies differ in 0-4 bits, different photos in 14 or more
MIN_REFS = 3
# Perceptual hashes are split into 9 blocks of 7 bits: two hashes within 8 bits agree on a whole block.
HASH_BLOCKS, HASH_BLOCK_BITS = 9, 7


@dataclass(frozen=True)
class RefInfo:
    id: int
    sku: str
    image: str
    source: str
    phash: int


@dataclass(frozen=True)
class ConfusablePair:
    sku_a: str
    sku_b: str
    similarity: float  # the closest pair of their references
    ref_a: int
    ref_b: int


@dataclass(frozen=True)
class Outlier:
    ref: int
    sku: str
    source: str
    own_similarity: float  # to the closest other reference of its own SKU
    nearest_sku: str
    nearest_similarity: float  # to the closest reference of another SKU


@dataclass(frozen=True)
class Duplicate:
    kind: str  # "identical" (same perceptual hash) or "near"
    bits: int  # perceptual-hash bits that differ
    ref_a: int
    sku_a: str
    source_a: str
    ref_b: int
    sku_b: str
    source_b: str


@dataclass(frozen=True)
class FewRefs:
    sku: str
    refs: int


@dataclass(frozen=True)
class RenderingProblem:
    ref: int  # the rendering, or the photo lacking renderings
    sku: str
    detail: str


@dataclass(frozen=True)
class CheckReport:
    version: int
    refs: int  # photos and lane references
    renderings: int  # their lane-camera renderings
    skus: int
    confusable_threshold: str
    confusable_similarity: float
    outlier_threshold: float
    confusable: list[ConfusablePair]
    outliers: list[Outlier]
    duplicates: list[Duplicate]
    few_refs: list[FewRefs]
    min_refs: int
    rendering_problems: list[RenderingProblem]

    @property
    def problems(self) -> int:
        return (
            len(self.confusable)
            + len(self.outliers)
            + len(self.duplicates)
            + len(self.few_refs)
            + len(self.rendering_problems)
        )

    def to_dict(self) -> dict:
        return asdict(self)


def check_gallery(
    snap: Snapshot,
    refs: dict[int, RefInfo],
    threshold: Callable[[str], float],
    confusable_threshold: str = "far_0.01",
    min_refs: int = MIN_REFS,
    rendering_problems: Sequence[RenderingProblem] = (),
) -> CheckReport:
    """Check a loaded version; `refs` describes its photos and lane references (by id: the version's
    other rows are renderings), `threshold` is the model's calibration lookup (Calibration.threshold)."""
    n = snap.index.ntotal
    vectors = reference_vectors(snap.index, snap.ref_ids)  # row r: reference snap.ref_ids[r]
    row_sku = snap.ref_sku
    is_photo = np.isin(snap.ref_ids, np.fromiter(refs, np.int64, len(refs)))
    photo_rows = np.flatnonzero(is_photo)
    own_best = np.full(n, -2.0, np.float32)  # best similarity to another reference of the same SKU
    for refs_of_sku in snap.sku_refs:
        rows = snap.rows_of(refs_of_sku)
        rows = rows[is_photo[rows]]
        if len(rows) > 1:
            sims = vectors[rows] @ vectors[rows].T
            np.fill_diagonal(sims, -2.0)
            own_best[rows] = sims.max(axis=1)
    confusable_sim, outlier_sim = threshold(confusable_threshold), threshold("eer")
    other_best = np.full(n, -2.0, np.float32)  # best similarity to a reference of another SKU
    other_row = np.zeros(n, np.int64)
    confusable: list[ConfusablePair] = []
    if len(photo_rows) > 1:
        depth = min(n, NEIGHBOURS * -(-n // len(photo_rows)))  # deeper by the renderings, which are left out
        sims, found = snap.index.search(vectors[photo_rows], depth)
        nbrs = np.where(found >= 0, snap.rows_of(np.maximum(found, 0)), -1)
        nbrs = np.where(is_photo[np.maximum(nbrs, 0)], nbrs, -1)
        cross = (nbrs >= 0) & (row_sku[np.maximum(nbrs, 0)] != row_sku[photo_rows][:, None])
        masked = np.where(cross, sims, -2.0)
        best = masked.argmax(axis=1)
        at = np.arange(len(photo_rows))
        other_best[photo_rows], other_row[photo_rows] = masked[at, best], nbrs[at, best]
        hit, col = np.nonzero(cross & (sims >= confusable_sim))
        confusable = _confusable_pairs(snap, photo_rows[hit], nbrs[hit, col], sims[hit, col])
    ids = snap.ref_ids
    outliers = [
        Outlier(
            int(ids[r]),
            snap.skus[row_sku[r]],
            refs[int(ids[r])].source,
            float(own_best[r]),
            snap.skus[row_sku[other_row[r]]],
            float(other_best[r]),
        )
        for r in np.nonzero((own_best > -2.0) & (other_best > own_best) & (own_best < outlier_sim))[0]
    ]
    photos_of = [int(is_photo[snap.rows_of(r)].sum()) for r in snap.sku_refs]
    few = [FewRefs(sku, k) for sku, k in zip(snap.skus, photos_of, strict=True) if k < min_refs]
    return CheckReport(
        version=snap.version,
        refs=len(photo_rows),
        renderings=n - len(photo_rows),
        skus=len(snap.skus),
        confusable_threshold=confusable_threshold,
        confusable_similarity=confusable_sim,
        outlier_threshold=outlier_sim,
        confusable=confusable,
        outliers=sorted(outliers, key=lambda o: o.own_similarity - o.nearest_similarity),
        duplicates=find_duplicates([refs[int(i)] for i in ids[photo_rows]]),
        few_refs=few,
        min_refs=min_refs,
        rendering_problems=list(rendering_problems),
    )


def _confusable_pairs(snap: Snapshot, a: np.ndarray, b: np.ndarray, sim: np.ndarray) -> list[ConfusablePair]:
    """Per SKU pair, its closest cross-SKU neighbours among the hits: rows a[i] and b[i] of the
    version, `sim[i]` apart."""
    swap = snap.ref_sku[a] > snap.ref_sku[b]
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    best_first = np.argsort(-sim, kind="stable")
    seen: set[tuple[int, int]] = set()
    out = []
    for i in best_first:
        key = (int(snap.ref_sku[a[i]]), int(snap.ref_sku[b[i]]))
        if key not in seen:
            seen.add(key)
            out.append(
                ConfusablePair(
                    snap.skus[key[0]],
                    snap.skus[key[1]],
                    float(sim[i]),
                    int(snap.ref_ids[a[i]]),
                    int(snap.ref_ids[b[i]]),
                )
            )
    return out


def find_duplicates(refs: list[RefInfo], max_bits: int = NEAR_DUPLICATE_BITS) -> list[Duplicate]:
    """Pairs of references whose perceptual hashes differ in at most `max_bits` bits (FAISS multi-hash
    range search: exact for up to HASH_BLOCKS - 1 bits, without comparing every pair)."""
    if len(refs) < 2:
        return []
    if max_bits >= HASH_BLOCKS:
        raise ValueError(f"near-duplicate search finds at most {HASH_BLOCKS - 1} differing bits, asked for {max_bits}")
    codes = np.array([r.phash for r in refs], np.int64).astype(">i8").view(np.uint8).reshape(len(refs), 8)
    index = faiss.IndexBinaryMultiHash(PHASH_BITS, HASH_BLOCKS, HASH_BLOCK_BITS)
    index.add(codes)
    lims, dists, found = index.range_search(codes, max_bits + 1)
    out = []
    for i in range(len(refs)):
        for d, j in zip(dists[lims[i] : lims[i + 1]], found[lims[i] : lims[i + 1]], strict=True):
            if j > i:
                a, b = refs[i], refs[int(j)]
                out.append(
                    Duplicate("identical" if d == 0 else "near", int(d), a.id, a.sku, a.source, b.id, b.sku, b.source)
                )
    return sorted(out, key=lambda d: (d.bits, d.ref_a, d.ref_b))


def format_report(report: CheckReport) -> str:
    """The report as tables, for an operator."""
    rendered = f", {report.renderings} lane-camera renderings" if report.renderings else ""
    lines = [f"version {report.version}: {report.refs} references{rendered} of {report.skus} SKUs"]
    lines.append(
        f"\nconfusable SKU pairs (closest references at or above {report.confusable_threshold} = "
        f"{report.confusable_similarity:.3f}): {len(report.confusable)}"
    )
    lines += [
        f"  {p.similarity:6.3f}  {p.sku_a} (ref {p.ref_a})  ~  {p.sku_b} (ref {p.ref_b})" for p in report.confusable
    ]
    lines.append(
        f"\noutlier references (nearer another SKU than their own, own below eer = {report.outlier_threshold:.3f}): "
        f"{len(report.outliers)}"
    )
    lines += [
        f"  ref {o.ref:<6} {o.sku}: own {o.own_similarity:.3f} < {o.nearest_similarity:.3f} {o.nearest_sku}  "
        f"({o.source})"
        for o in report.outliers
    ]
    lines.append(f"\nduplicate photos (perceptual hash within {NEAR_DUPLICATE_BITS} bits): {len(report.duplicates)}")
    lines += [
        f"  {d.kind:<9} {d.bits} bits  ref {d.ref_a} {d.sku_a} ({d.source_a})  =  ref {d.ref_b} {d.sku_b} "
        f"({d.source_b})"
        for d in report.duplicates
    ]
    lines.append(f"\nSKUs with fewer than {report.min_refs} references: {len(report.few_refs)}")
    lines += [f"  {f.sku}: {f.refs}" for f in report.few_refs]
    lines.append(f"\nlane-camera renderings out of step with their photos: {len(report.rendering_problems)}")
    lines += [f"  ref {p.ref:<6} {p.sku}: {p.detail}" for p in report.rendering_problems]
    if report.rendering_problems:
        lines.append("  (`reid gallery lane-camera DIR --again` renders every photo again and drops the rest)")
    return "\n".join(lines)


@dataclass(frozen=True)
class GalleryCheck:
    """`reid gallery check`: what is damaged, and (if the current version loads) what misleads the lanes."""

    damage: Damage
    quality: CheckReport | None  # None when the current version cannot be loaded

    def to_dict(self) -> dict:
        return {**self.damage.to_dict(), **(self.quality.to_dict() if self.quality else {})}


def format_check(result: GalleryCheck) -> str:
    """Damage first (it decides the exit status), then the quality report."""
    lines = [f"damaged: {len(result.damage.damaged)}"]
    lines += [f"  {line}" for line in result.damage.damaged]
    if result.damage.damaged:
        lines.append(
            "  (`reid gallery repair DIR` rebuilds what can be rebuilt; damaged files are moved aside, not deleted)"
        )
    if result.damage.unverified:
        lines.append(f"unverified: {len(result.damage.unverified)}")
        lines += [f"  {line}" for line in result.damage.unverified]
    if result.quality is not None:
        lines += ["", format_report(result.quality)]
    return "\n".join(lines)


def check_path(
    root: str | Path, model: str | Path | None = None, confusable_threshold: str = "far_0.01", min_refs: int = MIN_REFS
) -> GalleryCheck:
    """Verify everything the gallery at `root` stores, then check its published version with its
    model's calibration of nearest-reference scores (the check compares references one to one)."""
    root = Path(root)
    if min_refs < 1:
        raise GalleryError(f"--min-refs must be at least 1, got {min_refs}")
    if not root.is_dir():
        raise GalleryError(f"{root}: no such gallery directory")
    damage = find_damage(root)
    if damage.current is None or damage.current in damage.bad_versions or not damage.database_ok:
        return GalleryCheck(damage, None)
    gallery = Gallery.open(root, model=model, scoring="nearest")
    snap = gallery.snapshot
    if confusable_threshold not in gallery.calibration.thresholds:
        raise GalleryError(
            f"the model has no threshold {confusable_threshold!r}; it has {sorted(gallery.calibration.thresholds)}"
        )
    with GalleryStore.open(root, readonly=True) as store:
        photo = db.photos_only(store.conn)
        rows = store.conn.execute(f"SELECT id, sku, image, source, phash FROM refs WHERE {photo}").fetchall()
        problems = rendering_problems(store) if photo != "1" else []
    refs = {r[0]: RefInfo(*r) for r in rows}
    return GalleryCheck(
        damage,
        check_gallery(snap, refs, gallery.calibration.threshold, confusable_threshold, min_refs, problems),
    )


def rendering_problems(store: GalleryStore) -> list[RenderingProblem]:
    """Current renderings whose photo is gone (or under another SKU), and catalogue photos whose
    current renderings are not the profile's number of views."""
    orphans = store.conn.execute(
        "SELECT r.id, r.sku, r.rendering_of FROM refs r LEFT JOIN refs p ON p.id = r.rendering_of "
        "WHERE r.removed_version IS NULL AND r.rendering_of IS NOT NULL "
        "AND (p.id IS NULL OR p.removed_version IS NOT NULL OR p.sku != r.sku) ORDER BY r.id"
    ).fetchall()
    views = store.lane_profile().views
    unrendered = store.conn.execute(
        "SELECT p.id, p.sku, COUNT(r.id) FROM refs p "
        "LEFT JOIN refs r ON r.rendering_of = p.id AND r.removed_version IS NULL "
        "WHERE p.removed_version IS NULL AND p.rendering_of IS NULL AND p.origin = ? "
        "GROUP BY p.id HAVING COUNT(r.id) != ? ORDER BY p.id",
        (RefOrigin.PHOTO.value, views),
    ).fetchall()
    return [
        RenderingProblem(ref, sku, f"a lane-camera rendering of reference {photo}, which is not in the gallery")
        for ref, sku, photo in orphans
    ] + [
        RenderingProblem(ref, sku, f"a photo with {n} lane-camera renderings; the gallery's profile makes {views}")
        for ref, sku, n in unrendered
    ]
