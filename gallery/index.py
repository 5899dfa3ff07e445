"""Which FAISS index a gallery version gets, and how it is built.

Exact inner product ("IDMap2,Flat") while exact search is fast enough; an inverted-file index
(IVF-Flat) beyond that. benchmarks/bench_gallery.py measures both against numpy brute force
(latency, recall@10, top-SKU agreement) and against HNSW, which searched about as fast but took
longer to build and cannot remove vectors. The index's ids are the references' database ids, so a
new version's IVF index is the previous one with the removed references taken out and the new ones
added (seconds at 1M references, instead of minutes of k-means and assignment); it is trained
afresh when the size has drifted far from what its lists were made for, or the model changed.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

EXACT = "IDMap2,Flat"
# Up to this many references an exact search costs about 1-3 ms per query on one core; beyond it IVF.
EXACT_MAX_REFS = 50_000
LISTS_PER_SQRT_REF = 4  # IVF lists: 4 * sqrt(N), about 250 references a list at 1M
TRAIN_PER_LIST = 40  # k-means sample: FAISS wants at least 39 points a centroid
IVF_NPROBE = 24  # lists searched a query; chosen with benchmarks/bench_gallery.py (docs/gallery.md)
TRAIN_SEED = 0  # the same references always give the same trained lists
MAX_LIST_DRIFT = 2.0  # an IVF index is updated while its list count is within this factor of the ideal


def factory_for(n: int, exact_max: int | None = None) -> str:
    """The FAISS index factory string for n vectors: exact up to `exact_max` (default
    EXACT_MAX_REFS, the references' limit), else an inverted file sized for n."""
    if n <= (EXACT_MAX_REFS if exact_max is None else exact_max):
        return EXACT
    return f"IVF{LISTS_PER_SQRT_REF * math.isqrt(n)},Flat"


def build_index(vectors: np.ndarray, ids: np.ndarray, factory: str) -> faiss.Index:
    """An inner-product index over unit rows (so scores are cosine similarities), row i with id ids[i]."""
    vectors = np.ascontiguousarray(vectors, np.float32)
    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if isinstance(index, faiss.IndexIVF):
        # reconstruct by id, remove by id (faiss's stubs lack DirectMap, which the module has)
        index.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
        n_train = min(len(vectors), TRAIN_PER_LIST * index.nlist)
        sample = np.random.default_rng(TRAIN_SEED).choice(len(vectors), n_train, replace=False)
        index.train(vectors[np.sort(sample)])
    index.add_with_ids(vectors, np.ascontiguousarray(ids, np.int64))
    tune(index)
    return index


def can_update(index: faiss.Index, n_refs: int) -> bool:
    """Whether `index` (of the previous version, same model) can be updated to hold n_refs references."""
    if not isinstance(index, faiss.IndexIVF) or factory_for(n_refs) == EXACT:
        return False
    ideal = LISTS_PER_SQRT_REF * math.isqrt(n_refs)
    return 1 / MAX_LIST_DRIFT <= index.nlist / ideal <= MAX_LIST_DRIFT


def update_index(index: faiss.Index, old_ids: np.ndarray, vectors: np.ndarray, ids: np.ndarray) -> faiss.Index:
    """Turn `index`, holding `old_ids`, into one holding exactly (ids, vectors): references gone or
    whose vector changed are removed, new and changed ones added. `index` is changed in place."""
    vectors = np.ascontiguousarray(vectors, np.float32)
    common, _in_old, in_new = np.intersect1d(old_ids, ids, assume_unique=True, return_indices=True)
    changed = common[np.any(reference_vectors(index, common) != vectors[in_new], axis=1)] if len(common) else common
    gone = np.union1d(np.setdiff1d(old_ids, ids, assume_unique=True), changed).astype(np.int64)
    if len(gone):
        index.remove_ids(faiss.IDSelectorArray(gone))  # the kind a hashtable direct map can remove
    add = np.isin(ids, np.union1d(np.setdiff1d(ids, old_ids, assume_unique=True), changed))
    if add.any():
        index.add_with_ids(vectors[add], np.ascontiguousarray(ids[add], np.int64))
    tune(index)
    return index


def describe(index: faiss.Index) -> str:
    """The factory string of an index as built (an updated IVF keeps its list count)."""
    return f"IVF{index.nlist},Flat" if isinstance(index, faiss.IndexIVF) else EXACT


def tune(index: faiss.Index) -> None:
    """Search-time settings, which FAISS does not store in the index file."""
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = IVF_NPROBE


def reference_vectors(index: faiss.Index, ids: np.ndarray) -> np.ndarray:
    """The stored vectors of these reference ids, as an (n, D) float32 array."""
    if len(ids) == 0:
        return np.zeros((0, index.d), np.float32)
    return index.reconstruct_batch(np.ascontiguousarray(ids, np.int64))
