"""The evaluation protocols, run on any exported ONNX embedder (so fp32 and int8 models are
measured the same way, without torch)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retail_reid.models.calibration import SCORINGS, Calibration, fit_calibration
from retail_reid.models.datasets import DataError, ImageSet
from retail_reid.models.metrics import gallery_query, reality_check, verification, verification_scores
from retail_reid.models.runtime import OnnxEmbedder

FARS = (1e-2, 1e-3)


@dataclass
class Embedded:
    """An image set's embeddings and labels (images that failed to load are reported, not used)."""

    emb: np.ndarray
    labels: np.ndarray
    errors: list[str]


def embed_set(embedder: OnnxEmbedder, images: ImageSet, progress: bool = False) -> Embedded:
    emb, good, errors = embedder.embed_files(images.paths, progress=progress)
    if not good:
        raise DataError(f"none of the {len(images)} images could be read; first error: {errors[0]}")
    return Embedded(emb, np.asarray(images.labels)[good], errors)


def protocol(gallery: Embedded, queries: Embedded, scoring: str = "nearest") -> dict[str, float]:
    """Gallery->query recall of the SKU and verification (own SKU vs every other SKU)."""
    out = gallery_query(gallery.emb, gallery.labels, queries.emb, queries.labels, scoring=scoring)
    genuine, impostor = verification_scores(gallery.emb, gallery.labels, queries.emb, queries.labels, scoring)
    out.update(verification(genuine, impostor, FARS))
    return out


def calibrate(gallery: Embedded, queries: Embedded, default: str = "centroid") -> list[Calibration]:
    """Fit the similarity -> confidence mapping and the operating thresholds on validation data,
    for each SKU scoring, the `default` first (the gallery scores that way unless told otherwise)."""
    if default not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, got {default!r}")
    out = []
    for scoring in sorted(SCORINGS, key=lambda s: s != default):
        genuine, impostor = verification_scores(gallery.emb, gallery.labels, queries.emb, queries.labels, scoring)
        v = verification(genuine, impostor, FARS)
        thresholds = {"eer": v["threshold_eer"], **{f"far_{f:g}": v[f"threshold_far_{f:g}"] for f in FARS}}
        out.append(fit_calibration(genuine, impostor, thresholds, scoring))
    return out


def evaluate(
    embedder: OnnxEmbedder, gallery: ImageSet, queries: ImageSet, iconic: ImageSet | None = None, progress: bool = False
) -> dict[str, dict[str, float]]:
    """All reports: reality-check metrics within the query split, gallery->query, and the same
    protocol with the one-catalog-photo-per-SKU gallery when given, SKUs scored both ways."""
    q = embed_set(embedder, queries, progress)
    g = embed_set(embedder, gallery, progress)
    report = {
        "within_queries": reality_check(q.emb, q.labels),
        "gallery_query_centroid": protocol(g, q, "centroid"),  # SKUs ranked by their references' mean
        "gallery_query_nearest": protocol(g, q, "nearest"),  # by their nearest reference
    }
    if iconic is not None:
        report["iconic_query"] = protocol(embed_set(embedder, iconic, progress), q)
    return report
