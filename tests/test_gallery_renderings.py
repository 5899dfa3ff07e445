"""Lane-camera renderings of reference photos (gallery/renderings.py): made on enrolment under the
gallery's profile, seeded by each photo's content, counted but never listed as photos, going with
their photo, made again when the profile or the model changes, carried through rollback and
bundles, and checked."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from gallery_fixtures import TRAIN, VAL

from retail_reid.cli import main
from retail_reid.gallery import GalleryError
from retail_reid.gallery.bundle import export_bundle, import_bundle
from retail_reid.gallery.check import check_path
from retail_reid.gallery.matching import Gallery, LaneMatching
from retail_reid.gallery.photos import RefOrigin
from retail_reid.gallery.renderings import OFF, LaneProfile, seed_for
from retail_reid.gallery.snapshot import RowKind, Snapshot, read_current, read_manifest, version_dir
from retail_reid.gallery.store import GalleryStore
from retail_reid.images import read_image
from retail_reid.models.views import LANE_LEVELS, LaneCamera, LaneLevel

KIWIS = sorted((TRAIN / "Kiwi").glob("*.jpg"))[:2]
LIME = sorted((VAL / "Lime").glob("*.jpg"))[:1]


def renderings(root: Path) -> dict[tuple[str, int], bytes]:
    """The current renderings' vectors, by (their photo's sha256, view)."""
    with closing(sqlite3.connect(root / "gallery.db")) as conn:
        rows = conn.execute(
            "SELECT p.sha256, r.view, r.embedding FROM refs r JOIN refs p ON p.id = r.rendering_of "
            "WHERE r.removed_version IS NULL ORDER BY r.id"
        ).fetchall()
    return {(sha, view): emb for sha, view, emb in rows}


@pytest.fixture
def small(tmp_path, embedder) -> Path:
    """A gallery of two kiwi photos under the middle lane level's profile (2 views each), as version 2."""
    root = tmp_path / "g"
    GalleryStore.init(root, operator="t", lane_camera=LaneProfile())
    with GalleryStore.open(root) as store:
        store.add("Kiwi", KIWIS, operator="t", embedder=embedder)
    return root


def test_a_new_gallery_has_renderings_off(gallery_dir):
    with GalleryStore.open(gallery_dir, readonly=True) as store:  # a read-only open leaves WAL files: a copy
        assert store.lane_profile() == OFF == LaneProfile(camera=LANE_LEVELS[LaneLevel.MIDDLE], views=0)
        assert sum(r.n_renderings for r in store.products()) == 0
    snap = Snapshot.load(gallery_dir, read_current(gallery_dir))
    assert (snap.manifest["photos"], snap.manifest["renderings"], snap.index.ntotal) == (96, 0, 96)


def test_renderings_are_made_on_enrolment_counted_and_never_listed(small, embedder, capsys):
    with GalleryStore.open(small, readonly=True) as store:
        assert store.lane_profile() == LaneProfile() == LaneProfile(camera=LANE_LEVELS[LaneLevel.MIDDLE], views=2)
        rows = store.products()
        kiwi, refs = store.product("Kiwi")
        rendered = store.conn.execute(
            "SELECT r.sku, p.sku, r.origin, r.view, p.origin FROM refs r JOIN refs p ON p.id = r.rendering_of "
            "WHERE r.removed_version IS NULL"
        ).fetchall()
    photos = sum(r.n_refs for r in rows)
    assert photos == 2 and sum(r.n_renderings for r in rows) == 2 * photos == len(rendered)
    assert {(a == b, origin, view, of) for a, b, origin, view, of in rendered} == {
        (True, RefOrigin.RENDERING.value, v, RefOrigin.PHOTO.value) for v in (0, 1)
    }
    assert kiwi.n_renderings == 2 * kiwi.n_refs and all(r.origin == RefOrigin.PHOTO for r in refs)
    snap = Snapshot.load(small, read_current(small))
    assert (snap.manifest["photos"], snap.manifest["renderings"], snap.index.ntotal) == (2, 4, 6)
    assert snap.manifest["lane_camera"] == LaneProfile().to_dict()

    assert main(["gallery", "show", str(small), "--sku", "Kiwi"]) == 0
    out = capsys.readouterr().out
    assert f"{kiwi.n_refs} references, {2 * kiwi.n_refs} lane-camera renderings of them" in out
    assert out.count(" photo ") == kiwi.n_refs  # each reference line shows its origin; no rendering is listed
    assert main(["gallery", "list", str(small)]) == 0
    assert capsys.readouterr().out.strip().endswith("2 references, 4 lane-camera renderings")
    assert main(["gallery", "lane-camera", str(small), "--json"]) == 0
    assert LaneProfile.from_dict(json.loads(capsys.readouterr().out), "out") == LaneProfile()

    # seeded by the photo's content: the stored vectors are the renderer's views of the photo, embedded
    photo = KIWIS[0]
    sha = next(r.image for r in refs if r.source == str(photo)).rsplit("/", 1)[1].split(".")[0]
    views = embedder.embed(LaneCamera().views(read_image(photo), seed_for(sha), 2))
    stored = renderings(small)
    for view in (0, 1):
        np.testing.assert_allclose(np.frombuffer(stored[(sha, view)], np.float32), views[view], atol=1e-5)


def test_lane_references_get_no_renderings(small, embedder):
    with GalleryStore.open(small) as store:
        store.add_photos([("Kiwi", LIME[0])], {}, action="t", embedder=embedder, origin=RefOrigin.LANE)
        kiwi, refs = store.product("Kiwi")
    assert (kiwi.n_refs, kiwi.n_renderings) == (3, 4) and refs[-1].origin == RefOrigin.LANE


def test_removing_a_photo_removes_its_renderings(small):
    with GalleryStore.open(small) as store:
        (photo, other), rendering = store.product("Kiwi")[1], max(store.photo_ids()) + 1
        with pytest.raises(GalleryError, match=f"reference {rendering} is a lane-camera rendering of reference "):
            store.remove_ref(rendering)
        result = store.remove_ref(photo.id, operator="t")
        assert result.summary.endswith("and its 2 lane-camera renderings")
        assert (store.products()[0].n_refs, store.products()[0].n_renderings) == (1, 2)
    snap = Snapshot.load(small, result.version)
    assert len(snap.ref_ids) == 3 and photo.id not in snap.ref_ids
    assert set(renderings(small)) == {(Path(other.image).stem, v) for v in (0, 1)}


def test_rebuild_renders_again_with_the_same_vectors(small, variant_model):
    before = renderings(small)
    with GalleryStore.open(small) as store:
        result = store.rebuild(variant_model, operator="t")
    assert "re-embedded 2 references and 4 lane-camera renderings" in result.summary
    after = renderings(small)
    assert after.keys() == before.keys()  # the variant model has the same weights: the same vectors
    for key, emb in before.items():
        np.testing.assert_allclose(np.frombuffer(after[key], np.float32), np.frombuffer(emb, np.float32), atol=1e-5)


def test_a_new_profile_renders_every_photo_again_and_rollback_restores_the_old(small, embedder, capsys):
    before = renderings(small)
    hard = LaneProfile(camera=LANE_LEVELS[LaneLevel.HARD], views=1)
    with GalleryStore.open(small) as store:
        changed = store.set_lane_camera(hard, operator="t", embedder=embedder)
        assert store.lane_profile() == hard
        with pytest.raises(GalleryError, match="nothing to change: the lane camera is already 1 view per photo"):
            store.set_lane_camera(hard)
    after = renderings(small)
    assert "2 lane-camera renderings of 2 photos" in changed.summary and len(after) == 2
    assert all(after[key] != before[key] for key in after)  # another camera, other vectors
    assert read_manifest(small, changed.version)["lane_camera"] == hard.to_dict()

    assert main(["gallery", "lane-camera", str(small), "--views", "0", "--operator", "t"]) == 0
    assert "lane camera: off" in capsys.readouterr().out and renderings(small) == {}
    with GalleryStore.open(small) as store:
        assert store.products()[0].n_renderings == 0 and store.lane_profile() == replace(hard, views=0)
        store.rollback(2, operator="t")
        assert store.lane_profile() == LaneProfile()
    assert renderings(small) == before


def test_bad_profile_values_are_one_line_errors_naming_the_field(small, capsys):
    for args, field in (
        (["--side-px", "130", "80"], "side_px"),
        (["--jpeg-quality", "30", "101"], "jpeg_quality"),
        (["--hand-share", "1.5"], "hand_share"),
        (["--views", "-1"], "views"),
    ):
        assert main(["gallery", "lane-camera", str(small), *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"reid gallery: error: lane camera: {field} must") and err.count("\n") == 1
    with pytest.raises(GalleryError, match="meta 'lane_camera': lane camera: unknown field"):
        LaneProfile.from_dict({"views": 1, "zoom": 2}, "meta 'lane_camera'")
    assert read_current(small) == 2


def test_renderings_survive_a_bundle_round_trip(small, tmp_path, embedder):
    export_bundle(small, tmp_path / "b.tar")
    target = tmp_path / "target"
    GalleryStore.init(target, operator="t", lane_camera=LaneProfile())
    result = import_bundle(target, tmp_path / "b.tar", operator="t", embedder=embedder)
    assert "2 references in" in result.summary
    assert renderings(target) == renderings(small)


def test_check_flags_a_rendering_without_its_photo(small, embedder):
    with GalleryStore.open(small) as store:
        photo = store.product("Kiwi")[1][0].id
        store.add("Lime", LIME, operator="t", embedder=embedder)
        # an older release's `remove --ref` takes out the photo and knows nothing of its renderings
        store.conn.execute("UPDATE refs SET removed_version = 3 WHERE id = ?", (photo,))
    report = check_path(small).quality
    assert report is not None and (report.refs, report.renderings) == (3, 6)
    assert [(p.sku, p.detail) for p in report.rendering_problems] == [
        ("Kiwi", f"a lane-camera rendering of reference {photo}, which is not in the gallery")
    ] * 2
    assert report.duplicates == [] and report.outliers == []  # renderings are not compared as photos
    with GalleryStore.open(small) as store:
        store.set_lane_camera(store.lane_profile(), operator="t", again=True, embedder=embedder)
    report = check_path(small).quality
    assert report is not None and report.rendering_problems == [] and report.renderings == 4


def test_a_gallery_from_before_renderings_is_migrated_with_renderings_off(small, embedder):
    with closing(sqlite3.connect(small / "gallery.db")) as conn:
        conn.executescript(
            "DELETE FROM refs WHERE rendering_of IS NOT NULL; DROP INDEX refs_rendering_of; "
            "DROP INDEX refs_active_photo; ALTER TABLE refs DROP COLUMN rendering_of; ALTER TABLE refs DROP COLUMN "
            "view; CREATE UNIQUE INDEX refs_active_photo ON refs(sha256) WHERE removed_version IS NULL; "
            "DELETE FROM meta WHERE key = 'lane_camera';"
        )
    with GalleryStore.open(small, readonly=True) as store:  # read as it is
        assert store.lane_profile() == OFF and store.products()[0].n_refs == 2
    with GalleryStore.open(small) as store:  # a writer brings it up to date
        store.add("Lime", LIME, operator="t", embedder=embedder)
        assert [(r.n_refs, r.n_renderings) for r in store.products()] == [(2, 0), (1, 0)]
        store.set_lane_camera(LaneProfile(), operator="t", embedder=embedder)
        assert [(r.n_refs, r.n_renderings) for r in store.products()] == [(2, 4), (1, 2)]


def test_a_sku_scores_the_better_of_its_photos_and_its_renderings_centroid(small, embedder):
    """By centroid, renderings are averaged apart from the photos: a crop like the photos is not pulled
    down by the renderings, nor a lane-camera crop by the photos."""
    with GalleryStore.open(small) as store:
        store.add("Lime", LIME, operator="t", embedder=embedder)
    snap = Snapshot.load(small, read_current(small))
    rendered = snap.kinds == RowKind.RENDERING
    assert snap.manifest["renderings"] == 6 and int(rendered.sum()) == 6
    vectors = snap.index.reconstruct_batch(snap.ref_ids)
    kiwi = snap.ref_sku == snap.position["Kiwi"]

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v)

    photos, views = unit(vectors[kiwi & ~rendered].mean(0)), unit(vectors[kiwi & rendered].mean(0))
    pooled = unit(vectors[kiwi].mean(0))
    g = Gallery.open(small, embedder, scoring="centroid")
    for query in (photos, views):
        (best, *_), *_ = g.match(query[None], k=2)
        assert best.sku == "Kiwi" and best.score == pytest.approx(1.0, abs=1e-5)
        assert best.score > float(pooled @ query) + 1e-3  # what one pooled centroid gave
        assert g.verify(query, "Kiwi").similarity == pytest.approx(1.0, abs=1e-5)
    assert [m.sku for m in g.match(photos[None], k=5)[0]] == ["Kiwi", "Lime"]  # each SKU once


def test_lane_references_score_in_their_own_centroid_unless_pooled(small, embedder):
    """Lane references are a third kind: apart (the default), a crop like them scores their centroid
    whole; pooled, they are averaged with the photos as before."""
    with GalleryStore.open(small) as store:
        store.add_photos([("Kiwi", LIME[0])], {}, action="t", embedder=embedder, origin=RefOrigin.LANE)
    snap = Snapshot.load(small, read_current(small))
    lane = snap.kinds == RowKind.LANE
    assert snap.manifest["lane_references"] == int(lane.sum()) == 1
    vectors = snap.index.reconstruct_batch(snap.ref_ids)
    query = vectors[lane][0]

    def centroid(rows: np.ndarray) -> np.ndarray:
        v = vectors[rows].mean(0)
        return v / np.linalg.norm(v)

    photos_and_lane, views = centroid(snap.kinds != RowKind.RENDERING), centroid(snap.kinds == RowKind.RENDERING)
    apart = Gallery.open(small, embedder, scoring="centroid")
    pooled = Gallery.open(small, embedder, scoring="centroid", lane_matching=LaneMatching.POOLED)
    assert apart.match(query[None], k=1)[0][0].score == pytest.approx(1.0, abs=1e-5)
    similarity = pooled.verify(query, "Kiwi").similarity
    assert similarity == pytest.approx(max(float(query @ photos_and_lane), float(query @ views)), abs=1e-5)
    assert similarity < 1.0 - 1e-3


def test_the_kind_of_each_reference_is_read_from_an_older_versions_refs(small):
    """A version written before kinds.npy existed: its refs.json tells which rows are renderings."""
    snap = Snapshot.load(small, read_current(small))
    assert (snap.kinds == RowKind.RENDERING).sum() == snap.manifest["renderings"] > 0
    d = version_dir(small, snap.version)
    manifest = json.loads((d / "manifest.json").read_text())
    for key in ("files", "sha256"):
        del manifest[key]["kinds.npy"]
    (d / "manifest.json").write_text(json.dumps(manifest))
    (d / "kinds.npy").unlink()
    assert np.array_equal(Snapshot.load(small, snap.version).kinds, snap.kinds)


def test_a_damaged_kinds_file_is_a_one_line_error_naming_it(small):
    snap = Snapshot.load(small, read_current(small))
    path = version_dir(small, snap.version) / "kinds.npy"
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(GalleryError, match=r"kinds\.npy: .*damaged") as e:
        Snapshot.load(small, snap.version)
    assert "\n" not in str(e.value)
