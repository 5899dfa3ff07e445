"""The pipeline's view of the gallery (gallery.Gallery): matching and verification against a brute-force
reference computation, following new versions, and refusing another model."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import faiss
import numpy as np
import pytest
from gallery_fixtures import SKUS, TRAIN, brute_force, stored_refs

from retail_reid.gallery import Gallery, GalleryError, SkuMatch, Verification
from retail_reid.gallery import index as gallery_index
from retail_reid.gallery.renderings import OFF
from retail_reid.gallery.store import GalleryStore
from retail_reid.images import read_image


def test_stored_embeddings_are_the_models_embeddings_of_the_photos(built_gallery, embedder):
    with closing(sqlite3.connect(built_gallery / "gallery.db")) as conn:
        rows = conn.execute(
            "SELECT source, image, embedding FROM refs WHERE rendering_of IS NULL ORDER BY id LIMIT 3"
        ).fetchall()
    for source, image, blob in rows:
        expect = embedder.embed([read_image(source)])[0]
        assert np.allclose(np.frombuffer(blob, np.float32), expect, atol=1e-5)
        assert (built_gallery / image).read_bytes() == Path(source).read_bytes()


@pytest.mark.parametrize("scoring", ["centroid", "nearest"])
def test_match_ranks_skus_exactly_as_brute_force(built_gallery, embedder, val_queries, scoring):
    g = Gallery.open(built_gallery, embedder=embedder, scoring=scoring)
    calibration = embedder.calibration_for(scoring)
    assert g.scoring == scoring and g.calibration == calibration
    queries, _ = val_queries
    labels, vectors = stored_refs(built_gallery)
    results = g.match(queries, k=4)
    assert len(results) == len(queries)
    for q, ranked in zip(queries, results, strict=True):
        expect = sorted(brute_force(q, labels, vectors, scoring).items(), key=lambda t: -t[1])[:4]
        assert [m.sku for m in ranked] == [s for s, _ in expect]
        assert np.allclose([m.score for m in ranked], [v for _, v in expect], atol=1e-5)
        assert all(isinstance(m, SkuMatch) and 0.0 <= m.confidence <= 1.0 for m in ranked)
        assert np.allclose([m.confidence for m in ranked], calibration.confidence([m.score for m in ranked]), atol=1e-6)


def test_the_gallery_scores_the_way_the_model_is_calibrated_by_default(built_gallery, embedder, tmp_path):
    g = Gallery.open(built_gallery, embedder=embedder)
    assert g.scoring == embedder.calibration.scoring == "centroid" and g.calibration == embedder.calibration
    with pytest.raises(GalleryError, match="scoring"):
        Gallery.open(built_gallery, embedder=embedder, scoring="median")


def test_the_embedder_a_gallery_loads_runs_the_threads_asked_for(built_gallery):
    for threads in (1, 2):
        g = Gallery.open(built_gallery, threads=threads)
        assert g.embedder.session.get_session_options().intra_op_num_threads == threads


def test_a_reference_photo_finds_its_own_sku_with_similarity_one(built_gallery, embedder):
    g = Gallery.open(built_gallery, embedder=embedder, scoring="nearest")
    photo = sorted((TRAIN / "Kiwi").glob("*.jpg"))[0]
    best = g.match(embedder.embed([read_image(photo)]), k=1)[0][0]
    assert best.sku == "Kiwi" and best.score == pytest.approx(1.0, abs=1e-4)


def test_a_sku_with_one_reference_has_it_for_centroid(tmp_path, embedder):
    photo = sorted((TRAIN / "Kiwi").glob("*.jpg"))[0]
    GalleryStore.init(tmp_path / "g", operator="t", lane_camera=OFF)  # the photo alone, without renderings
    with GalleryStore.open(tmp_path / "g") as store:
        store.add("Kiwi", [photo], operator="t", embedder=embedder)
        store.add("Lemon", [], operator="t", embedder=embedder)  # catalogued, no photo yet
    g = Gallery.open(tmp_path / "g", embedder=embedder)
    best = g.match(embedder.embed([read_image(photo)]), k=3)[0]
    assert [m.sku for m in best] == ["Kiwi"] and best[0].score == pytest.approx(
        1.0, abs=1e-4
    )  # SKUs without references never rank
    v = g.verify(embedder.embed([read_image(photo)])[0], "Lemon")
    assert v.similarity == -1.0 and v.best_other_sku == "Kiwi"


def test_match_takes_a_single_vector_and_k_larger_than_the_gallery(built_gallery, embedder, val_queries):
    g = Gallery.open(built_gallery, embedder=embedder)
    ranked = g.match(val_queries[0][0], k=50)
    assert len(ranked) == 1 and sorted(m.sku for m in ranked[0]) == SKUS


@pytest.mark.parametrize("scoring", ["centroid", "nearest"])
def test_verify_agrees_with_brute_force(built_gallery, embedder, val_queries, scoring):
    g = Gallery.open(built_gallery, embedder=embedder, scoring=scoring)
    labels, vectors = stored_refs(built_gallery)
    queries, truth = val_queries
    for q, claimed in [(queries[0], truth[0]), (queries[0], "Lemon"), (queries[-1], truth[-1])]:
        scores = brute_force(q, labels, vectors, scoring)
        v = g.verify(q, claimed)
        other = max((s for s in scores if s != claimed), key=scores.get)
        assert isinstance(v, Verification) and v.sku == claimed
        assert v.similarity == pytest.approx(scores[claimed], abs=1e-5)
        assert v.best_other_sku == other and v.best_other_similarity == pytest.approx(scores[other], abs=1e-5)
        assert v.margin == pytest.approx(v.similarity - v.best_other_similarity, abs=1e-6)
        assert v.confidence == pytest.approx(
            float(embedder.calibration_for(scoring).confidence(v.similarity)), abs=1e-6
        )


def test_verify_of_an_unknown_sku_gives_similarity_minus_one(built_gallery, embedder, val_queries):
    g = Gallery.open(built_gallery, embedder=embedder)
    q = val_queries[0][0]
    v = g.verify(q, "NOT-IN-GALLERY")
    best = g.match(q, k=1)[0][0]
    assert v.similarity == -1.0 and v.best_other_sku == best.sku
    assert v.margin == pytest.approx(-1.0 - best.score, abs=1e-6)


def test_bad_query_shapes_are_refused(built_gallery, embedder):
    g = Gallery.open(built_gallery, embedder=embedder)
    with pytest.raises(GalleryError, match=f"shape \\(N, {embedder.dim}\\)"):
        g.match(np.ones((2, embedder.dim + 1), np.float32))
    with pytest.raises(GalleryError, match=r"non-finite|all-zero"):
        g.match(np.zeros((1, embedder.dim), np.float32))
    with pytest.raises(GalleryError, match="1-D"):
        g.verify(np.ones((2, embedder.dim), np.float32), "Kiwi")
    with pytest.raises(GalleryError, match="k must be"):
        g.match(np.ones(embedder.dim, np.float32), k=0)


def test_catalogue_lookups(gallery_dir, embedder):
    with GalleryStore.open(gallery_dir) as store:
        store.add("Kiwi", [], name="Kiwi Hayward", barcodes=["4011", "5000112637922"], operator="t", embedder=embedder)
    g = Gallery.open(gallery_dir, embedder=embedder)
    assert g.skus() == SKUS and g.has_sku("Kiwi") and not g.has_sku("kiwi")
    assert g.sku_for_barcode("5000112637922") == "Kiwi" and g.sku_for_barcode("4011") == "Kiwi"
    assert g.sku_for_barcode("0000000000000") is None
    assert g.display_name("Kiwi") == "Kiwi Hayward" and g.display_name("Lemon") == "Lemon"
    assert g.display_name("FROM-THE-POS-LOG") == "FROM-THE-POS-LOG"
    ref = g.reference_image("Kiwi")
    assert (
        ref is not None
        and ref.is_file()
        and ref.read_bytes() in {p.read_bytes() for p in (TRAIN / "Kiwi").glob("*.jpg")}
    )
    assert g.reference_image("NOPE") is None


def test_refresh_follows_new_versions_and_keeps_the_old_until_then(gallery_dir, embedder, val_queries):
    g = Gallery.open(gallery_dir, embedder=embedder)
    assert g.version == 2 and g.refresh() is False
    with GalleryStore.open(gallery_dir) as store:
        store.remove_sku("Kiwi", operator="t")
    assert g.has_sku("Kiwi") and g.version == 2  # not yet refreshed: still the whole old version
    assert g.refresh() is True and g.version == 3 and not g.has_sku("Kiwi")
    assert all(m.sku != "Kiwi" for ranked in g.match(val_queries[0], k=11) for m in ranked)


def test_opening_with_another_model_is_refused_suggesting_rebuild(built_gallery, variant_model):
    with pytest.raises(GalleryError, match="reid gallery rebuild"):
        Gallery.open(built_gallery, model=variant_model)


def test_centroids_of_many_skus_are_searched_with_an_ivf_index_that_finds_the_same(
    built_gallery, embedder, val_queries, monkeypatch
):
    from retail_reid.gallery import matching

    monkeypatch.setattr(matching, "CENTROID_EXACT_MAX", 5)  # 12 SKUs: an IVF index over their centroids
    monkeypatch.setattr(gallery_index, "LISTS_PER_SQRT_REF", 1)  # 3 lists for 12 centroids
    monkeypatch.setattr(gallery_index, "IVF_NPROBE", 1000)  # every list: any difference from exact is the index's fault
    g = Gallery.open(built_gallery, embedder=embedder)
    assert isinstance(g._centroids(g.snapshot).index, faiss.IndexIVF)
    labels, vectors = stored_refs(built_gallery)
    queries, truth = val_queries
    for q, ranked in zip(queries, g.match(queries, k=3), strict=True):
        expect = sorted(brute_force(q, labels, vectors).items(), key=lambda t: -t[1])[:3]
        assert [m.sku for m in ranked] == [s for s, _ in expect]
    v = g.verify(queries[0], truth[0])
    assert v.best_other_sku != truth[0] and v.similarity == pytest.approx(
        brute_force(queries[0], labels, vectors)[truth[0]], abs=1e-5
    )
