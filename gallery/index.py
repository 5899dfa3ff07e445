"""Which FAISS index a gallery version gets: exact inner product while exact search is fast enough,
HNSW beyond that (its recall against exact search is measured by benchmarks/bench_gallery.py)."""
from __future__ import annotations

import faiss
import numpy as np

EXACT = "Flat"
APPROX = "HNSW32,Flat"
# Up to this many references an exact search costs ~1-3 ms per query on one core; beyond it HNSW.
EXACT_MAX_REFS = 50_000
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128


def factory_for(n_refs: int) -> str:
    """The FAISS index factory string for a gallery of this size."""
    return EXACT if n_refs <= EXACT_MAX_REFS else APPROX


def build_index(vectors: np.ndarray, factory: str) -> faiss.Index:
    """An inner-product index over unit rows (so scores are cosine similarities)."""
    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index.add(np.ascontiguousarray(vectors, np.float32))
    tune(index)
    return index


def tune(index: faiss.Index) -> None:
    """Search-time settings, which FAISS does not store in the index file."""
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = HNSW_EF_SEARCH


def stored_vectors(index: faiss.Index) -> np.ndarray:
    """The index's own copy of the reference vectors as an (N, D) array, without copying.

    Valid while `index` is alive; used to score a SKU's references exactly.
    """
    flat = faiss.downcast_index(index.storage) if isinstance(index, faiss.IndexHNSW) else index
    if not isinstance(flat, faiss.IndexFlat):
        raise TypeError(f"index type {type(index).__name__} does not keep plain vectors")
    if flat.ntotal == 0:
        return np.zeros((0, flat.d), np.float32)
    return faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(flat.ntotal, flat.d)
