"""Damaged gallery files (issue 13, defect 2): every file of a version and every stored photo is
verified where it is loaded or copied, vectors that are not finite unit vectors are refused, and
`reid gallery check` names what is damaged and exits 1."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from gallery_fixtures import VAL, flip, run_reid, state

from retail_reid.gallery import Gallery, GalleryError
from retail_reid.gallery.bundle import export_bundle
from retail_reid.gallery.check import check_path
from retail_reid.gallery.snapshot import INDEX, MANIFEST, read_current, version_dir
from retail_reid.gallery.store import GalleryStore


def a_photo(root: Path, sku: str = "Kiwi") -> tuple[int, Path]:
    """(reference id, stored photo path) of one of the SKU's references."""
    with closing(sqlite3.connect(root / "gallery.db")) as conn:
        ref_id, image = conn.execute(
            "SELECT id, image FROM refs WHERE sku = ? AND removed_version IS NULL ORDER BY id", (sku,)
        ).fetchone()
    return ref_id, root / image


def test_a_flipped_index_is_refused_by_open_and_by_a_running_lanes_reload(gallery_dir, embedder):
    lane = Gallery.open(gallery_dir, embedder=embedder)
    with GalleryStore.open(gallery_dir) as store:
        store.remove_sku("Lime", operator="t")
    flip(version_dir(gallery_dir, 3) / INDEX)
    with pytest.raises(GalleryError, match=r"index.faiss: does not match its sha256 in the manifest; version 3 is"):
        Gallery.open(gallery_dir, embedder=embedder)
    with pytest.raises(GalleryError, match="does not match its sha256"):
        lane.refresh()
    assert lane.version == 2 and lane.has_sku("Lime")  # the lane keeps serving the whole version


def test_rolling_back_to_a_damaged_version_is_refused_and_changes_nothing(gallery_dir, embedder):
    with GalleryStore.open(gallery_dir) as store:
        store.remove_sku("Lime", operator="t")
    flip(version_dir(gallery_dir, 2) / INDEX)
    before = state(gallery_dir)
    with GalleryStore.open(gallery_dir) as store, pytest.raises(GalleryError) as refused:
        store.rollback(2, operator="t")
    assert "cannot roll back to version 2" in str(refused.value) and "sha256" in str(refused.value)
    assert state(gallery_dir) == before


def test_vectors_that_are_not_unit_are_refused_without_checksums(gallery_dir, embedder):
    """A version written before checksums (no sha256 in its manifest) is still refused if its vectors
    are not finite unit vectors; a damaged vector in the database is never published."""
    d = version_dir(gallery_dir, 2)
    manifest = json.loads((d / MANIFEST).read_bytes())
    del manifest["sha256"]
    (d / MANIFEST).write_text(json.dumps(manifest))
    index = d / INDEX
    data = bytearray(index.read_bytes())
    at = -8 * manifest["refs"] - 4 * 300  # the ids are last, 8 bytes each, after the vectors
    data[at : at + 4] = np.float32(1738.0).tobytes()  # one component of a vector
    index.write_bytes(bytes(data))
    with pytest.raises(GalleryError, match=r"reference vectors are not finite unit vectors \(reference \d+ has norm"):
        Gallery.open(gallery_dir, embedder=embedder)

    ref_id, _ = a_photo(gallery_dir)
    with closing(sqlite3.connect(gallery_dir / "gallery.db")) as conn:
        conn.execute(
            "UPDATE refs SET embedding = ? WHERE id = ?", (np.full(embedder.dim, 9.0, np.float32).tobytes(), ref_id)
        )
        conn.commit()
    before = state(gallery_dir)
    with GalleryStore.open(gallery_dir) as store, pytest.raises(GalleryError, match="not finite unit vectors"):
        store.add("Lemon", sorted((VAL / "Lemon").glob("*.jpg"))[:1], embedder=embedder)
    assert state(gallery_dir) == before


def test_a_damaged_stored_photo_is_found_by_check_and_refused_by_rebuild_and_export(
    gallery_dir, tmp_path, variant_model, capsys
):
    ref_id, photo = a_photo(gallery_dir)
    flip(photo, n=50)
    result = run_reid("gallery", "check", gallery_dir)
    assert result.returncode == 1, result.stderr
    assert f"{photo}: stored photo is damaged" in result.stdout and f"reference {ref_id}" in result.stdout
    with (
        GalleryStore.open(gallery_dir) as store,
        pytest.raises(GalleryError, match=f"{photo}: stored photo is damaged"),
    ):
        store.rebuild(variant_model, operator="t")
    with pytest.raises(GalleryError, match=f"{photo}: the stored photo of SKU 'Kiwi' is damaged"):
        export_bundle(gallery_dir, tmp_path / "b.tar")
    assert not (tmp_path / "b.tar").exists() and read_current(gallery_dir) == 2


def test_a_deleted_photo_makes_export_fail_in_one_line(gallery_dir, tmp_path):
    _, photo = a_photo(gallery_dir)
    photo.unlink()
    result = run_reid("gallery", "export", gallery_dir, tmp_path / "b.tar")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"reid gallery: error: {photo}: the stored photo of SKU 'Kiwi' is missing; nothing exported "
        f"(`reid gallery check {gallery_dir}` lists what is damaged)"
    )


def test_adding_a_photo_again_replaces_its_damaged_stored_copy_and_keeps_the_evidence(gallery_dir, embedder):
    ref_id, photo = a_photo(gallery_dir)
    with GalleryStore.open(gallery_dir) as store:
        source = Path(store.conn.execute("SELECT source FROM refs WHERE id = ?", (ref_id,)).fetchone()[0])
        store.remove_ref(ref_id, operator="t")
        flip(photo, n=50)
        store.add("Kiwi", [source], embedder=embedder, operator="t")
    assert check_path(gallery_dir).damage.damaged == []
    assert [p.name for p in (gallery_dir / "damaged").rglob("*.jpg")] == [photo.name]


def test_check_names_each_damaged_file_and_says_which_versions_are_unverified(gallery_dir):
    with GalleryStore.open(gallery_dir) as store:
        store.remove_sku("Lime", operator="t")
    flip(version_dir(gallery_dir, 2) / INDEX)
    d = version_dir(gallery_dir, 3)
    manifest = json.loads((d / MANIFEST).read_bytes())
    del manifest["sha256"]
    (d / MANIFEST).write_text(json.dumps(manifest))
    result = check_path(gallery_dir)
    assert result.damage.damaged == [
        f"{version_dir(gallery_dir, 2) / INDEX}: does not match its sha256 in the manifest; version 2 is damaged"
    ]
    assert result.damage.unverified == [f"{d}: written before checksums (sizes and vectors checked only)"]
    assert result.quality is not None and result.quality.version == 3
