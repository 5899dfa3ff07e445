"""The operators' changes of a gallery (`reid gallery init/add/import-folder/remove/rollback/rebuild`,
and the import of a bundle), each made a new version by the change machinery (gallery/writer.py)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from retail_reid.durable import fsync_dir, remove_tree, replace_atomically
from retail_reid.gallery import db
from retail_reid.gallery.catalog import Product, check_barcode, check_price, check_sku, check_text
from retail_reid.gallery.errors import GalleryError
from retail_reid.gallery.image_store import IMAGES_DIR, sha256_bytes, store_image
from retail_reid.gallery.index import reference_vectors
from retail_reid.gallery.integrity import DAMAGED_DIR
from retail_reid.gallery.lane_suggestions import lane_prefix
from retail_reid.gallery.photos import Photo, RefOrigin, embed_photos, read_bytes
from retail_reid.gallery.renderings import META_KEY, OFF, LaneProfile, embed_renderings, profile_json
from retail_reid.gallery.snapshot import CURRENT, VERSIONS_DIR, Snapshot, read_current, stored_versions, version_dir
from retail_reid.gallery.writer import LOCK, AuditEntries, ChangeResult, VersionWriter, failure, operator_name
from retail_reid.models.runtime import OnnxEmbedder

__all__ = ["DEFAULT_KEEP", "ChangeResult", "GalleryStore", "ProductUpdate"]

DEFAULT_KEEP = 5
MAX_LISTED = 10  # errors listed in one message; the rest are counted


@dataclass(frozen=True)
class ProductUpdate:
    """Catalogue fields an `add` sets; None leaves a field as it is (new products get name = SKU)."""

    name: str | None = None
    barcodes: tuple[str, ...] = ()
    category: str | None = None
    price: float | None = None


def _listing(problems: Sequence[str]) -> str:
    """The first problems on the same line as the message (the CLI prints errors as one line)."""
    more = f"; ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return " " + "; ".join(problems[:MAX_LISTED]) + more


class GalleryStore(VersionWriter):
    """Open with `GalleryStore.open(dir)` (or create with `GalleryStore.init`); changes return a ChangeResult."""

    @classmethod
    def init(
        cls,
        root: str | Path,
        model: str | Path | None = None,
        keep: int = DEFAULT_KEEP,
        operator: str | None = None,
        lane_camera: LaneProfile | None = None,
    ) -> ChangeResult:
        """Create an empty gallery (version 1) bound to `model` (default: the shipped model), rendering
        its photos through `lane_camera` (default: off, no renderings; see docs/gallery.md for why).

        It is built in a hidden sibling directory and renamed into place, so DIR is a whole gallery or absent.
        """
        root = Path(root)
        operator = operator_name(operator)
        if keep < 1:
            raise GalleryError(f"--keep must be at least 1, got {keep}")
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            what = "is already a gallery" if (root / db.DB_NAME).exists() else "exists and is not an empty directory"
            raise GalleryError(f"{root}: {what}")
        embedder = OnnxEmbedder(model)
        embedder.calibration  # noqa: B018 - refuse an uncalibrated model now, not at the first match
        tmp = root.parent / f".{root.name}.init-{os.getpid()}"
        try:
            root.parent.mkdir(parents=True, exist_ok=True)
            remove_tree(tmp)
            tmp.mkdir()
            db.create(
                tmp / db.DB_NAME,
                {
                    "model_fingerprint": embedder.fingerprint,
                    "model_path": str(embedder.path.resolve()),
                    "embedding_dim": str(embedder.dim),
                    "keep_versions": str(keep),
                    "created": str(time.time()),
                    META_KEY: profile_json(lane_camera or OFF),
                },
            )
            (tmp / LOCK).touch()
            (tmp / VERSIONS_DIR).mkdir()
            (tmp / IMAGES_DIR).mkdir()
            replace_atomically(tmp / CURRENT, b"0\n", "switch")
            with cls.open(tmp) as store:
                result = store._change(
                    "init",
                    operator,
                    lambda v: (f"created, bound to model {embedder.fingerprint[:12]} ({embedder.path})", []),
                )
            os.replace(tmp, root)
        except BaseException as e:
            with contextlib.suppress(OSError):
                remove_tree(tmp)
            if isinstance(e, (OSError, sqlite3.Error)):
                raise GalleryError(f"{root}: cannot create the gallery ({failure(e)})") from None
            raise
        fsync_dir(root.parent)
        return result

    # ---- catalogue and references, inside a change ----------------------------------------------

    def _active_product(self, sku: str) -> bool:
        return self.conn.execute("SELECT 1 FROM products WHERE sku = ? AND active", (sku,)).fetchone() is not None

    def _set_product(self, sku: str, update: ProductUpdate) -> str | None:
        """Create or update a product; returns an audit line, or None if nothing changed."""
        row = self.conn.execute("SELECT name, category, price, active FROM products WHERE sku = ?", (sku,)).fetchone()
        for code in update.barcodes:
            owner = self.conn.execute("SELECT sku FROM barcodes WHERE code = ?", (code,)).fetchone()
            if owner and owner[0] != sku:
                raise GalleryError(f"barcode {code} already belongs to SKU {owner[0]!r}; remove it there first")
        line: str | None
        if row is None or not row[3]:
            name = update.name or (row[0] if row else sku)
            self.conn.execute(
                "INSERT INTO products (sku, name, category, price, active) VALUES (?, ?, ?, ?, 1) "
                "ON CONFLICT(sku) DO UPDATE SET name = excluded.name, category = excluded.category, price = "
                "excluded.price, active = 1",
                (sku, name, update.category, update.price),
            )
            line = f"new product {sku!r} ({name})"
        else:
            fields = {
                k: v
                for k, v in (("name", update.name), ("category", update.category), ("price", update.price))
                if v is not None
            }
            if fields:
                self.conn.execute(
                    f"UPDATE products SET {', '.join(f'{k} = ?' for k in fields)} WHERE sku = ?",
                    (*fields.values(), sku),
                )
            line = f"updated product {sku!r}: {', '.join(f'{k}={v!r}' for k, v in fields.items())}" if fields else None
        new_codes = [
            c
            for c in update.barcodes
            if not self.conn.execute("SELECT 1 FROM barcodes WHERE code = ?", (c,)).fetchone()
        ]
        self.conn.executemany("INSERT INTO barcodes (code, sku) VALUES (?, ?)", [(c, sku) for c in new_codes])
        if new_codes:
            line = f"{line or f'updated product {sku!r}'}; barcodes +{', '.join(new_codes)}"
        return line

    def _insert_refs(
        self, photos: Sequence[Photo], vectors: np.ndarray, version: int, renderings: np.ndarray
    ) -> AuditEntries:
        """Store the photos and insert them as references with their vectors, and with their
        lane-camera renderings (`renderings[i]`: the views' vectors of photo i; none for lane references)."""
        entries: AuditEntries = []
        for photo, vec, views in zip(photos, vectors, renderings, strict=True):
            data = read_bytes(photo.path)
            if sha256_bytes(data) != photo.sha256:
                raise GalleryError(f"{photo.path}: the file changed while it was being added; add it again")
            if not (self.root / photo.relpath).is_file():
                self._note_pending(photo.relpath)
            if store_image(self.root, photo.relpath, data):
                self._created.append(self.root / photo.relpath)
            cur = self.conn.execute(
                "INSERT INTO refs (sku, image, sha256, phash, source, origin, added_version, embedding) VALUES (?, ?, "
                "?, ?, ?, ?, ?, ?)",
                (
                    photo.sku,
                    photo.relpath,
                    photo.sha256,
                    photo.phash,
                    photo.source,
                    photo.origin.value,
                    version,
                    np.asarray(vec, np.float32).tobytes(),
                ),
            )
            assert cur.lastrowid is not None  # an INSERT always sets it
            what = "lane reference" if photo.origin is RefOrigin.LANE else "reference"
            rendered = self._insert_renderings(cur.lastrowid, views, version) if photo.origin is RefOrigin.PHOTO else 0
            with_views = f" (+{_count(rendered, 'lane-camera rendering')})" if rendered else ""
            entries.append((photo.sku, f"added {what} {cur.lastrowid}{with_views}: {photo.source} -> {photo.relpath}"))
        return entries

    def _insert_renderings(self, photo_id: int, views: np.ndarray, version: int) -> int:
        """Insert the lane-camera renderings of reference `photo_id` (one vector per view); returns how many."""
        self.conn.executemany(
            "INSERT INTO refs (sku, image, sha256, phash, source, origin, rendering_of, view, added_version, "
            "embedding) SELECT sku, image, sha256, phash, source, ?, id, ?, ?, ? FROM refs WHERE id = ?",
            [
                (RefOrigin.RENDERING.value, view, version, np.asarray(vec, np.float32).tobytes(), photo_id)
                for view, vec in enumerate(views)
            ],
        )
        return len(views)

    def _render_stored(
        self, ids: set[int] | None, profile: LaneProfile, embedder: OnnxEmbedder, progress: bool = False
    ) -> dict[int, np.ndarray]:
        """The renderings' vectors of the current catalogue photos (those in `ids`, or all), by photo id."""
        rows = self.conn.execute(
            "SELECT id, sha256, image FROM refs WHERE removed_version IS NULL AND rendering_of IS NULL AND origin = ? "
            "ORDER BY id",
            (RefOrigin.PHOTO.value,),
        ).fetchall()
        rows = [r for r in rows if ids is None or r[0] in ids]
        views = embed_renderings([(sha, self.root / image) for _, sha, image in rows], profile, embedder, progress)
        return {r[0]: v for r, v in zip(rows, views, strict=True)}

    def _rerender(
        self, version: int, rendered: dict[int, np.ndarray], profile: LaneProfile, embedder: OnnxEmbedder
    ) -> tuple[int, int]:
        """Replace every current rendering with `rendered` (photo id -> views' vectors, made under
        `profile` by `embedder`), rendering photos added meanwhile here; returns (renderings, photos)."""
        self.conn.execute(
            "UPDATE refs SET removed_version = ? WHERE removed_version IS NULL AND rendering_of IS NOT NULL", (version,)
        )
        photos = {
            i
            for (i,) in self.conn.execute(
                "SELECT id FROM refs WHERE removed_version IS NULL AND rendering_of IS NULL AND origin = ?",
                (RefOrigin.PHOTO.value,),
            )
        }
        rendered.update(self._render_stored(photos - rendered.keys(), profile, embedder))
        n = sum(self._insert_renderings(i, rendered[i], version) for i in sorted(photos))
        db.set_meta(self.conn, **{META_KEY: profile_json(profile)})
        return n, len(photos)

    def _known_photos(self, photos: Sequence[Photo]) -> dict[str, str]:
        """sha256 -> SKU for the given photos that are already references."""
        found: dict[str, str] = {}
        for photo in photos:
            row = self.conn.execute(
                "SELECT sku FROM refs WHERE sha256 = ? AND removed_version IS NULL AND rendering_of IS NULL",
                (photo.sha256,),
            ).fetchone()
            if row:
                found[photo.sha256] = row[0]
        return found

    # ---- operators' changes ----------------------------------------------------------------------

    def add_photos(
        self,
        items: Sequence[tuple[str, Path]],
        updates: dict[str, ProductUpdate],
        *,
        action: str,
        operator: str | None = None,
        skip_bad: bool = False,
        progress: bool = False,
        model: str | Path | None = None,
        embedder: OnnxEmbedder | None = None,
        origin: RefOrigin = RefOrigin.PHOTO,
        notes: Sequence[tuple[str | None, str]] = (),
        sources: Mapping[Path, str] | None = None,
    ) -> ChangeResult:
        """Add (sku, photo path) references and create or update the products in `updates` as one version.

        Bad photos, and photos already in the gallery, refuse the whole change (nothing is written)
        unless `skip_bad`, which leaves them out and reports them in `skipped`. `origin` marks them
        in the catalogue (lane references: crops the lanes kept, docs/console.md). Catalogue photos
        also get the gallery's lane-camera renderings (gallery/renderings.py). `notes` are (SKU,
        text) lines added to the change's audit entries (why an operator made it, say). `sources`
        replaces what is recorded as a path's source (a lane reference's lane and time).
        """
        operator = operator_name(operator)
        if not os.access(self.root, os.W_OK):
            raise GalleryError(f"{self.root}: cannot change the gallery: the directory is read-only for this user")
        embedder = self.embedder(embedder, model)
        photos, vectors, errors = embed_photos(items, embedder, progress=progress)
        photos = [replace(p, origin=origin, source=(sources or {}).get(p.path, p.source)) for p in photos]
        profile = self.lane_profile() if origin is RefOrigin.PHOTO else OFF

        def render(profile: LaneProfile) -> np.ndarray:
            return embed_renderings([(p.sha256, p.path) for p in photos], profile, embedder, progress)

        renderings = render(profile)
        if errors and not skip_bad:
            raise GalleryError(
                f"{len(errors)} of {len(items)} photos cannot be added; nothing changed (--skip-bad adds the "
                f"rest):{_listing(errors)}"
            )
        skipped = list(errors)

        def apply(version: int) -> tuple[str, AuditEntries]:
            nonlocal renderings
            if origin is RefOrigin.PHOTO and (now := self.lane_profile()) != profile:  # changed meanwhile
                renderings = render(now)
            known = self._known_photos(photos)
            dupes = [
                f"{p.source}: this photo is already a reference of SKU {known[p.sha256]!r}"
                for p in photos
                if p.sha256 in known
            ]
            if dupes and not skip_bad:
                raise GalleryError(
                    f"{len(dupes)} photos are already in the gallery; nothing changed (--skip-bad adds the "
                    f"rest):{_listing(dupes)}"
                )
            skipped.extend(dupes)
            keep = [i for i, p in enumerate(photos) if p.sha256 not in known]
            if not keep and not updates:
                raise GalleryError(f"nothing to add: every photo was refused{_listing(skipped)}")
            entries: AuditEntries = [
                (sku, line) for sku, upd in updates.items() if (line := self._set_product(sku, upd))
            ]
            for sku in sorted({photos[i].sku for i in keep} - set(updates)):
                if not self._active_product(sku):
                    new_line = self._set_product(sku, ProductUpdate())
                    assert new_line is not None  # a product that was not active is created: always a line
                    entries.append((sku, new_line))
            if not keep and not entries:
                raise GalleryError("nothing to change: the product already has these details")
            entries += self._insert_refs([photos[i] for i in keep], vectors[keep], version, renderings[keep])
            entries += list(notes)
            skus = sorted({sku for sku, _ in entries if sku})
            return (
                f"{action}: {_count(len(keep), 'reference')} for {_count(len(skus), 'SKU')} ({_short(skus)})",
                entries,
            )

        result = self._change(action, operator, apply)
        return ChangeResult(result.version, result.summary, tuple(skipped))

    def add(
        self,
        sku: str,
        paths: Sequence[str | Path],
        *,
        name: str | None = None,
        barcodes: Sequence[str] = (),
        category: str | None = None,
        price: float | None = None,
        operator: str | None = None,
        skip_bad: bool = False,
        progress: bool = False,
        model: str | Path | None = None,
        embedder: OnnxEmbedder | None = None,
    ) -> ChangeResult:
        """Add reference photos of one SKU, creating the product or updating the given catalogue fields."""
        sku = check_sku(sku, "--sku")
        update = ProductUpdate(
            None if name is None else check_text(name, "--name"),
            tuple(dict.fromkeys(check_barcode(b, "--barcode") for b in barcodes)),
            None if category is None else check_text(category, "--category"),
            check_price(price, "--price"),
        )
        return self.add_photos(
            [(sku, Path(p)) for p in paths],
            {sku: update},
            action="add",
            operator=operator,
            skip_bad=skip_bad,
            progress=progress,
            model=model,
            embedder=embedder,
        )

    def import_folder(
        self,
        folder: str | Path,
        *,
        operator: str | None = None,
        skip_bad: bool = False,
        progress: bool = False,
        model: str | Path | None = None,
        embedder: OnnxEmbedder | None = None,
    ) -> ChangeResult:
        """Add FOLDER/<sku>/<photo> for every SKU folder as one version (new products are named by their SKU id)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise GalleryError(f"{folder}: no such folder")
        items: list[tuple[str, Path]] = []
        problems: list[str] = []
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                continue
            if not entry.is_dir():
                problems.append(f"{entry}: not a SKU folder (expected {folder}/<sku>/<photo>)")
                continue
            try:
                sku = check_sku(entry.name, f"{entry}")
            except GalleryError as e:
                problems.append(str(e))
                continue
            items += [(sku, p) for p in sorted(entry.iterdir()) if not p.name.startswith(".")]
        if problems and not skip_bad:
            raise GalleryError(
                f"{folder}: {len(problems)} entries cannot be imported; nothing changed (--skip-bad imports the "
                f"rest):{_listing(problems)}"
            )
        if not items:
            raise GalleryError(f"{folder}: no photos found (expected {folder}/<sku>/<photo>)")
        result = self.add_photos(
            items,
            {},
            action="import-folder",
            operator=operator,
            skip_bad=skip_bad,
            progress=progress,
            model=model,
            embedder=embedder,
        )
        return ChangeResult(result.version, result.summary, tuple(problems) + result.skipped)

    def remove_sku(self, sku: str, *, operator: str | None = None) -> ChangeResult:
        """Retire a product: its references and barcodes leave the gallery (older versions keep them)."""
        sku = check_sku(sku, "--sku")

        def apply(version: int) -> tuple[str, AuditEntries]:
            if not self._active_product(sku):
                raise GalleryError(f"unknown SKU {sku!r} (see `reid gallery list {self.root}`)")
            n = self.conn.execute(
                "UPDATE refs SET removed_version = ? WHERE sku = ? AND removed_version IS NULL "
                "AND rendering_of IS NULL",
                (version, sku),
            ).rowcount
            self.conn.execute(
                "UPDATE refs SET removed_version = ? WHERE sku = ? AND removed_version IS NULL", (version, sku)
            )
            codes = [c for (c,) in self.conn.execute("SELECT code FROM barcodes WHERE sku = ?", (sku,))]
            self.conn.execute("DELETE FROM barcodes WHERE sku = ?", (sku,))
            self.conn.execute("UPDATE products SET active = 0 WHERE sku = ?", (sku,))
            return f"removed SKU {sku!r} ({n} references, barcodes: {', '.join(codes) or 'none'})", [
                (sku, f"removed product and {n} references")
            ]

        return self._change("remove", operator_name(operator), apply)

    def drop_lane(self, lane: str, *, operator: str | None = None) -> ChangeResult:
        """Take every lane reference one lane taught out of the gallery, as one version (its camera
        moved, or it taught wrong). Only references whose recorded source names their lane
        (`lane_source`, accepted since lanes were recorded) are found."""
        prefix = lane_prefix(lane)

        def apply(version: int) -> tuple[str, AuditEntries]:
            rows = self.conn.execute(
                "SELECT id, sku FROM refs WHERE removed_version IS NULL AND origin = ? AND substr(source, 1, ?) = ?",
                (RefOrigin.LANE.value, len(prefix), prefix),
            ).fetchall()
            if not rows:
                raise GalleryError(f"no lane references of lane {lane!r} in the gallery; nothing changed")
            self.conn.executemany("UPDATE refs SET removed_version = ? WHERE id = ?", [(version, i) for i, _ in rows])
            per_sku: dict[str, int] = {}
            for _, sku in rows:
                per_sku[sku] = per_sku.get(sku, 0) + 1
            return (
                f"dropped {_count(len(rows), 'lane reference')} of lane {lane!r} from {_count(len(per_sku), 'SKU')} "
                f"({_short(sorted(per_sku))})",
                [
                    (sku, f"dropped {_count(n, 'lane reference')} of lane {lane!r}")
                    for sku, n in sorted(per_sku.items())
                ],
            )

        return self._change("drop-lane", operator_name(operator), apply)

    def remove_ref(self, ref_id: int, *, operator: str | None = None) -> ChangeResult:
        """Take one reference (by its id, see `show`) out of the gallery."""

        def apply(version: int) -> tuple[str, AuditEntries]:
            row = self.conn.execute(
                "SELECT sku, source, rendering_of FROM refs WHERE id = ? AND removed_version IS NULL", (ref_id,)
            ).fetchone()
            if row is None:
                raise GalleryError(
                    f"no reference {ref_id} in the gallery (see `reid gallery show {self.root} --sku SKU`)"
                )
            if row[2] is not None:
                raise GalleryError(
                    f"reference {ref_id} is a lane-camera rendering of reference {row[2]}; it goes with its photo "
                    f"(`reid gallery remove {self.root} --ref {row[2]}`)"
                )
            self.conn.execute("UPDATE refs SET removed_version = ? WHERE id = ?", (version, ref_id))
            n = self.conn.execute(
                "UPDATE refs SET removed_version = ? WHERE rendering_of = ? AND removed_version IS NULL",
                (version, ref_id),
            ).rowcount
            views = f" and its {_count(n, 'lane-camera rendering')}" if n else ""
            return f"removed reference {ref_id} of SKU {row[0]!r} ({row[1]}){views}", [
                (row[0], f"removed reference {ref_id}{views}")
            ]

        return self._change("remove", operator_name(operator), apply)

    def replace_contents(
        self,
        products: Sequence[Product],
        refs: Sequence[int | Photo],
        vectors: np.ndarray,
        *,
        action: str,
        summary: str,
        operator: str | None = None,
        model: tuple[str, str, int] | None = None,
        lane_camera: LaneProfile | None = None,
        renderings: np.ndarray | None = None,
    ) -> ChangeResult:
        """Make the gallery hold exactly `products` and `refs` (row by row with `vectors`) as a new version.

        A ref is a reference id of this gallery (a rendering's id brings back that rendering), or a
        photo: a photo already known under the same SKU reuses its reference, otherwise it is stored
        as a new one; either way it gets the renderings `renderings[row]` (views' vectors) as new ones.
        `model` = (fingerprint, path, dim) rebinds the gallery (a rollback across a rebuild);
        `lane_camera` sets the profile the renderings were made with. Used by rollback and bundle import.
        """
        if renderings is None:
            renderings = np.zeros((len(refs), 0, vectors.shape[1]), np.float32)

        def apply(version: int) -> tuple[str, AuditEntries]:
            refs_before, skus_before = self._active_refs(), {p.product.sku for p in self.products()}
            self.conn.execute("UPDATE products SET active = 0")
            self.conn.execute("DELETE FROM barcodes")
            for p in products:
                self.conn.execute(
                    "INSERT INTO products (sku, name, category, price, active) VALUES (?, ?, ?, ?, 1) ON "
                    "CONFLICT(sku) DO UPDATE "
                    "SET name = excluded.name, category = excluded.category, price = excluded.price, active = 1",
                    (p.sku, p.name, p.category, p.price),
                )
                self.conn.executemany(
                    "INSERT INTO barcodes (code, sku) VALUES (?, ?)", [(c, p.sku) for c in p.barcodes]
                )
            self.conn.execute("UPDATE refs SET removed_version = ? WHERE removed_version IS NULL", (version,))
            entries: AuditEntries = []
            for ref, vec, views in zip(refs, vectors, renderings, strict=True):
                ref_id = self._find_ref(ref) if isinstance(ref, Photo) else ref
                if ref_id is None:
                    entries += self._insert_refs([ref], vec[None], version, views[None])  # type: ignore[list-item]
                    continue
                self.conn.execute(
                    "UPDATE refs SET removed_version = NULL, embedding = ? WHERE id = ?",
                    (np.asarray(vec, np.float32).tobytes(), ref_id),
                )
                if isinstance(ref, Photo) and ref.origin is RefOrigin.PHOTO:
                    self._insert_renderings(ref_id, views, version)
            if model is not None:
                db.set_meta(self.conn, model_fingerprint=model[0], model_path=model[1], embedding_dim=str(model[2]))
            if lane_camera is not None:
                db.set_meta(self.conn, **{META_KEY: profile_json(lane_camera)})
            refs_after, skus_after = self._active_refs(), {p.sku for p in products}
            entries += [(sku, "product added") for sku in sorted(skus_after - skus_before)]
            entries += [(sku, "product removed") for sku in sorted(skus_before - skus_after)]
            change = (
                f"{_count(len(refs_after - refs_before), 'reference')} in, {len(refs_before - refs_after)} out; "
                f"{_count(len(skus_after - skus_before), 'SKU')} in, {len(skus_before - skus_after)} out"
            )
            return f"{summary} ({change})", entries

        return self._change(action, operator_name(operator), apply)

    def _active_refs(self) -> set[int]:
        return self.photo_ids()

    def _find_ref(self, photo: Photo) -> int | None:
        return self.conn.execute(
            "SELECT MAX(id) FROM refs WHERE sku = ? AND sha256 = ? AND rendering_of IS NULL", (photo.sku, photo.sha256)
        ).fetchone()[0]

    def rollback(self, version: int, *, operator: str | None = None) -> ChangeResult:
        """A new version with the contents (and model) of an older, still stored version."""
        if self.conn.execute("SELECT 1 FROM versions WHERE version = ?", (version,)).fetchone() is None:
            raise GalleryError(f"{self.root}: there is no version {version} (see `reid gallery history {self.root}`)")
        if version == read_current(self.root):
            raise GalleryError(f"{self.root}: version {version} is the current version already")
        try:
            snap = Snapshot.load(self.root, version)
        except FileNotFoundError:  # its directory is gone: pruned, or set aside as damaged
            raise GalleryError(self._why_not_stored(version)) from None
        except GalleryError as e:  # stored, but a file is missing or fails its checksum
            raise GalleryError(
                f"cannot roll back to version {version}: {e}; nothing changed (`reid gallery check {self.root}` "
                "lists what is damaged)"
            ) from None
        m = snap.manifest
        return self.replace_contents(
            list(snap.products.values()),
            [int(i) for i in snap.ref_ids],
            reference_vectors(snap.index, snap.ref_ids),
            action="rollback",
            summary=f"rolled back to the contents of version {version}",
            operator=operator,
            model=(m["model_fingerprint"], m["model_path"], int(m["embedding_dim"])),
            # a version made before lane-camera profiles holds no renderings: the profile that matches it is off
            lane_camera=LaneProfile.from_dict(m[META_KEY], f"version {version}'s manifest") if META_KEY in m else OFF,
        )

    def _why_not_stored(self, version: int) -> str:
        """Why a version's directory is gone: set aside as damaged (by repair, which could not rebuild
        it), pruned (older than the versions kept), or removed by something else."""
        stored = f"stored versions: {', '.join(map(str, stored_versions(self.root)))}"
        set_aside = sorted(
            (self.root / DAMAGED_DIR).glob(f"*/{version_dir(self.root, version).relative_to(self.root)}")
        )
        if set_aside:
            return (
                f"{self.root}: version {version} was damaged and set aside in {set_aside[-1]}; `reid gallery repair` "
                f"could not rebuild it (its output said why), so it cannot be rolled back to; {stored}"
            )
        keep = int(self.meta["keep_versions"])
        if version <= self._last_version() - keep:
            return f"{self.root}: version {version} is no longer stored (the {keep} latest are kept); {stored}"
        return (
            f"{self.root}: version {version} is missing from {VERSIONS_DIR}/ although it is among the {keep} latest, "
            f"which are kept (removed by hand?); it cannot be rolled back to; {stored}"
        )

    def rebuild(self, model: str | Path, *, operator: str | None = None, progress: bool = False) -> ChangeResult:
        """Re-embed every reference photo with `model` into a new version bound to that model."""
        embedder = OnnxEmbedder(model)
        embedder.calibration  # noqa: B018 - refuse an uncalibrated model before the long re-embedding
        vectors: dict[int, np.ndarray] = {}

        def embed(ids: set[int] | None) -> None:
            rows = self.conn.execute(
                "SELECT id, sku, image FROM refs WHERE removed_version IS NULL AND rendering_of IS NULL"
            ).fetchall()
            rows = [r for r in rows if ids is None or r[0] in ids]
            by_path = {self.root / image: ref_id for ref_id, _, image in rows}
            photos, vecs, errors = embed_photos(
                [(sku, self.root / image) for _, sku, image in rows], embedder, progress=progress
            )
            errors += [
                f"{p.path}: stored photo is damaged (its sha256 is not the one it was stored under)"
                for p in photos
                if p.sha256 != p.path.name.split(".", 1)[0]
            ]
            if errors:
                raise GalleryError(
                    f"{len(errors)} stored photos cannot be read; nothing changed (`reid gallery check {self.root}` "
                    f"lists what is damaged):{_listing(errors)}"
                )
            vectors.update({by_path[p.path]: v for p, v in zip(photos, vecs, strict=True)})

        embed(None)  # the long part, before taking the lock
        profile = self.lane_profile()
        rendered = self._render_stored(None, profile, embedder, progress)

        def apply(version: int) -> tuple[str, AuditEntries]:
            active = self.photo_ids()
            embed(active - vectors.keys())  # references added by others meanwhile
            self.conn.executemany(
                "UPDATE refs SET embedding = ? WHERE id = ?", [(vectors[i].tobytes(), i) for i in active]
            )
            now = self.lane_profile()
            n, _ = self._rerender(version, rendered if now == profile else {}, now, embedder)
            views = f" and {_count(n, 'lane-camera rendering')}" if n else ""
            old = self.meta["model_fingerprint"]
            db.set_meta(
                self.conn,
                model_fingerprint=embedder.fingerprint,
                model_path=str(embedder.path.resolve()),
                embedding_dim=str(embedder.dim),
            )
            return (
                f"re-embedded {len(active)} references{views} with model {embedder.fingerprint[:12]} "
                f"({embedder.path}), was {old[:12]}",
                [],
            )

        return self._change("rebuild", operator_name(operator), apply)

    def set_lane_camera(
        self,
        profile: LaneProfile,
        *,
        operator: str | None = None,
        progress: bool = False,
        again: bool = False,
        model: str | Path | None = None,
        embedder: OnnxEmbedder | None = None,
    ) -> ChangeResult:
        """Set the gallery's lane camera profile and render every catalogue photo through it, as a new
        version (`again`: render again with the same profile, e.g. after an older release added photos)."""
        before = self.lane_profile()
        if profile == before and not again:
            raise GalleryError(
                f"nothing to change: the lane camera is already {profile.describe()} (--again renders every photo "
                "again)"
            )
        embedder = self.embedder(embedder, model)
        rendered = self._render_stored(None, profile, embedder, progress)  # the long part, before the lock

        def apply(version: int) -> tuple[str, AuditEntries]:
            if self.meta["model_fingerprint"] != embedder.fingerprint:
                raise GalleryError(f"{self.root}: the gallery was rebuilt with another model meanwhile; run this again")
            n, photos = self._rerender(version, rendered, profile, embedder)
            was = "" if profile == before else f" (was {before.describe()})"
            return (
                f"lane camera: {profile.describe()}{was}; {_count(n, 'lane-camera rendering')} of "
                f"{_count(photos, 'photo')}",
                [],
            )

        return self._change("lane-camera", operator_name(operator), apply)


def _short(items: Sequence[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
