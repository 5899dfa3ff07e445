"""The gallery as the checkout pipeline uses it: rank SKUs for item embeddings, verify a scanned
SKU, and follow new versions published by operators without stopping.

A SKU is scored the way the model's calibration was fitted (its default, or the one asked for):
"centroid", the cosine to the normalised mean of the SKU's references (steadier: one odd photo does
not decide), or "nearest", the cosine to its nearest reference. A SKU's references are its photos,
its lane references and its photos' lane-camera renderings (gallery/renderings.py); by centroid,
each kind is averaged apart and the SKU scores the best of its centroids (`Centroids`).

Queries run against an immutable in-memory snapshot of one version; `refresh` loads a newer version
beside it and swaps a single reference, so queries in flight finish on the version they started with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retail_reid.compat import StrEnum
from retail_reid.errors import ReidError
from retail_reid.gallery.binding import bound_embedder
from retail_reid.gallery.errors import GalleryError
from retail_reid.gallery.index import build_index, factory_for, reference_vectors
from retail_reid.gallery.snapshot import RowKind, Snapshot, read_current
from retail_reid.models.calibration import SCORINGS, Calibration
from retail_reid.models.runtime import OnnxEmbedder

LOAD_TRIES = 5  # a version can be pruned between reading CURRENT and loading it; then read CURRENT again
CENTROID_CHUNK = 65_536  # references read at a time while averaging them per SKU
# Up to this many SKUs their centroids are searched exactly (about 1.5 ms a query at 50k); beyond,
# with an IVF index like the references' (benchmarks/bench_gallery.py, docs/gallery.md)
CENTROID_EXACT_MAX = 50_000


@dataclass(frozen=True)
class SkuMatch:
    """One ranked candidate for a query."""

    sku: str
    score: float  # cosine similarity to the SKU's centroid or nearest reference (the gallery's scoring)
    confidence: float  # calibrated, in [0, 1], from the model's Calibration


@dataclass(frozen=True)
class Verification:
    """Does the item look like the SKU that was scanned?"""

    sku: str  # the claimed SKU
    similarity: float  # similarity of the embedding to the claimed SKU (-1.0 if the SKU has no references)
    confidence: float  # calibrated confidence of the claimed SKU
    best_other_sku: str | None
    best_other_similarity: float  # -1.0 if no other SKU has references
    margin: float  # similarity - best_other_similarity


def load_current(root: Path) -> Snapshot:
    """Load the version CURRENT names, retrying if a writer prunes it meanwhile."""
    for _ in range(LOAD_TRIES):
        version = read_current(root)
        try:
            return Snapshot.load(root, version)
        except FileNotFoundError:
            if read_current(root) == version:
                raise GalleryError(
                    f"{root}: version {version}, which CURRENT names, is missing or incomplete"
                ) from None
    raise GalleryError(f"{root}: the current version changed {LOAD_TRIES} times while loading; try again")


class LaneMatching(StrEnum):
    """How a SKU's lane references count in centroid scoring (chosen on development lanes:
    docs/gallery.md, "Lane references in matching")."""

    APART = "apart"  # their own centroid, beside the photos' and the renderings'
    POOLED = "pooled"  # averaged with the photos into one centroid


class Centroids:
    """Each SKU's references averaged and normalised, apart by kind: its photos, its lane-camera
    renderings and its lane references each in a centroid (lane references with the photos under
    LaneMatching.POOLED), all in one FAISS index (exact up to CENTROID_EXACT_MAX centroids, IVF
    beyond; id `slot * SKUs + position`). A SKU scores the best of its centroids: a clean crop lies
    near its photos, a lane-camera crop near its renderings and the lane's own crops, and pooled into
    one centroid the other kinds pulled the photos' own matches away (docs/gallery.md). Computed once
    per loaded version, in chunks, so memory stays small."""

    def __init__(self, snap: Snapshot, lane: LaneMatching = LaneMatching.APART):
        dim, n = snap.index.d, len(snap.skus)
        slot = np.array([int(k) for k in RowKind])  # a row's kind -> its centroid's slot
        if lane is LaneMatching.POOLED:
            slot[RowKind.LANE] = RowKind.PHOTO
        slots = len(RowKind)
        sums = np.zeros((slots * n, dim), np.float64)  # row slot * n + position
        for start in range(0, len(snap.ref_ids), CENTROID_CHUNK):
            part = slice(start, start + CENTROID_CHUNK)
            rows = slot[snap.kinds[part]] * n + snap.ref_sku[part]
            np.add.at(sums, rows, reference_vectors(snap.index, snap.ref_ids[part]))
        norms = np.linalg.norm(sums, axis=1)
        present = np.flatnonzero(norms > 0)
        self.skus = n
        self.slots = slots
        # centroids a SKU may have: what a search must look past
        self.kinds = len(np.unique(slot[snap.kinds])) or 1
        self.vectors = np.zeros((slots * n, dim), np.float32)  # zeros: the SKU has no reference of that kind
        self.vectors[present] = sums[present] / norms[present, None]
        self.present = norms > 0
        self.index = build_index(self.vectors[present], present, factory_for(len(present), CENTROID_EXACT_MAX))

    def score(self, pos: int, query: np.ndarray) -> float:
        """The best of the SKU's centroids (it has at least one)."""
        rows = [r for r in range(pos, self.slots * self.skus, self.skus) if self.present[r]]
        return float((self.vectors[rows] @ query).max())

    def rank(self, queries: np.ndarray, k: int, exclude: int | None) -> list[list[tuple[int, float]]]:
        """Per query, up to k (SKU position, score) best first, each SKU once, leaving out `exclude`."""
        depth = min(self.index.ntotal, (k + (exclude is not None)) * self.kinds)
        scores, found = self.index.search(queries, depth)
        ranked = []
        for srow, frow in zip(scores, found, strict=True):
            best: dict[int, float] = {}  # insertion order is score order
            for s, f in zip(srow, frow, strict=True):
                if f >= 0 and (pos := int(f) % self.skus) != exclude:
                    best.setdefault(pos, float(s))
            ranked.append(list(best.items())[:k])
        return ranked


class Gallery:
    """Reference embeddings per SKU, searched with FAISS.

    >>> g = Gallery.open("galleries/store-12")
    >>> g.match(g.embedder.embed([crop]), k=3)[0][0].sku
    """

    def __init__(
        self,
        root: Path,
        snapshot: Snapshot,
        embedder: OnnxEmbedder,
        calibration: Calibration,
        lane_matching: LaneMatching = LaneMatching.APART,
    ):
        self.root = root
        self._snap = snapshot
        self.embedder = embedder
        self.calibration = calibration
        self.scoring = calibration.scoring
        self.lane_matching = lane_matching

    @classmethod
    def open(
        cls,
        path: str | Path,
        embedder: OnnxEmbedder | None = None,
        model: str | Path | None = None,
        *,
        scoring: str | None = None,
        threads: int | None = None,
        arena: bool = True,
        lane_matching: LaneMatching = LaneMatching.APART,
    ) -> Gallery:
        """Open the current version. The embedder must be the gallery's model (refused otherwise);
        one loaded here runs `threads` inference threads (None: REID_THREADS, or all cores), with
        onnxruntime's memory arena unless `arena` is False (a process that must stay flat for weeks).

        scoring: "centroid" or "nearest" (see the module's docstring); by default the model's default,
        and always one the model is calibrated for, so scores, confidences and thresholds agree.
        lane_matching: how lane references count under centroid scoring (LaneMatching).
        """
        root = Path(path)
        if not root.is_dir():
            raise GalleryError(f"{root}: no such gallery directory")
        if scoring is not None and scoring not in SCORINGS:
            raise GalleryError(f"scoring must be one of {', '.join(SCORINGS)}, got {scoring!r}")
        snap = load_current(root)
        bound = bound_embedder(
            root, snap.model_fingerprint, snap.manifest["model_path"], embedder, model, threads, arena
        )
        try:
            calibration = bound.calibration if scoring is None else bound.calibration_for(scoring)
        except ReidError as e:
            raise GalleryError(str(e)) from None
        gallery = cls(root, snap, bound, calibration, lane_matching)
        gallery._prepare(snap)
        return gallery

    @property
    def version(self) -> int:
        return self._snap.version

    @property
    def snapshot(self) -> Snapshot:
        """The version in use, as loaded (immutable; `refresh` replaces it rather than changing it)."""
        return self._snap

    def refresh(self) -> bool:
        """Switch to a newer published version if there is one; True if switched.

        A version built with another model (after `rebuild`) is refused and the current one kept: the
        process must restart with the new model, since its embeddings would not be comparable.
        """
        if read_current(self.root) == self._snap.version:
            return False
        snap = load_current(self.root)
        if snap.model_fingerprint != self.embedder.fingerprint:
            raise GalleryError(
                f"{self.root}: version {snap.version} was built with model {snap.model_fingerprint[:12]} "
                f"({snap.manifest['model_path']}), "
                f"this process embeds with {self.embedder.fingerprint[:12]}; restart it with the new model (still on "
                f"version {self.version})"
            )
        self._prepare(snap)
        self._snap = snap
        return True

    def _prepare(self, snap: Snapshot) -> None:
        """Compute what the scoring needs before the version serves queries (not at the first query)."""
        if self.scoring == "centroid":
            self._centroids(snap)

    def _centroids(self, snap: Snapshot) -> Centroids:
        lane = self.lane_matching
        return snap.derived(f"centroids-{lane}", lambda s: Centroids(s, lane))

    def match(self, embeddings: np.ndarray, k: int = 5) -> list[list[SkuMatch]]:
        """Per query row, up to k SKUs ranked by score, with calibrated confidences."""
        if k < 1:
            raise GalleryError(f"k must be at least 1, got {k}")
        snap = self._snap
        queries = self._queries(embeddings, snap)
        return [
            [self._sku_match(snap, pos, score) for pos, score in ranked]
            for ranked in self._rank(snap, queries, k, None)
        ]

    def verify(self, embedding: np.ndarray, sku: str) -> Verification:
        """Similarity to the claimed SKU, the best other SKU, and the margin between them."""
        snap = self._snap
        embedding = np.asarray(embedding)
        if embedding.ndim != 1:
            raise GalleryError(f"verify takes one embedding (a 1-D array), got shape {embedding.shape}")
        query = self._queries(embedding, snap)
        pos = snap.position.get(sku)
        similarity = self._score(snap, pos, query[0]) if pos is not None and len(snap.sku_refs[pos]) else -1.0
        others = self._rank(snap, query, 1, pos)[0]
        other_sku, other_sim = (snap.skus[others[0][0]], others[0][1]) if others else (None, -1.0)
        return Verification(sku, similarity, self._confidence(similarity), other_sku, other_sim, similarity - other_sim)

    def _queries(self, embeddings: np.ndarray, snap: Snapshot) -> np.ndarray:
        q = np.asarray(embeddings, np.float32)
        if q.ndim == 1:
            q = q[None]
        dim = snap.index.d
        if q.ndim != 2 or q.shape[1] != dim:
            raise GalleryError(
                f"embeddings must have shape (N, {dim}) for this gallery's model, got {np.shape(embeddings)}"
            )
        norms = np.linalg.norm(q, axis=1, keepdims=True)
        if not np.all(np.isfinite(q)) or np.any(norms == 0):
            raise GalleryError("embeddings contain non-finite values or all-zero rows")
        return np.ascontiguousarray(q / norms)

    def _score(self, snap: Snapshot, pos: int, query: np.ndarray) -> float:
        """The query's score for the SKU at `pos` (which has references)."""
        if self.scoring == "centroid":
            return self._centroids(snap).score(pos, query)
        return float((reference_vectors(snap.index, snap.sku_refs[pos]) @ query).max())

    def _rank(self, snap: Snapshot, queries: np.ndarray, k: int, exclude: int | None) -> list[list[tuple[int, float]]]:
        """Per query, (SKU position, score) best first, leaving out the SKU at `exclude`."""
        if snap.index.ntotal == 0:
            return [[] for _ in range(len(queries))]
        if self.scoring == "centroid":
            return self._centroids(snap).rank(queries, k, exclude)
        return self._rank_nearest(snap, queries, k, exclude)

    def _rank_nearest(
        self, snap: Snapshot, queries: np.ndarray, k: int, exclude: int | None
    ) -> list[list[tuple[int, float]]]:
        """Candidate SKUs from the nearest references (searching deeper until k distinct SKUs are found)."""
        ntotal = snap.index.ntotal
        results: list[list[tuple[int, float]]] = [[] for _ in range(len(queries))]
        depth = min(ntotal, max(4 * (k + 1), 16))
        todo = list(range(len(queries)))
        while todo:
            _, ids = snap.index.search(queries[todo], depth)
            retry = []
            for qi, found in zip(todo, ids, strict=True):
                labels = snap.ref_sku[snap.rows_of(found[found >= 0])]
                if exclude is not None:
                    labels = labels[labels != exclude]
                _, first = np.unique(labels, return_index=True)
                candidates = labels[np.sort(first)][:k]
                if len(candidates) < k and depth < ntotal:
                    retry.append(qi)
                    continue
                scored = [(int(c), self._score(snap, int(c), queries[qi])) for c in candidates]
                results[qi] = sorted(scored, key=lambda t: -t[1])[:k]
            todo, depth = retry, min(ntotal, depth * 4)
        return results

    def _confidence(self, score: float) -> float:
        return float(self.calibration.confidence(score))

    def _sku_match(self, snap: Snapshot, pos: int, score: float) -> SkuMatch:
        return SkuMatch(snap.skus[pos], score, self._confidence(score))

    def sku_for_barcode(self, code: str) -> str | None:
        return self._snap.barcodes.get(code)

    def has_sku(self, sku: str) -> bool:
        return sku in self._snap.products

    def skus(self) -> list[str]:
        return list(self._snap.skus)

    def reference_image(self, sku: str) -> Path | None:
        """A stored reference photo of the SKU (for reports), or None if it has none."""
        rel = self._snap.images.get(sku)
        return self.root / rel if rel else None

    def display_name(self, sku: str) -> str:
        """The product's name; the SKU id itself for a SKU the gallery does not know (e.g. from a POS log)."""
        product = self._snap.products.get(sku)
        return product.name if product else sku
