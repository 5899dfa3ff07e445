"""Operators' changes (`reid gallery init | add | import-folder | remove | list | show | history |
rollback | rebuild`) on real photos, and bad input refused with the gallery left as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from gallery_fixtures import SKUS, TRAIN, VAL, state

from retail_reid.cli import main
from retail_reid.gallery import Gallery, GalleryError
from retail_reid.gallery.snapshot import read_current, version_dir
from retail_reid.gallery.store import GalleryStore
from retail_reid.images import read_image


def test_init_creates_an_empty_gallery_bound_to_the_model(tmp_path, embedder):
    root = tmp_path / "g"
    result = GalleryStore.init(root, operator="alice")
    assert result.version == 1 and read_current(root) == 1
    assert {p.name for p in root.iterdir()} >= {"gallery.db", "lock", "images", "versions", "CURRENT"}
    g = Gallery.open(root, embedder=embedder)
    assert g.version == 1 and g.skus() == [] and g.match(np.eye(1, embedder.dim, dtype=np.float32)) == [[]]
    with GalleryStore.open(root, readonly=True) as store:
        assert store.meta["model_fingerprint"] == embedder.fingerprint
        assert store.history()[0].operator == "alice"


def test_init_refuses_an_existing_gallery_or_a_non_empty_directory(tmp_path, built_gallery):
    with pytest.raises(GalleryError, match="already a gallery"):
        GalleryStore.init(built_gallery)
    (tmp_path / "stuff.txt").write_text("x")
    with pytest.raises(GalleryError, match="not an empty directory"):
        GalleryStore.init(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["stuff.txt"]


def test_import_folder_adds_every_sku(built_gallery):
    with GalleryStore.open(built_gallery, readonly=True) as store:
        rows = store.products()
        history = store.history()
    assert [r.product.sku for r in rows] == SKUS and all(r.n_refs == 8 for r in rows)
    assert [h.action for h in history] == ["init", "import-folder"] and history[-1].current
    assert sum(1 for _, d in history[-1].entries if d.startswith("added reference")) == 96


def test_add_creates_a_product_with_a_non_ascii_name_and_barcodes(gallery_dir, embedder):
    photos = sorted((VAL / "Avocado").glob("*.jpg"))[:2]
    with GalleryStore.open(gallery_dir) as store:
        result = store.add(
            "Müsli-Crunchy",
            photos,
            name="Müsli Crunchy 500 g — Bio",
            barcodes=["4006381333931"],
            category="Frühstück",
            price=3.49,
            operator="zoë",
            embedder=embedder,
        )
        row, refs = store.product("Müsli-Crunchy")
    assert result.version == 3 and len(refs) == 2
    assert row.product.name == "Müsli Crunchy 500 g — Bio" and row.product.barcodes == ("4006381333931",)
    assert row.product.category == "Frühstück" and row.product.price == 3.49
    g = Gallery.open(gallery_dir, embedder=embedder)
    assert g.sku_for_barcode("4006381333931") == "Müsli-Crunchy" and g.display_name("Müsli-Crunchy").startswith("Müsli")


def test_the_same_photo_is_stored_once_and_never_added_twice(gallery_dir, embedder):
    kiwi = sorted((TRAIN / "Kiwi").glob("*.jpg"))[0]
    new = sorted((VAL / "Kiwi").glob("*.jpg"))[0]
    before = state(gallery_dir)
    with GalleryStore.open(gallery_dir) as store:
        with pytest.raises(GalleryError, match="already a reference of SKU 'Kiwi'"):
            store.add("Lemon", [kiwi], embedder=embedder)
        with pytest.raises(GalleryError, match="given twice"):
            store.add("Kiwi", [new, new], embedder=embedder)
        assert state(gallery_dir) == before
        result = store.add("Kiwi", [new, kiwi], skip_bad=True, embedder=embedder)
    assert result.version == 3 and len(result.skipped) == 1 and "already a reference" in result.skipped[0]


def make_bad_files(tmp_path: Path) -> dict[str, Path]:
    good = sorted((VAL / "Lemon").glob("*.jpg"))[0]
    files = {
        "text": tmp_path / "notes.jpg",
        "empty": tmp_path / "empty.jpg",
        "truncated": tmp_path / "cut.jpg",
        "garbage": tmp_path / "garbage.png",
        "missing": tmp_path / "missing.jpg",
        "directory": tmp_path / "adir.jpg",
    }
    files["text"].write_text("this is not an image\n")
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(good.read_bytes()[:2000])
    files["garbage"].write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4 + b"IEND")
    files["directory"].mkdir()
    return files


def test_bad_photos_are_refused_by_name_and_nothing_changes(gallery_dir, embedder, tmp_path):
    bad = make_bad_files(tmp_path)
    good = sorted((VAL / "Lemon").glob("*.jpg"))[:2]
    before = state(gallery_dir)
    with GalleryStore.open(gallery_dir) as store:
        with pytest.raises(GalleryError) as err:
            store.add("Lemon", [*good, *bad.values()], embedder=embedder)
        assert state(gallery_dir) == before
        message = str(err.value)
        assert "\n" not in message and "6 of 8 photos cannot be added; nothing changed" in message
        for path in bad.values():
            assert str(path) in message
        assert "empty (0 bytes)" in message and "truncated" in message and "image not found" in message
        result = store.add("Lemon", [*good, *bad.values()], skip_bad=True, embedder=embedder)
    assert result.version == 3 and len(result.skipped) == 6
    with GalleryStore.open(gallery_dir, readonly=True) as store:
        assert store.product("Lemon")[0].n_refs == 10


def test_import_folder_refuses_bad_entries_unless_skip_bad(gallery_dir, embedder, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(VAL / "Kiwi", folder / "Kiwi-Gold")
    (folder / "Kiwi-Gold" / "broken.jpg").write_bytes(b"")
    (folder / "loose-file.jpg").write_bytes(
        (VAL / "Kiwi").joinpath(sorted(p.name for p in (VAL / "Kiwi").iterdir())[0]).read_bytes()
    )
    before = state(gallery_dir)
    with GalleryStore.open(gallery_dir) as store:
        with pytest.raises(GalleryError, match=r"loose-file.jpg: not a SKU folder"):
            store.import_folder(folder, embedder=embedder)
        (folder / "loose-file.jpg").unlink()
        with pytest.raises(GalleryError, match=r"broken.jpg: file is empty"):
            store.import_folder(folder, embedder=embedder)
        assert state(gallery_dir) == before
        result = store.import_folder(folder, skip_bad=True, embedder=embedder)
    assert result.version == 3 and len(result.skipped) == 1
    with pytest.raises(GalleryError, match="no such folder"):
        GalleryStore.open(gallery_dir).import_folder(tmp_path / "nope", embedder=embedder)


def test_remove_one_reference_and_a_product(gallery_dir, embedder, capsys):
    with GalleryStore.open(gallery_dir, readonly=True) as store:
        ref = store.product("Kiwi")[1][0]
    assert main(["gallery", "remove", str(gallery_dir), "--ref", str(ref.id), "--operator", "ann"]) == 0
    assert main(["gallery", "remove", str(gallery_dir), "--sku", "Lemon"]) == 0
    assert main(["gallery", "remove", str(gallery_dir), "--ref", str(ref.id)]) == 2
    assert main(["gallery", "remove", str(gallery_dir), "--sku", "Lemon"]) == 2
    err = capsys.readouterr().err
    assert f"no reference {ref.id} in the gallery" in err and "unknown SKU 'Lemon'" in err
    g = Gallery.open(gallery_dir, embedder=embedder)
    assert g.version == 4 and not g.has_sku("Lemon") and g.has_sku("Kiwi")
    with GalleryStore.open(gallery_dir, readonly=True) as store:
        assert [r.id for r in store.product("Kiwi")[1]] == [r.id for r in store.product("Kiwi")[1] if r.id != ref.id]
        assert store.product("Kiwi")[0].n_refs == 7
        assert store.history()[2].operator == "ann" and f"removed reference {ref.id}" in store.history()[2].summary


def test_rollback_restores_an_older_version_as_a_new_one(gallery_dir, embedder):
    with GalleryStore.open(gallery_dir) as store:
        store.remove_sku("Kiwi", operator="t")
        store.add("Lemon", [], name="Lemon Primofiori", barcodes=["4053"], embedder=embedder)
        with pytest.raises(GalleryError, match="no version 9"):
            store.rollback(9)
        with pytest.raises(GalleryError, match="is the current version already"):
            store.rollback(4)
        result = store.rollback(2, operator="undo")
    assert result.version == 5 and "8 references in, 0 out; 1 SKU in, 0 out" in result.summary
    g = Gallery.open(gallery_dir, embedder=embedder)
    assert g.has_sku("Kiwi") and g.display_name("Lemon") == "Lemon" and g.sku_for_barcode("4053") is None
    with GalleryStore.open(gallery_dir) as store:
        for sku in ["Banana", "Lime", "Kiwi", "Avocado", "Pink-Lady"]:  # versions 6-10; 5 are kept
            store.remove_sku(sku)
        with pytest.raises(GalleryError, match=r"no longer stored .* stored versions: 6, 7, 8, 9, 10"):
            store.rollback(2)


@pytest.mark.parametrize("lost", ["index.faiss", "manifest.json"])
def test_rolling_back_to_a_version_with_a_lost_file_says_it_is_damaged_not_pruned(gallery_dir, lost):
    """Issue 13, defect 9: the message said "version 2 is no longer stored ... stored versions: 1, 2, 3"."""
    with GalleryStore.open(gallery_dir) as store:
        store.remove_sku("Kiwi", operator="t")
        (version_dir(gallery_dir, 2) / lost).unlink()
        with pytest.raises(GalleryError) as refused:
            store.rollback(2, operator="t")
    message = str(refused.value)
    assert "no longer stored" not in message
    assert message.startswith(
        f"cannot roll back to version 2: {version_dir(gallery_dir, 2) / lost}: missing; version 2"
    )
    assert f"`reid gallery check {gallery_dir}` lists what is damaged" in message


def test_rebuild_re_embeds_with_the_new_model_and_readers_must_restart(gallery_dir, embedder, variant_model, capsys):
    queries = embedder.embed([read_image(p) for p in sorted(VAL.glob("*/*.jpg"))[::5]])
    old = Gallery.open(gallery_dir, embedder=embedder)
    before = old.match(queries, k=3)
    assert main(["gallery", "rebuild", str(gallery_dir), "--model", str(variant_model), "--operator", "ml"]) == 0
    assert "version 3: re-embedded 96 references with model" in capsys.readouterr().out
    with pytest.raises(GalleryError, match=r"restart it with the new model .*still on version 2"):
        old.refresh()
    assert old.version == 2 and old.match(queries, k=3) == before
    new = Gallery.open(gallery_dir, model=variant_model)
    assert new.version == 3 and new.embedder.fingerprint != embedder.fingerprint
    after = new.match(queries, k=3)  # the variant is the same network: the same answers
    assert [[m.sku for m in r] for r in after] == [[m.sku for m in r] for r in before]
    assert np.allclose([[m.score for m in r] for r in after], [[m.score for m in r] for r in before], atol=1e-5)
    with GalleryStore.open(gallery_dir) as store:  # rolling back past the rebuild rebinds the old model
        store.rollback(2)
    assert Gallery.open(gallery_dir, embedder=embedder).version == 4
