"""Directories that are not galleries (gallery/errors.py): each refused in one line that says what
the directory is and what to do, whichever command or reader meets it."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing

import pytest
from gallery_fixtures import TRAIN, VAL, flip, run_reid

from retail_reid.cli import main
from retail_reid.gallery import Gallery, GalleryError
from retail_reid.gallery.check import check_path
from retail_reid.gallery.snapshot import read_current, stored_versions
from retail_reid.gallery.store import GalleryStore


def test_a_directory_that_is_not_a_gallery_is_refused(tmp_path):
    with pytest.raises(GalleryError, match="not a gallery"):
        GalleryStore.open(tmp_path)
    (tmp_path / "gallery.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(GalleryError, match="not a gallery database"):
        GalleryStore.open(tmp_path)


def test_not_a_gallery_is_refused(tmp_path, embedder):
    with pytest.raises(GalleryError, match="not a gallery"):
        Gallery.open(tmp_path, embedder=embedder)
    with pytest.raises(GalleryError, match="no such gallery"):
        Gallery.open(tmp_path / "missing", embedder=embedder)
    (tmp_path / "CURRENT").write_text("garbage")
    with pytest.raises(GalleryError, match="expected a version number"):
        Gallery.open(tmp_path, embedder=embedder)


def test_a_folder_of_sku_folders_is_told_how_to_become_a_gallery(embedder):
    """The usual mix-up: `--gallery` (or a gallery command) given the photos a gallery is made from."""
    expect = (
        f"{TRAIN}: is a folder of photos (one folder per SKU), not a gallery; build a gallery from it with "
        f"`reid gallery init G && reid gallery import-folder G {TRAIN}`"
    )
    with pytest.raises(GalleryError) as opened:
        Gallery.open(TRAIN, embedder=embedder)  # what `reid replay --gallery` and `reid edge` do
    assert str(opened.value) == expect
    listed = run_reid("gallery", "list", TRAIN)
    assert listed.returncode == 2 and listed.stderr.strip() == f"reid gallery: error: {expect}"


def test_a_folder_of_photos_is_told_how_to_add_them(embedder):
    kiwi = TRAIN / "Kiwi"
    with pytest.raises(GalleryError) as opened:
        Gallery.open(kiwi, embedder=embedder)
    assert str(opened.value) == (
        f"{kiwi}: is a folder of photos, not a gallery; make a gallery of them with "
        f"`reid gallery init G && reid gallery add G --sku SKU {kiwi}/*`"
    )


def test_a_database_damaged_past_its_header_is_one_line_advising_repair(gallery_dir, capsys):
    """`check` found such a database damaged, but list, show and add met SQLite's "database disk
    image is malformed" part way through and ended in a traceback; nothing stored may change."""
    db = gallery_dir / "gallery.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    flip(db, n=3000, at=0.3)  # the header and the meta table still read: `db.connect` opens it
    before = db.read_bytes(), read_current(gallery_dir), stored_versions(gallery_dir)
    photos = [str(p) for p in sorted((VAL / "Kiwi").glob("*.jpg"))[:2]]
    for args in (["list"], ["show", "--sku", "Kiwi"], ["add", "--sku", "Kiwi", str(gallery_dir), *photos]):
        command = args if args[0] == "add" else [*args, str(gallery_dir)]
        assert main(["gallery", *command]) == 2, args
        err = capsys.readouterr().err.splitlines()[-1]
        # SQLite meets the damage as a malformed page or as a text column that no longer decodes,
        # depending on which page the command reads first: both are the same one line
        advice = f"`reid gallery check {gallery_dir}` lists what, `reid gallery repair {gallery_dir}` rebuilds what can"
        assert re.search(
            f"{re.escape(str(db))}: damaged \\((database disk image is malformed|text that no longer decodes as "
            f"UTF-8)\\); {re.escape(advice)} be rebuilt \\(damaged files are moved aside, not deleted\\)$",
            err,
        ), (args, err)
    assert (db.read_bytes(), read_current(gallery_dir), stored_versions(gallery_dir)) == before
    assert any("gallery.db" in line for line in check_path(gallery_dir).damage.damaged)
