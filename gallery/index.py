"""Which FAISS index a gallery version gets: exact inner product while exact search is fast enough,
an inverted-file index (IVF-Flat) beyond that. benchmarks/bench_gallery.py measures both against
numpy brute force (latency, recall@10, top-SKU agreement) and against HNSW, which searched about as
fast but took several times longer to build (every version builds its index afresh, under the writer lock)."""
from __future__ import annotations

import math

import faiss
import numpy as np

EXACT = "Flat"
# Up to this many references an exact search costs about 1-3 ms per query on one core; beyond it IVF.
EXACT_MAX_REFS = 50_000
LISTS_PER_SQRT_REF = 4  # IVF lists: 4 * sqrt(N), about 250 references a list at 1M
TRAIN_PER_LIST = 40  # k-means sample: FAISS wants at least 39 points a centroid
IVF_NPROBE = 24  # lists searched a query; chosen with benchmarks/bench_gallery.py (docs/gallery.md)
TRAIN_SEED = 0  # the same references always give the same index


def factory_for(n_refs: int) -> str:
    """The FAISS index factory string for a gallery of this size."""
    if n_refs <= EXACT_MAX_REFS:
        return EXACT
    return f"IVF{LISTS_PER_SQRT_REF * math.isqrt(n_refs)},Flat"


def build_index(vectors: np.ndarray, factory: str) -> faiss.Index:
    """An inner-product index over unit rows (so scores are cosine similarities); row i gets id i."""
    vectors = np.ascontiguousarray(vectors, np.float32)
    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        n_train = min(len(vectors), TRAIN_PER_LIST * faiss.extract_index_ivf(index).nlist)
        sample = np.random.default_rng(TRAIN_SEED).choice(len(vectors), n_train, replace=False)
        index.train(vectors[np.sort(sample)])
    index.add(vectors)
    tune(index)
    return index


def tune(index: faiss.Index) -> None:
    """Search-time settings, which FAISS does not store in the index file, and the id -> vector map
    that lets a SKU's references be scored exactly."""
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = IVF_NPROBE
        if index.direct_map.type == faiss.DirectMap.NoMap:
            index.make_direct_map()


def reference_vectors(index: faiss.Index, rows: np.ndarray | None = None) -> np.ndarray:
    """The stored vectors of these rows (all rows if None), as an (n, D) float32 array."""
    if rows is None:
        return index.reconstruct_n(0, index.ntotal)
    return index.reconstruct_batch(np.ascontiguousarray(rows, np.int64))
