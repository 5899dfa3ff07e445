"""The gallery's user-facing error: the `reid` command prints it as one line and exits 2."""

from __future__ import annotations

import sqlite3
from itertools import islice
from pathlib import Path

from retail_reid.errors import ReidError

PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
LOOKED_AT = 200  # entries looked at to tell a folder of photos from an empty or unrelated one


class GalleryError(ReidError, ValueError):
    """A gallery that cannot be opened or changed as asked; the message names the culprit and the fix."""


def _has_photos(folder: Path) -> bool:
    try:
        entries = list(islice(folder.iterdir(), LOOKED_AT))
    except OSError:
        return False
    return any(p.suffix.lower() in PHOTO_SUFFIXES and p.is_file() for p in entries)


def not_a_gallery(root: Path, missing: str) -> GalleryError:
    """The error for a directory that lacks the gallery file `missing`. A folder of photos (the
    usual mix-up: `--gallery` given the photos a gallery is made from) is told how to build one."""
    if (root / "gallery.db").is_file() or (root / "versions").is_dir():
        return GalleryError(
            f"{root}: the gallery's {missing} is missing; `reid gallery repair {root}` rebuilds it from the stored "
            "versions"
        )
    if _has_photos(root):
        return GalleryError(
            f"{root}: is a folder of photos, not a gallery; make a gallery of them with "
            f"`reid gallery init G && reid gallery add G --sku SKU {root}/*`"
        )
    try:
        sku_folders = [p for p in islice(root.iterdir(), LOOKED_AT) if p.is_dir()]
    except OSError:
        sku_folders = []
    if any(_has_photos(p) for p in sku_folders):
        return GalleryError(
            f"{root}: is a folder of photos (one folder per SKU), not a gallery; build a gallery from it with "
            f"`reid gallery init G && reid gallery import-folder G {root}`"
        )
    return GalleryError(f"{root}: not a gallery (no {missing}); create one with `reid gallery init {root}`")


UNDECODABLE = "Could not decode to UTF-8"  # how SQLite's Python binding says a text column's bytes are garbage


def is_damage(e: BaseException) -> bool:
    """Whether SQLite's error is damage to gallery.db's content: corrupt pages, or a text column whose
    bytes no longer decode (not a locked, full or misused database)."""
    return type(e) is sqlite3.DatabaseError or (
        isinstance(e, sqlite3.OperationalError) and str(e).startswith(UNDECODABLE)
    )


def damaged_database(root: Path, e: BaseException) -> GalleryError:
    """The error for a gallery.db that SQLite finds damaged part way through a command (the header
    read, a page that did not), advising what `reid gallery check` advises."""
    reason = "text that no longer decodes as UTF-8" if str(e).startswith(UNDECODABLE) else e  # not the garbage itself
    return GalleryError(
        f"{root / 'gallery.db'}: damaged ({reason}); `reid gallery check {root}` lists what, `reid gallery repair "
        f"{root}` rebuilds what can be rebuilt (damaged files are moved aside, not deleted)"
    )
