"""Operators' changes (`reid gallery init | add | import-folder | remove | list | show | history |
rollback | rebuild`) on real photos, and bad input refused with the gallery left as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from gallery_fixtures import SKUS, TRAIN, VAL, run_reid
from retail_reid.gallery import Gallery, GalleryError
from retail_reid.gallery.snapshot import read_current, stored_versions
from retail_reid.gallery.store import GalleryStore
from retail_reid.cli import main

from retail_reid.images import read_image


def state(root: Path) -> tuple:
    """Everything a failed change must leave as it was: the published version, the version
    directories, the stored images, and the database's contents."""
    with GalleryStore.open(root, readonly=True) as store:
        rows = store.conn.execute("SELECT id, sku, sha256, removed_version FROM refs ORDER BY id").fetchall()
        products = store.conn.execute("SELECT * FROM products ORDER BY sku").fetchall()
        codes = store.conn.execute("SELECT * FROM barcodes ORDER BY code").fetchall()
        versions = store.conn.execute("SELECT version FROM versions").fetchall()
    images = sorted(str(p.relative_to(root)) for p in (root / "images").rglob("*") if p.is_file())
    return read_current(root), stored_versions(root), images, rows, products, codes, versions


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


@pytest.mark.parametrize(
    "sku, message",
    [
        ("", "empty or only whitespace"),
        ("   ", "empty or only whitespace"),
        (" Kiwi", "starts or ends with whitespace"),
        ("Ki\x00wi", "control"),
        ("x" * 101, "more than 100"),
    ],
)
def test_bad_sku_ids_are_refused(gallery_dir, embedder, sku, message):
    before = state(gallery_dir)
    with GalleryStore.open(gallery_dir) as store, pytest.raises(GalleryError, match=message):
        store.add(sku, sorted((VAL / "Kiwi").glob("*.jpg"))[:1], embedder=embedder)
    assert state(gallery_dir) == before


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("barcodes", ["4006381333932"], "wrong check digit"),
        ("barcodes", ["12ab"], "digits only"),
        ("barcodes", ["123456"], "has 6 digits"),
        ("name", "  ", "non-empty"),
        ("price", -1.0, "non-negative"),
        ("price", float("nan"), "non-negative"),
    ],
)
def test_bad_catalogue_fields_are_refused(gallery_dir, embedder, field, value, message):
    before = state(gallery_dir)
    with GalleryStore.open(gallery_dir) as store, pytest.raises(GalleryError, match=message):
        store.add("Kiwi", [], embedder=embedder, **{field: value})
    assert state(gallery_dir) == before


def test_a_barcode_belongs_to_one_product(gallery_dir, embedder):
    with GalleryStore.open(gallery_dir) as store:
        store.add("Kiwi", [], barcodes=["4011"], embedder=embedder)
        before = state(gallery_dir)
        with pytest.raises(GalleryError, match="already belongs to SKU 'Kiwi'"):
            store.add("Lemon", [], barcodes=["4011"], embedder=embedder)
    assert state(gallery_dir) == before


def test_import_folder_refuses_bad_entries_unless_skip_bad(gallery_dir, embedder, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(VAL / "Kiwi", folder / "Kiwi-Gold")
    (folder / "Kiwi-Gold" / "broken.jpg").write_bytes(b"")
    (folder / "loose-file.jpg").write_bytes(
        (VAL / "Kiwi").joinpath(sorted(p.name for p in (VAL / "Kiwi").iterdir())[0]).read_bytes()
    )
    before = state(gallery_dir)
    with GalleryStore.open(gallery_dir) as store:
        with pytest.raises(GalleryError, match="loose-file.jpg: not a SKU folder"):
            store.import_folder(folder, embedder=embedder)
        (folder / "loose-file.jpg").unlink()
        with pytest.raises(GalleryError, match="broken.jpg: file is empty"):
            store.import_folder(folder, embedder=embedder)
        assert state(gallery_dir) == before
        result = store.import_folder(folder, skip_bad=True, embedder=embedder)
    assert result.version == 3 and len(result.skipped) == 1
    with pytest.raises(GalleryError, match="no such folder"):
        GalleryStore.open(gallery_dir).import_folder(tmp_path / "nope", embedder=embedder)


def test_a_directory_that_is_not_a_gallery_is_refused(tmp_path):
    with pytest.raises(GalleryError, match="not a gallery"):
        GalleryStore.open(tmp_path)
    (tmp_path / "gallery.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(GalleryError, match="not a gallery database"):
        GalleryStore.open(tmp_path)


def test_cli_init_import_add_list_show(tmp_path, capsys):
    root = tmp_path / "g"
    assert main(["gallery", "init", str(root), "--operator", "alice"]) == 0
    assert main(["gallery", "import-folder", str(root), str(VAL), "--operator", "bob"]) == 0
    out = capsys.readouterr()
    assert "version 2: import-folder" in out.out and "embed" in out.err  # the progress bar
    photo = sorted((TRAIN / "Kiwi").glob("*.jpg"))[0]
    assert (
        main(["gallery", "add", str(root), "--sku", "Kiwi", "--name", "Kiwi grün", "--barcode", "4011", str(photo)])
        == 0
    )
    assert main(["gallery", "list", str(root), "--json"]) == 0
    listed = {p["sku"]: p for p in json.loads(capsys.readouterr().out.split("\n", 1)[1])}
    assert set(listed) == set(SKUS) and listed["Kiwi"]["name"] == "Kiwi grün" and listed["Kiwi"]["barcodes"] == ["4011"]
    assert listed["Kiwi"]["refs"] == len(list((VAL / "Kiwi").glob("*.jpg"))) + 1
    assert main(["gallery", "show", str(root), "--sku", "Kiwi"]) == 0
    assert str(photo) in capsys.readouterr().out
    assert main(["gallery", "history", str(root), "-v"]) == 0
    out = capsys.readouterr().out
    assert "alice" in out and "bob" in out and "Kiwi: updated product 'Kiwi': name='Kiwi grün'; barcodes +4011" in out


def test_cli_errors_are_one_line_and_exit_2(gallery_dir, tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    result = run_reid("gallery", "add", gallery_dir, "--sku", "Kiwi", empty)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"reid gallery: error: 1 of 1 photos cannot be added; nothing changed (--skip-bad adds the rest): {empty}: file is empty (0 bytes)"
    )
    result = run_reid("gallery", "show", tmp_path, "--sku", "Kiwi")
    assert result.returncode == 2 and "not a gallery" in result.stderr and "Traceback" not in result.stderr


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
        with pytest.raises(GalleryError, match="no longer stored .* stored versions: 6, 7, 8, 9, 10"):
            store.rollback(2)


def test_rebuild_re_embeds_with_the_new_model_and_readers_must_restart(gallery_dir, embedder, variant_model, capsys):
    queries = embedder.embed([read_image(p) for p in sorted(VAL.glob("*/*.jpg"))[::5]])
    old = Gallery.open(gallery_dir, embedder=embedder)
    before = old.match(queries, k=3)
    assert main(["gallery", "rebuild", str(gallery_dir), "--model", str(variant_model), "--operator", "ml"]) == 0
    assert "version 3: re-embedded 96 references with model" in capsys.readouterr().out
    with pytest.raises(GalleryError, match="restart it with the new model .*still on version 2"):
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
