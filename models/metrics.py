"""Retrieval and verification metrics, computed with FAISS kNN (no torch).

Reality-check metrics follow Musgrave et al. 2020 ("A Metric Learning Reality Check"):
precision@1, R-precision and MAP@R within one split, leaving each query out.
"""

from __future__ import annotations

from collections import Counter

import faiss
import numpy as np

from retail_reid.models.calibration import SCORINGS


def _flat_search(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(np.ascontiguousarray(base, np.float32))
    return index.search(np.ascontiguousarray(queries, np.float32), min(k, len(base)))


def reality_check(emb: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """precision@1, R-precision and MAP@R of every sample against all others in the same split."""
    labels = np.asarray(labels)
    counts = Counter(labels.tolist())
    k = max(counts.values())  # the query itself plus up to max_class_size - 1 true neighbours
    _, idx = _flat_search(emb, emb, k + 1)
    p1, rp, mapr, n = 0.0, 0.0, 0.0, 0
    for i in range(len(emb)):
        r = counts[labels[i]] - 1
        if r == 0:
            continue  # a singleton class has nothing to retrieve
        nn = idx[i][idx[i] != i][:r]
        hits = labels[nn] == labels[i]
        p1 += float(hits[0])
        rp += hits.sum() / r
        mapr += _map_at_r(hits, r)
        n += 1
    if n == 0:
        raise ValueError("every class has a single sample: nothing to retrieve")
    return {"precision_at_1": float(p1 / n), "r_precision": float(rp / n), "map_at_r": float(mapr / n)}


def _map_at_r(hits: np.ndarray, r: int) -> float:
    """MAP@R of one query from the hits among its first R neighbours."""
    precision_at = np.cumsum(hits) / np.arange(1, r + 1)
    return float((precision_at * hits).sum() / r)


def map_at_r(gallery: np.ndarray, gallery_labels: np.ndarray, queries: np.ndarray, query_labels: np.ndarray) -> float:
    """MAP@R of queries ranking the gallery's images, R = the gallery's images of the query's SKU:
    how well the whole neighbourhood, not only the nearest, belongs to the right product."""
    gallery_labels, query_labels = np.asarray(gallery_labels), np.asarray(query_labels)
    counts = Counter(gallery_labels.tolist())
    if any(counts[q] == 0 for q in query_labels.tolist()):
        raise ValueError("every query's SKU needs images in the gallery")
    _, idx = _flat_search(gallery, queries, max(counts.values()))
    return float(
        np.mean([_map_at_r(gallery_labels[idx[i][: counts[q]]] == q, counts[q]) for i, q in enumerate(query_labels)])
    )


def sku_scores(
    gallery: np.ndarray, gallery_labels: np.ndarray, queries: np.ndarray, scoring: str = "nearest"
) -> tuple[np.ndarray, np.ndarray]:
    """Per query, a similarity to each SKU: its nearest reference ("nearest") or the cosine to the
    normalised mean of its references ("centroid", a prototype that averages out odd photos).

    Returns (skus, scores) with scores of shape (n_queries, n_skus).
    """
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
    skus, inverse = np.unique(np.asarray(gallery_labels), return_inverse=True)
    if scoring == "centroid":
        centroids = np.zeros((len(skus), gallery.shape[1]), np.float64)
        np.add.at(centroids, inverse, gallery)
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        sims, idx = _flat_search(centroids.astype(np.float32), queries, len(skus))
        scores = np.empty((len(queries), len(skus)), np.float32)
        np.put_along_axis(scores, idx, sims, axis=1)
        return skus, scores
    sims, idx = _flat_search(gallery, queries, len(gallery))
    scores = np.full((len(queries), len(skus)), -np.inf, np.float32)
    for q in range(len(queries)):
        valid = idx[q] >= 0
        np.maximum.at(scores[q], inverse[idx[q][valid]], sims[q][valid])
    return skus, scores


def gallery_query(
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray,
    ks: tuple[int, ...] = (1, 5),
    scoring: str = "nearest",
) -> dict[str, float]:
    """Recall@k of the SKU: is the query's SKU among the k best-scoring gallery SKUs?"""
    skus, scores = sku_scores(gallery, gallery_labels, queries, scoring)
    order = np.argsort(-scores, axis=1)
    ranked = skus[order]
    truth = np.asarray(query_labels)[:, None]
    return {f"recall_at_{k}": float((ranked[:, :k] == truth).any(axis=1).mean()) for k in ks}


def verification_scores(
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray,
    scoring: str = "nearest",
) -> tuple[np.ndarray, np.ndarray]:
    """Genuine scores (query vs its own SKU) and impostor scores (query vs every other SKU).

    Queries whose SKU has no reference in the gallery contribute impostor scores only.
    """
    skus, scores = sku_scores(gallery, gallery_labels, queries, scoring)
    own = np.asarray(query_labels)[:, None] == skus[None, :]
    return scores[own], scores[~own]


def roc_auc(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Probability that a genuine score beats an impostor score (ties count half)."""
    allv = np.concatenate([genuine, impostor])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_v, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    rg = ranks[: len(genuine)].sum()
    return float((rg - len(genuine) * (len(genuine) + 1) / 2) / (len(genuine) * len(impostor)))


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """The smallest threshold t with P(impostor >= t) <= far (accept when score >= t)."""
    imp = np.sort(impostor)[::-1]
    n_allowed = int(np.floor(far * len(imp)))
    if n_allowed >= len(imp):
        return float(imp[-1])
    # accept strictly above the (n_allowed+1)-th highest impostor score
    return float(np.nextafter(imp[n_allowed], np.float32(np.inf)))


def verification(genuine: np.ndarray, impostor: np.ndarray, fars: tuple[float, ...] = (1e-2, 1e-3)) -> dict[str, float]:
    """ROC AUC, equal error rate and true-accept rate at fixed false-accept rates, with thresholds."""
    out: dict[str, float] = {"roc_auc": roc_auc(genuine, impostor)}
    cand = np.unique(np.concatenate([genuine, impostor]))
    frr = np.searchsorted(np.sort(genuine), cand, side="left") / len(genuine)
    far = 1.0 - np.searchsorted(np.sort(impostor), cand, side="left") / len(impostor)
    i = int(np.argmin(np.abs(far - frr)))
    out["eer"] = float((far[i] + frr[i]) / 2)
    out["threshold_eer"] = float(cand[i])
    for f in fars:
        t = threshold_at_far(impostor, f)
        out[f"tar_at_far_{f:g}"] = float((genuine >= t).mean())
        out[f"threshold_far_{f:g}"] = t
    return out
