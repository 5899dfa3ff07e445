"""`reid gallery repair` (issue 13, defect 6): CURRENT, the database and damaged versions rebuilt from
the stored versions and photos; what cannot be rebuilt is said; damaged files are moved aside, never deleted."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from gallery_fixtures import VAL, flip, run_reid

from retail_reid.gallery import Gallery, GalleryError
from retail_reid.gallery.check import check_path
from retail_reid.gallery.index import reference_vectors
from retail_reid.gallery.repair import repair
from retail_reid.gallery.snapshot import INDEX, REFS, ROWS, Snapshot, read_current, version_dir
from retail_reid.gallery.store import GalleryStore


def contents(root: Path) -> tuple:
    """What the gallery holds: products, barcodes and every reference (active or not) with its vector."""
    with GalleryStore.open(root, readonly=True) as store:
        products = store.conn.execute("SELECT sku, name, category, price, active FROM products ORDER BY sku").fetchall()
        codes = store.conn.execute("SELECT * FROM barcodes ORDER BY code").fetchall()
        refs = store.conn.execute(
            "SELECT id, sku, image, sha256, phash, source, removed_version IS NULL, embedding FROM refs ORDER BY id"
        ).fetchall()
    return products, codes, refs


@pytest.fixture
def changed(gallery_dir, embedder) -> Path:
    """The sample gallery with a catalogue edit, a removed SKU and added photos (versions 2 to 4)."""
    with GalleryStore.open(gallery_dir) as store:
        store.add("Kiwi", [], name="Kiwi grün", barcodes=["4030"], operator="t", embedder=embedder)
        store.remove_sku("Lime", operator="t")
        store.add("Lemon", sorted((VAL / "Lemon").glob("*.jpg"))[:2], operator="t", embedder=embedder)
    return gallery_dir


def test_a_deleted_current_is_advised_to_repair_and_repaired(changed, embedder):
    (changed / "CURRENT").unlink()
    advice = f"{changed}: the gallery's CURRENT file is missing; `reid gallery repair {changed}` rebuilds it"
    with pytest.raises(GalleryError, match=advice):
        Gallery.open(changed, embedder=embedder)
    listed = run_reid("gallery", "history", changed)
    assert listed.returncode == 2 and advice in listed.stderr and "gallery init" not in listed.stderr
    repaired = run_reid("gallery", "repair", changed)
    assert repaired.returncode == 0, repaired.stderr
    assert "repaired: CURRENT set to version 5 (was missing or unreadable)" in repaired.stdout
    assert Gallery.open(changed, embedder=embedder).version == 5 and check_path(changed).damage.damaged == []


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_lost_database_is_rebuilt_from_the_versions_and_the_old_one_kept(changed, embedder, damage):
    before = contents(changed)
    db = changed / "gallery.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    original = db.read_bytes()
    if damage == "truncated":
        db.write_bytes(original[: len(original) // 3])
    else:
        db.unlink()
    result = run_reid("gallery", "list", changed)
    assert result.returncode == 2 and f"reid gallery repair {changed}" in result.stderr

    fixed = repair(changed, operator="t")
    assert fixed.cannot == [] and any("gallery.db rebuilt from versions 1, 2, 3, 4, 5" in line for line in fixed.done)
    assert contents(changed) == before
    if damage == "truncated":  # the evidence is kept, byte for byte
        kept = list((changed / "damaged").rglob("gallery.db"))
        assert len(kept) == 1 and kept[0].read_bytes() == original[: len(original) // 3]
    with GalleryStore.open(changed) as store:
        assert [v.version for v in store.history()] == [1, 2, 3, 4, 5]
        assert store.rollback(3, operator="t").version == 6  # Lime comes back
        store.add("Lemon", sorted((VAL / "Lemon").glob("*.jpg"))[2:3], operator="t", embedder=embedder)
    g = Gallery.open(changed, embedder=embedder)
    assert g.version == 7 and g.has_sku("Lime") and check_path(changed).damage.damaged == []


def test_a_damaged_current_version_is_set_aside_and_rewritten_from_the_database(changed, embedder):
    index = version_dir(changed, 5) / INDEX
    flip(index)
    damaged_bytes = index.read_bytes()
    fixed = repair(changed)
    assert fixed.cannot == [] and fixed.done[-1] == "version 5, the database's last, rewritten from the database"
    assert Gallery.open(changed, embedder=embedder).version == 5 and check_path(changed).damage.damaged == []
    assert [p.read_bytes() for p in (changed / "damaged").rglob(INDEX)] == [damaged_bytes]


def test_damaged_vectors_in_the_database_are_restored_from_the_versions(changed, embedder):
    before = contents(changed)
    with closing(sqlite3.connect(changed / "gallery.db")) as conn:
        conn.execute(
            "UPDATE refs SET embedding = ? WHERE id IN (1, 2)", (np.full(embedder.dim, 7, np.float32).tobytes(),)
        )
        conn.commit()
    assert check_path(changed).damage.damaged
    fixed = repair(changed)
    assert fixed.done == ["2 damaged reference vectors restored from the stored versions"] and fixed.cannot == []
    assert contents(changed) == before


def test_what_cannot_be_rebuilt_is_said_and_nothing_is_destroyed(changed):
    """Versions written before refs.json cannot rebuild a database: repair says so and leaves the file."""
    for v in range(1, 6):
        d = version_dir(changed, v)
        (d / REFS).unlink()
        manifest = json.loads((d / "manifest.json").read_bytes())
        del manifest["files"][REFS], manifest["sha256"][REFS]
        (d / "manifest.json").write_text(json.dumps(manifest))
    db = changed / "gallery.db"
    db.write_bytes(b"garbage" * 100)
    result = run_reid("gallery", "repair", changed)
    assert result.returncode == 1
    assert "cannot repair: " in result.stdout and "lack refs.json" in result.stdout
    assert db.read_bytes() == b"garbage" * 100 and read_current(changed) == 5


def test_a_whole_gallery_has_nothing_to_repair(gallery_dir):
    def files() -> list[str]:
        """The gallery's files; not SQLite's own -wal and -shm, which a read-only open elsewhere may have
        left in the shared gallery and any writer's checkpoint removes."""
        names = (str(p.relative_to(gallery_dir)) for p in gallery_dir.rglob("*") if p.is_file())
        return sorted(n for n in names if not n.endswith(("-wal", "-shm")))

    before = files()
    result = run_reid("gallery", "repair", gallery_dir)
    assert result.returncode == 0 and result.stdout.strip() == f"{gallery_dir}: nothing to repair"
    assert files() == before


def held(root: Path, version: int) -> tuple:
    """What a stored version holds: its products, and each reference's id, SKU and vector."""
    snap = Snapshot.load(root, version)
    skus = [snap.skus[int(i)] for i in snap.ref_sku]
    return snap.products, snap.ref_ids.tolist(), skus, reference_vectors(snap.index, snap.ref_ids).tolist()


def test_a_damaged_old_version_is_rebuilt_from_the_database_and_can_be_rolled_back_to(changed, embedder):
    before = held(changed, 2)
    flip(version_dir(changed, 2) / INDEX)
    fixed = repair(changed)
    assert fixed.cannot == [] and "version 2 rebuilt from the database (refs.json and its catalog.json)" in fixed.done
    assert held(changed, 2) == before and check_path(changed).damage.damaged == []
    with GalleryStore.open(changed) as store:
        assert store.rollback(2, operator="t").version == 6
    assert held(changed, 6)[1:] == before[1:]


def test_an_old_version_whose_own_lists_are_damaged_is_rebuilt_from_the_database_history(changed, embedder):
    before = held(changed, 4)  # Lime removed: its references are not in it
    for name in (REFS, ROWS, INDEX):
        flip(version_dir(changed, 4) / name)
    fixed = repair(changed)
    assert fixed.cannot == [] and any(
        line.startswith("version 4 rebuilt from the database (the database's history") for line in fixed.done
    )
    assert held(changed, 4)[1:] == before[1:]


def test_rollback_to_a_version_repair_could_not_rebuild_says_so_instead_of_blaming_pruning(changed):
    with GalleryStore.open(changed) as store:
        store.rollback(3, operator="t")  # Lime's references come back: the history no longer tells version 4's
    for name in (REFS, ROWS):
        flip(version_dir(changed, 4) / name)
    fixed = repair(changed)
    assert any(
        line.startswith("version 4 cannot be rebuilt: its refs.json and rows.npy are damaged") for line in fixed.cannot
    )
    with GalleryStore.open(changed) as store, pytest.raises(GalleryError) as refused:
        store.rollback(4, operator="t")
    message = str(refused.value)
    assert "version 4 was damaged and set aside in" in message and "could not rebuild it" in message
    assert "no longer stored" not in message
