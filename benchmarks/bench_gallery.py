"""Gallery search speed and accuracy on synthetic galleries shaped like real ones: unit vectors
clustered by product family and by SKU, 3-7 references per SKU, queries drawn near a SKU's references.

For each size it measures numpy brute force, exact FAISS (Flat) and the index the gallery picks for
that size (`retail_reid.gallery.index.factory_for`): build time, memory, p50/p99 latency at batch 1 and 32, and,
for an approximate index, recall@10 and top-SKU agreement against exact search, both for the raw
index and for `Gallery.match` (which rescores candidate SKUs exactly). Optionally the IVF nprobe
sweep and HNSW for comparison. Prints one table row per method.

    OMP_NUM_THREADS=1 python benchmarks/bench_gallery.py --sizes 10000 100000 --nprobe 8 16 24 32 --hnsw
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import faiss
import numpy as np

from retail_reid.gallery import index as gallery_index
from retail_reid.gallery.catalog import Product
from retail_reid.gallery.matching import Gallery
from retail_reid.gallery.renderings import OFF
from retail_reid.gallery.snapshot import Snapshot, VersionContent, write_version
from retail_reid.gallery.store import DEFAULT_KEEP
from retail_reid.models.calibration import Calibration


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic(
    n_refs: int, dim: int, n_queries: int, seed: int, query_noise: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(refs, ref SKU labels, queries, query SKU labels). Families of ~100 SKUs share a direction
    (similar packaging); by default same-SKU cosine is ~0.7 and the nearest other SKU ~0.55; a larger
    query noise makes queries harder (e.g. 1.0: some are nearer another SKU, as real crops can be)."""
    rng = np.random.default_rng(seed)

    def noisy(centres: np.ndarray, t: float) -> np.ndarray:
        out = np.empty_like(centres)
        for s in range(0, len(centres), 200_000):  # in chunks: 1M x 128 float64 noise would be 1 GB
            c = centres[s : s + 200_000]
            out[s : s + 200_000] = unit(c + t * rng.standard_normal(c.shape, dtype=np.float32) / np.sqrt(dim))
        return out

    counts = rng.integers(3, 8, size=n_refs // 3)
    counts = counts[: np.searchsorted(np.cumsum(counts), n_refs) + 1]
    labels = np.repeat(np.arange(len(counts)), counts)[:n_refs]
    n_skus = int(labels.max()) + 1
    families = unit(rng.standard_normal((max(1, n_skus // 100), dim), dtype=np.float32))
    skus = noisy(families[rng.integers(0, len(families), n_skus)], 0.9)
    refs = noisy(skus[labels], 0.62)
    q_labels = rng.integers(0, n_skus, n_queries)
    return refs, labels, noisy(skus[q_labels], query_noise), q_labels


def shape_summary(refs: np.ndarray, labels: np.ndarray, queries: np.ndarray, q_labels: np.ndarray, n: int = 300) -> str:
    """How the synthetic gallery looks, to compare with a real one (`reid gallery check` shows the real figures)."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(labels.max() + 2))
    own, other = [], []
    for q, s in zip(queries[:n], q_labels[:n], strict=True):
        sims = refs @ q
        mine = order[bounds[s] : bounds[s + 1]]
        own.append(sims[mine].max())
        sims[mine] = -2
        other.append(sims.max())
    pairs = np.array([refs[order[b]] @ refs[order[b + 1]] for b in bounds[:-1][:n] if b + 1 < len(refs)])
    return (
        f"same-SKU reference pairs: mean cosine {pairs.mean():.2f}; "
        f"query to its SKU's best reference {np.mean(own):.2f}, to the best other SKU's {np.mean(other):.2f}; "
        f"query's SKU ranked first {np.mean(np.array(own) > np.array(other)):.3f}"
    )


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def latency(search, queries: np.ndarray, batch: int, reps: int) -> tuple[float, float]:
    """p50 and p99 in ms of `search` on `reps` batches of `batch` queries."""
    times = []
    for i in range(reps):
        start = (i * batch) % max(1, len(queries) - batch)
        q = queries[start : start + batch]
        t = time.perf_counter()
        search(q)
        times.append(time.perf_counter() - t)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


def numpy_top(refs: np.ndarray, q: np.ndarray, k: int = 10) -> np.ndarray:
    sims = q @ refs.T
    part = np.argpartition(-sims, k, axis=1)[:, :k]
    return np.take_along_axis(part, np.argsort(-np.take_along_axis(sims, part, 1), axis=1), 1)


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))


def synthetic_version(version: int, refs: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> VersionContent:
    n_skus = int(labels.max()) + 1
    products = [Product(f"sku{i:07d}", f"product {i}") for i in range(n_skus)]
    return VersionContent(
        version=version,
        products=products,
        images={},
        ref_ids=ids,
        ref_skus=labels.astype(np.int32),
        vectors=refs,
        model_fingerprint="synthetic",
        model_path="synthetic",
        operator="bench",
        references=[
            {
                "id": int(i),
                "image": f"synthetic/{i}.jpg",
                "source": "synthetic",
                "phash": None,
                "added_version": version,
                "origin": "photo",
            }
            for i in ids
        ],
        keep_versions=DEFAULT_KEEP,
        lane_camera=OFF.to_dict(),
    )


def lane_gallery(root: Path, version: int, scoring: str = "nearest") -> Gallery:
    """The gallery as a lane opens it (only the calibration matters here: it names the scoring)."""
    return Gallery(root, Snapshot.load(root, version), SimpleNamespace(), Calibration(10.0, -5.0, scoring=scoring))  # type: ignore[arg-type]


def row(
    name: str,
    build_s: float,
    mem_mb: float,
    b1: tuple[float, float],
    b32: tuple[float, float],
    recall: str = "",
    agree: str = "",
    g_agree: str = "",
) -> None:
    print(
        f"| {name:<26} | {build_s:8.2f} | {mem_mb:8.0f} | {b1[0]:7.3f} | {b1[1]:7.3f} | {b32[0]:8.3f} | "
        f"{b32[1]:8.3f} | {recall:>9} | {agree:>9} | {g_agree:>11} |",
        flush=True,
    )


def bench_size(n: int, a: argparse.Namespace) -> None:
    t = time.perf_counter()
    refs, labels, queries, q_labels = synthetic(n, a.dim, a.queries, a.seed, a.query_noise)
    print(
        f"\n### {n:,} references, {int(labels.max()) + 1:,} SKUs, {a.dim}-d, {len(queries)} queries "
        f"(generated in {time.perf_counter() - t:.1f} s)\n",
        flush=True,
    )
    print(shape_summary(refs, labels, queries, q_labels) + "\n", flush=True)
    print(
        "| method                     | build s  | mem MB   | b1 p50  | b1 p99  | b32 p50  | b32 p99  | recall@10 | "
        "top-SKU = | match top = |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    reps1, reps32 = (a.reps, max(10, a.reps // 5)) if n <= 200_000 else (max(50, a.reps // 4), 20)

    faiss.omp_set_num_threads(a.threads)
    np_reps1, np_reps32 = (min(reps1, 100), min(reps32, 20)) if n > 200_000 else (reps1, reps32)
    row(
        "numpy brute force",
        0.0,
        refs.nbytes / 2**20,
        latency(lambda q: numpy_top(refs, q), queries, 1, np_reps1),
        latency(lambda q: numpy_top(refs, q), queries, 32, np_reps32),
    )

    before, t = rss_mb(), time.perf_counter()
    exact = faiss.IndexFlatIP(a.dim)
    exact.add(refs)
    build, mem = time.perf_counter() - t, rss_mb() - before
    faiss.omp_set_num_threads(a.build_threads)
    _, truth = exact.search(queries, 10)
    faiss.omp_set_num_threads(a.threads)
    row(
        "FAISS exact (Flat)",
        build,
        mem,
        latency(lambda q: exact.search(q, 10), queries, 1, reps1),
        latency(lambda q: exact.search(q, 10), queries, 32, reps32),
        f"{1.0:.4f}",
        f"{1.0:.4f}",
    )

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        faiss.omp_set_num_threads(a.build_threads)
        t = time.perf_counter()
        write_version(root, synthetic_version(1, refs, labels, np.arange(n)))
        build = time.perf_counter() - t
        before, t = rss_mb(), time.perf_counter()
        g = lane_gallery(root, 1)
        load_s, mem = time.perf_counter() - t, rss_mb() - before
        index = g.snapshot.index
        factory = g.snapshot.manifest["index_factory"]
        faiss.omp_set_num_threads(a.threads)
        for nprobe in a.nprobe if isinstance(index, faiss.IndexIVF) else [None]:
            if nprobe is not None:
                index.nprobe = nprobe
            _, found = index.search(queries, 10)
            name = f"gallery: {factory}" + (
                f" nprobe {nprobe}" + (" *" if nprobe == gallery_index.IVF_NPROBE else "") if nprobe else ""
            )
            top = np.array([r[0].sku for r in g.match(queries, k=1)])
            g_agree = np.mean(top == np.array([f"sku{labels[i]:07d}" for i in truth[:, 0]]))
            row(
                name,
                build,
                mem,
                latency(lambda q: index.search(q, 10), queries, 1, reps1),
                latency(lambda q: index.search(q, 10), queries, 32, reps32),
                f"{recall_at_10(found, truth):.4f}",
                f"{np.mean(labels[found[:, 0]] == labels[truth[:, 0]]):.4f}",
                f"{g_agree:.4f}",
            )
            row(
                "  Gallery.match(k=5)",
                build,
                mem,
                latency(lambda q: g.match(q, k=5), queries, 1, reps1),
                latency(lambda q: g.match(q, k=5), queries, 32, reps32),
            )
        # centroid scoring: "build" is the time to average every SKU's references when a version loads
        gc = lane_gallery(root, 1, "centroid")
        before, t = rss_mb(), time.perf_counter()
        gc._prepare(gc.snapshot)  # what Gallery.open and refresh do before a version serves queries
        prep_s, prep_mem = time.perf_counter() - t, rss_mb() - before
        row(
            "  Gallery.match centroid",
            prep_s,
            prep_mem,
            latency(lambda q: gc.match(q, k=5), queries, 1, reps1),
            latency(lambda q: gc.match(q, k=5), queries, 32, reps32),
        )
        # an operator's typical change: one SKU's 3 references replaced by 3 new photos
        faiss.omp_set_num_threads(a.build_threads)
        keep = labels != labels[0]
        ids2 = np.concatenate([np.arange(n)[keep], np.arange(n, n + 3)])
        refs2 = np.concatenate(
            [refs[keep], unit(refs[:3] + 0.1 * np.random.default_rng(1).standard_normal((3, a.dim), dtype=np.float32))]
        )
        t = time.perf_counter()
        write_version(root, synthetic_version(2, refs2, np.concatenate([labels[keep], labels[:3]]), ids2))
        change_s = time.perf_counter() - t
        how = Snapshot.load(root, 2).manifest["index_made"]
        print(
            f"\nversion written in {build:.1f} s (index {factory}, built, files fsynced; "
            f"{(root / 'versions' / '00000001' / 'index.faiss').stat().st_size / 2**20:.0f} MB); "
            f"opened by a lane in {load_s:.2f} s using {mem:.0f} MB; "
            f"next version (one SKU's 3 photos replaced) written in {change_s:.1f} s ({how})",
            flush=True,
        )

    if a.hnsw:
        faiss.omp_set_num_threads(a.build_threads)
        before, t = rss_mb(), time.perf_counter()
        hnsw = faiss.index_factory(a.dim, "HNSW32,Flat", faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 80
        hnsw.add(refs)
        build, mem = time.perf_counter() - t, rss_mb() - before
        faiss.omp_set_num_threads(a.threads)
        for ef in (64, 128):
            hnsw.hnsw.efSearch = ef
            _, found = hnsw.search(queries, 10)
            row(
                f"HNSW32 efSearch {ef}",
                build,
                mem,
                latency(lambda q: hnsw.search(q, 10), queries, 1, reps1),
                latency(lambda q: hnsw.search(q, 10), queries, 32, reps32),
                f"{recall_at_10(found, truth):.4f}",
                f"{np.mean(labels[found[:, 0]] == labels[truth[:, 0]]):.4f}",
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="numbers of references")
    p.add_argument("--dim", type=int, default=128, help="embedding size (the shipped model's is 384; earlier 128)")
    p.add_argument("--queries", type=int, default=2000, help="queries for recall and agreement")
    p.add_argument("--reps", type=int, default=1000, help="timed batch-1 queries")
    p.add_argument("--threads", type=int, default=1, help="FAISS threads while searching (a lane uses one core)")
    p.add_argument("--build-threads", type=int, default=2, help="FAISS threads while building and for ground truth")
    p.add_argument(
        "--nprobe", type=int, nargs="+", default=[gallery_index.IVF_NPROBE], help="IVF nprobe values to sweep"
    )
    p.add_argument("--hnsw", action="store_true", help="also build HNSW32 for comparison")
    p.add_argument(
        "--query-noise", type=float, default=0.7, help="how far queries lie from their SKU (0.7 easy, 1.0 hard)"
    )
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(
        f"bench_gallery: {platform.processor() or platform.machine()}, "
        f"{faiss.omp_get_max_threads()} FAISS threads available, faiss {faiss.__version__}, numpy {np.__version__}; "
        f"search threads {a.threads}, build threads {a.build_threads}; "
        "latency = one index.search(k=10) call (or Gallery.match), in ms"
    )
    for n in a.sizes:
        bench_size(n, a)


if __name__ == "__main__":
    main()
