"""The class-disjoint evaluation (issue 11): an ONNX embedder judged on SKUs held out of its training,
with their train photos (or their one catalog photo) as the gallery and their val photos as queries,
as photographed and as a lane camera sees them, SKUs scored by centroid (the galleries' default).
Torch-free, like `reid eval`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retail_reid.compat import StrEnum
from retail_reid.images import ImageError, read_image
from retail_reid.models.datasets import DataError, GroceryData
from retail_reid.models.evaluate import Embedded, embed_set
from retail_reid.models.metrics import gallery_query, map_at_r, verification, verification_scores
from retail_reid.models.runtime import OnnxEmbedder
from retail_reid.models.views import hand_occlusion, lane_camera

FAR = 1e-2


class Query(StrEnum):
    """What the queries and the gallery are."""

    PHOTO = "photos"  # val photos against the train photos
    LANE = "lane camera"  # the same photos as a lane camera sees them (models.views.lane_camera)
    HAND = "lane camera + hand"  # a hand over part of the item, then the lane camera
    ICONIC = "iconic gallery"  # val photos against the one catalog photo per SKU


@dataclass
class Embeddings:
    """One embedder's embeddings of a dataset: the galleries and every kind of query."""

    gallery: Embedded
    iconic: Embedded | None
    queries: dict[Query, Embedded]  # PHOTO, LANE, HAND


def view_images(
    paths: Iterable[tuple[int, Path]], view: Query, seed: int, good: list[int], errors: list[str]
) -> Iterator[np.ndarray]:
    """The val photos, given as (index in the full val list, path), as `view` shows them; each image's
    random state is seeded by (seed, its index), so a view is the same for every model and every fold."""
    for i, p in paths:
        try:
            img = read_image(p)
        except ImageError as e:
            errors.append(str(e))
            continue
        rng = np.random.RandomState([seed, i])
        if view is Query.HAND:
            img = hand_occlusion(img, rng)
        if view is not Query.PHOTO:
            img = lane_camera(img, rng)
        good.append(i)
        yield img


def embed_data(
    embedder: OnnxEmbedder, data: GroceryData, skus: set[str] | None = None, seed: int = 0, progress: bool = False
) -> Embeddings:
    """Embed the train photos, the iconic photos and the val photos in each view, of `skus` (all when None)."""
    part = data.only(skus) if skus is not None else data
    index = {p: i for i, p in enumerate(data.val.paths)}
    queries = {}
    for view in (Query.PHOTO, Query.LANE, Query.HAND):
        good: list[int] = []
        errors: list[str] = []
        emb = embedder.embed(view_images([(index[p], p) for p in part.val.paths], view, seed, good, errors))
        if not good:
            raise DataError(f"none of the {len(part.val)} val images could be read; first error: {errors[0]}")
        labels = np.asarray(data.val.labels)[good]
        queries[view] = Embedded(emb, labels, errors)
    iconic = embed_set(embedder, part.iconic, progress) if part.iconic else None
    return Embeddings(gallery=embed_set(embedder, part.train, progress), iconic=iconic, queries=queries)


def _keep(e: Embedded, skus: set[str]) -> Embedded:
    mask = np.isin(e.labels, sorted(skus))
    return Embedded(e.emb[mask], e.labels[mask], e.errors)


def fold_report(emb: Embeddings, skus: set[str]) -> dict[str, dict[str, float]]:
    """Per kind of query, over the SKUs `skus` alone (the gallery holds only them): Recall@1 of the SKU
    by centroid, MAP@R against the gallery's images, TAR at FAR 1 % (own SKU against every other
    held-out SKU), and the number of queries (the weight when folds are pooled)."""
    gallery = _keep(emb.gallery, skus)
    out = {}
    for kind in Query:
        if kind is Query.ICONIC:
            if emb.iconic is None:
                continue
            g = _keep(emb.iconic, skus)
        else:
            g = gallery
        q = _keep(emb.queries[Query.PHOTO if kind is Query.ICONIC else kind], skus)
        genuine, impostor = verification_scores(g.emb, g.labels, q.emb, q.labels, "centroid")
        out[str(kind)] = {
            "recall_at_1": gallery_query(g.emb, g.labels, q.emb, q.labels, ks=(1,), scoring="centroid")["recall_at_1"],
            "map_at_r": map_at_r(g.emb, g.labels, q.emb, q.labels),
            "tar_at_far_0.01": verification(genuine, impostor, (FAR,))["tar_at_far_0.01"],
            "queries": float(len(q.labels)),
        }
    return out


def pool(reports: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Folds pooled: each figure weighted by its fold's queries (for Recall@1 and MAP@R the same as
    averaging over every query of every fold; TAR keeps each fold's own threshold)."""
    out = {}
    for kind in reports[0]:
        n = np.array([r[kind]["queries"] for r in reports])
        out[kind] = {k: float(np.dot(n, [r[kind][k] for r in reports]) / n.sum()) for k in reports[0][kind]}
        out[kind]["queries"] = float(n.sum())
    return out
