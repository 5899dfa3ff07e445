"""Reading a gallery's database: the catalogue, the references and the version history, as the
operators' commands list them (`list`, `show`, `history`). Lanes read published versions instead
(Snapshot, Gallery), which never need the database."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from retail_reid.gallery import db
from retail_reid.gallery.binding import bound_embedder
from retail_reid.gallery.catalog import Product, check_sku
from retail_reid.gallery.errors import GalleryError, damaged_database, is_damage
from retail_reid.gallery.renderings import LaneProfile, profile_from_meta
from retail_reid.gallery.snapshot import read_current, stored_versions
from retail_reid.models.runtime import OnnxEmbedder

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is Python 3.11; only named in annotations


@dataclass(frozen=True)
class ProductRow:
    product: Product
    n_refs: int  # photos and lane references: what an operator sees
    n_renderings: int = 0  # lane-camera renderings of those photos (counted, never listed)


@dataclass(frozen=True)
class RefRow:
    id: int
    sku: str
    image: str
    source: str
    added_version: int
    origin: str = "photo"  # RefOrigin


@dataclass(frozen=True)
class VersionRow:
    version: int
    created: float
    operator: str
    action: str
    summary: str
    model_fingerprint: str
    n_refs: int
    n_skus: int
    current: bool
    stored: bool  # its directory is kept, so it can be rolled back to
    entries: tuple[tuple[str | None, str], ...]  # audit (sku, detail) lines


class GalleryReader:
    """A gallery's database opened for reading (`GalleryReader.open(dir, readonly=True)`)."""

    def __init__(self, root: Path, conn: sqlite3.Connection):
        self.root = root
        self.conn = conn

    @classmethod
    def open(cls, root: str | Path, readonly: bool = False) -> Self:
        root = Path(root)
        if not root.is_dir():
            raise GalleryError(f"{root}: no such gallery directory; create one with `reid gallery init {root}`")
        return cls(root, db.connect(root, readonly=readonly))

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: object, error: object, tb: object) -> None:
        """Close; a database found damaged by the command (not when opened: `db.connect` reads only
        its header) ends it with one line that advises repair, instead of SQLite's traceback."""
        self.close()
        if isinstance(error, BaseException) and is_damage(error):
            raise damaged_database(self.root, error) from None

    @property
    def meta(self) -> dict[str, str]:
        return db.get_meta(self.conn)

    def embedder(self, embedder: OnnxEmbedder | None = None, model: str | Path | None = None) -> OnnxEmbedder:
        meta = self.meta
        return bound_embedder(self.root, meta["model_fingerprint"], meta["model_path"], embedder, model)

    def lane_profile(self) -> LaneProfile:
        return profile_from_meta(self.meta, str(self.root / db.DB_NAME))

    def products(self) -> list[ProductRow]:
        photo = db.photos_only(self.conn)
        rows = self.conn.execute(
            "SELECT p.sku, p.name, p.category, p.price, "
            "(SELECT group_concat(code, char(10)) FROM (SELECT code FROM barcodes b WHERE b.sku = p.sku ORDER BY "
            "code)), "
            f"(SELECT COUNT(*) FROM refs r WHERE r.sku = p.sku AND r.removed_version IS NULL AND {photo}), "
            f"(SELECT COUNT(*) FROM refs r WHERE r.sku = p.sku AND r.removed_version IS NULL AND NOT ({photo})) "
            "FROM products p WHERE active ORDER BY p.sku"
        ).fetchall()
        return [
            ProductRow(Product(sku, name, tuple(codes.split("\n")) if codes else (), cat, price), n, renderings)
            for sku, name, cat, price, codes, n, renderings in rows
        ]

    def product(self, sku: str) -> tuple[ProductRow, list[RefRow]]:
        sku = check_sku(sku, "--sku")
        found = [p for p in self.products() if p.product.sku == sku]
        if not found:
            raise GalleryError(f"unknown SKU {sku!r} (see `reid gallery list {self.root}`)")
        refs = [
            RefRow(*row)
            for row in self.conn.execute(
                f"SELECT id, sku, image, source, added_version, {db.origin_column(self.conn)} FROM refs "
                f"WHERE sku = ? AND removed_version IS NULL AND {db.photos_only(self.conn)} ORDER BY id",
                (sku,),
            )
        ]
        return found[0], refs

    def lane_reference_counts(self) -> dict[str, int]:
        """How many current references of each SKU are lane references."""
        if db.origin_column(self.conn) != "origin":
            return {}
        return dict(
            self.conn.execute(
                "SELECT sku, COUNT(*) FROM refs WHERE removed_version IS NULL AND origin = 'lane' GROUP BY sku"
            ).fetchall()
        )

    def reference_vectors(self) -> dict[str, np.ndarray]:
        """Each active product's current photos and lane references (not renderings) as rows of
        unit vectors under the gallery's model: what the consensus of lane candidates weighs."""
        found: dict[str, list[np.ndarray]] = {}
        rows = self.conn.execute(
            "SELECT r.sku, r.embedding FROM refs r JOIN products p ON p.sku = r.sku WHERE r.removed_version IS NULL "
            f"AND p.active = 1 AND {db.photos_only(self.conn)} ORDER BY r.id"
        )
        for sku, blob in rows:
            found.setdefault(sku, []).append(np.frombuffer(blob, dtype=np.float32))
        return {sku: np.stack(vs) for sku, vs in found.items()}

    def reference_hashes(self) -> set[str]:
        """The sha256 of every current reference photo (a crop already added is not offered again)."""
        return {h for (h,) in self.conn.execute("SELECT sha256 FROM refs WHERE removed_version IS NULL")}

    def photo_ids(self) -> set[int]:
        """The ids of the current photos and lane references (not renderings)."""
        return {
            i
            for (i,) in self.conn.execute(
                f"SELECT id FROM refs WHERE removed_version IS NULL AND {db.photos_only(self.conn)}"
            )
        }

    def history(self) -> list[VersionRow]:
        current, stored = read_current(self.root), set(stored_versions(self.root))
        entries: dict[int, list[tuple[str | None, str]]] = {}
        for version, sku, detail in self.conn.execute(
            "SELECT version, sku, detail FROM audit WHERE sku IS NOT NULL ORDER BY id"
        ):
            entries.setdefault(version, []).append((sku, detail))
        return [
            VersionRow(
                version,
                created,
                operator,
                action,
                summary,
                model_fingerprint,
                n_refs,
                n_skus,
                current=version == current,
                stored=version in stored,
                entries=tuple(entries.get(version, ())),
            )
            for version, created, operator, action, summary, model_fingerprint, n_refs, n_skus in self.conn.execute(
                "SELECT * FROM versions ORDER BY version"
            )
        ]
