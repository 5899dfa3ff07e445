"""The FAISS index of a version (gallery/index.py): its type follows the size, and the approximate
index, built or updated from the previous version's, answers like exact search."""

from __future__ import annotations

import faiss
import numpy as np
from gallery_fixtures import VAL, brute_force, stored_refs

from retail_reid.gallery import Gallery
from retail_reid.gallery import index as gallery_index
from retail_reid.gallery.snapshot import read_manifest
from retail_reid.gallery.store import GalleryStore


def test_index_type_follows_the_gallery_size():
    assert gallery_index.factory_for(10) == gallery_index.EXACT
    assert gallery_index.factory_for(gallery_index.EXACT_MAX_REFS) == gallery_index.EXACT
    assert gallery_index.factory_for(gallery_index.EXACT_MAX_REFS + 1).startswith("IVF")
    assert gallery_index.factory_for(1_000_000) == "IVF4000,Flat"


def test_a_gallery_on_the_approximate_index_matches_like_exact_search(gallery_dir, embedder, val_queries, monkeypatch):
    """The IVF path end to end. With 96 references in 36 lists, nprobe 24 may miss a distant third SKU;
    probing every list must give exact search's answers (recall at scale: benchmarks/bench_gallery.py)."""
    exact = Gallery.open(gallery_dir, embedder=embedder).match(val_queries[0], k=3)
    monkeypatch.setattr(gallery_index, "EXACT_MAX_REFS", 10)
    monkeypatch.setattr(gallery_index, "IVF_NPROBE", 1000)
    with GalleryStore.open(gallery_dir) as store:
        store.remove_sku("Lime", operator="t")
        store.rollback(2, operator="t")
    g = Gallery.open(gallery_dir, embedder=embedder)
    assert g.version == 4 and read_manifest(gallery_dir, 4)["index_factory"] == gallery_index.factory_for(96)
    approx = g.match(val_queries[0], k=3)
    assert [[m.sku for m in r] for r in approx] == [[m.sku for m in r] for r in exact]
    assert np.allclose([[m.score for m in r] for r in approx], [[m.score for m in r] for r in exact], atol=1e-5)


def test_an_approximate_index_is_updated_from_the_previous_version_and_stays_exact(
    gallery_dir, embedder, val_queries, monkeypatch
):
    monkeypatch.setattr(gallery_index, "EXACT_MAX_REFS", 10)
    monkeypatch.setattr(
        gallery_index, "IVF_NPROBE", 1000
    )  # every list: any difference from exact is the update's fault
    queries, _ = val_queries
    with GalleryStore.open(gallery_dir) as store:
        steps = [
            lambda: store.remove_sku("Lime"),
            lambda: store.add("Lemon", sorted((VAL / "Lemon").glob("*.jpg")), embedder=embedder),
            lambda: store.remove_ref(store.product("Kiwi")[1][0].id),
            lambda: store.rollback(3),
        ]
        for step in steps:
            version = step().version
            made = read_manifest(gallery_dir, version)["index_made"]
            assert made == ("built" if version == 3 else f"updated from version {version - 1}")
            g = Gallery.open(gallery_dir, embedder=embedder)
            labels, vectors = stored_refs(gallery_dir)
            for q, ranked in zip(queries, g.match(queries, k=3), strict=True):
                expect = sorted(brute_force(q, labels, vectors).items(), key=lambda t: -t[1])[:3]
                assert [m.sku for m in ranked] == [s for s, _ in expect]


def test_update_index_equals_a_fresh_index_on_the_same_lists():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(0, 8000, 2)
    index = gallery_index.build_index(x, ids, "IVF40,Flat")
    empty = faiss.clone_index(index)
    empty.reset()
    # keep most, drop 300, add 200 new ids, and give 5 kept ids new vectors (as a rebuild would)
    new_ids = np.concatenate([ids[300:], np.arange(9000, 9200)])
    new_x = np.concatenate([x[300:], x[:200][::-1]])
    new_x[:5] = x[-5:]
    updated = gallery_index.update_index(index, ids, new_x, new_ids)
    fresh = gallery_index.update_index(empty, np.zeros(0, np.int64), new_x, new_ids)
    assert updated.ntotal == fresh.ntotal == len(new_ids)
    assert np.array_equal(gallery_index.reference_vectors(updated, new_ids), new_x)
    updated.nprobe = fresh.nprobe = 40
    d1, i1 = updated.search(new_x[:100], 5)
    d2, i2 = fresh.search(new_x[:100], 5)
    assert np.array_equal(np.sort(i1, axis=1), np.sort(i2, axis=1)) and np.allclose(d1, d2)
