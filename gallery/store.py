"""The writer side of a gallery: every change (add, remove, rollback, rebuild, import) becomes a new
version, one writer at a time, crash-safe at every step.

A change, under an exclusive lock on DIR/lock (released by the kernel if the writer dies):
  1. finish or clean up whatever a killed writer left (recover),
  2. in one SQLite transaction: apply the change, write the new version directory beside the current
     one, record the version and the audit entries, commit,
  3. switch CURRENT to the new version (atomic rename), and prune versions beyond the kept count.
A writer killed before the commit leaves the database and CURRENT untouched (its half-written files
are removed by the next writer); killed after it, the committed version is published by the next
writer. Readers only ever follow CURRENT.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from retail_reid.gallery import db
from retail_reid.gallery.binding import bound_embedder
from retail_reid.gallery.catalog import Product, check_barcode, check_price, check_sku, check_text
from retail_reid.gallery.errors import GalleryError
from retail_reid.gallery.image_store import IMAGES_DIR, sha256_bytes, store_image
from retail_reid.gallery.index import reference_vectors
from retail_reid.gallery.photos import Photo, embed_photos, read_bytes
from retail_reid.gallery.snapshot import (
    CURRENT,
    VERSIONS_DIR,
    Snapshot,
    VersionContent,
    read_current,
    stored_versions,
    switch_current,
    version_dir,
    write_version,
)
from retail_reid.models.runtime import OnnxEmbedder

from retail_reid.durable import fsync_dir, remove_tree, replace_atomically
from retail_reid.faults import checkpoint

LOCK = "lock"
PENDING = "images/.pending"  # images stored by the change in progress, one path a line
DEFAULT_KEEP = 5
MAX_LISTED = 10  # errors listed in one message; the rest are counted
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChangeResult:
    version: int
    summary: str
    skipped: tuple[str, ...] = ()  # bad inputs left out (with skip_bad)


@dataclass(frozen=True)
class ProductUpdate:
    """Catalogue fields an `add` sets; None leaves a field as it is (new products get name = SKU)."""

    name: str | None = None
    barcodes: tuple[str, ...] = ()
    category: str | None = None
    price: float | None = None


@dataclass(frozen=True)
class ProductRow:
    product: Product
    n_refs: int


@dataclass(frozen=True)
class RefRow:
    id: int
    sku: str
    image: str
    source: str
    added_version: int


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


def default_operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        return f"uid-{os.getuid()}"


def _listing(problems: Sequence[str]) -> str:
    """The first problems on the same line as the message (the CLI prints errors as one line)."""
    more = f"; ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return " " + "; ".join(problems[:MAX_LISTED]) + more


def _operator(operator: str | None) -> str:
    return check_text(operator, "--operator") if operator is not None else default_operator()


class GalleryStore:
    """Open with `GalleryStore.open(dir)` (or create with `GalleryStore.init`); changes return a ChangeResult."""

    def __init__(self, root: Path, conn: sqlite3.Connection):
        self.root = root
        self.conn = conn
        self._created: list[Path] = []  # image files the running change created (removed if it fails)

    # ---- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, root: str | Path, readonly: bool = False) -> GalleryStore:
        root = Path(root)
        if not root.is_dir():
            raise GalleryError(f"{root}: no such gallery directory; create one with `reid gallery init {root}`")
        return cls(root, db.connect(root, readonly=readonly))

    @classmethod
    def init(
        cls, root: str | Path, model: str | Path | None = None, keep: int = DEFAULT_KEEP, operator: str | None = None
    ) -> ChangeResult:
        """Create an empty gallery (version 1) bound to `model` (default: the shipped model).

        It is built in a hidden sibling directory and renamed into place, so DIR is a whole gallery or absent.
        """
        root = Path(root)
        operator = _operator(operator)
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
                raise GalleryError(f"{root}: cannot create the gallery ({_reason(e)})") from None
            raise
        fsync_dir(root.parent)
        return result

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> GalleryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def meta(self) -> dict[str, str]:
        return db.get_meta(self.conn)

    def embedder(self, embedder: OnnxEmbedder | None = None, model: str | Path | None = None) -> OnnxEmbedder:
        meta = self.meta
        return bound_embedder(self.root, meta["model_fingerprint"], meta["model_path"], embedder, model)

    # ---- the change machinery --------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if not os.access(self.root, os.W_OK):
            raise GalleryError(f"{self.root}: cannot change the gallery: the directory is read-only for this user")
        try:
            fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise GalleryError(
                f"{self.root / LOCK}: cannot open the writer lock ({e.strerror}); is the gallery read-only?"
            ) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning("%s: another change is in progress; waiting for it to finish", self.root)
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _last_version(self) -> int:
        return self.conn.execute("SELECT COALESCE(MAX(version), 0) FROM versions").fetchone()[0]

    def _recover(self) -> None:
        """Bring the directory in line with the database after a writer died (called under the lock)."""
        last = self._last_version()
        versions = self.root / VERSIONS_DIR
        for leftover in versions.iterdir():
            if leftover.name.startswith("."):  # a half-written or half-deleted version
                shutil.rmtree(leftover, ignore_errors=True)
        for v in stored_versions(self.root):
            if v > last:  # written by a writer that died before committing it
                remove_tree(version_dir(self.root, v))
        for tmp in [*(self.root / IMAGES_DIR).glob("*/.*.tmp-*"), *self.root.glob(f".{CURRENT}.tmp-*")]:
            tmp.unlink(missing_ok=True)
        self._remove_orphan_images()
        if last > read_current(self.root):  # committed, not yet published
            if last not in stored_versions(self.root):
                write_version(self.root, self._content(last, self._version_operator(last)))
            switch_current(self.root, last)
            log.warning(
                "%s: published version %d, which a previous writer committed but did not publish", self.root, last
            )

    def _version_operator(self, version: int) -> str:
        return self.conn.execute("SELECT operator FROM versions WHERE version = ?", (version,)).fetchone()[0]

    def _change(
        self, action: str, operator: str, apply: Callable[[int], tuple[str, list[tuple[str | None, str]]]]
    ) -> ChangeResult:
        """Run `apply(version)` (database changes; returns a summary and audit (sku, detail) entries)
        as a new version, with the lock, transaction, version directory and switch around it."""
        with self._locked():
            try:
                self._recover()
            except OSError as e:
                raise GalleryError(
                    f"{self.root}: cannot tidy up after an interrupted change ({e.strerror or e})"
                ) from None
            before = read_current(self.root)
            version = self._last_version() + 1
            self._created = []
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                summary, entries = apply(version)
                content = self._content(version, operator)
                write_version(self.root, content)
                now = time.time()
                self.conn.execute(
                    "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        version,
                        now,
                        operator,
                        action,
                        summary,
                        content.model_fingerprint,
                        len(content.ref_ids),
                        len(content.products),
                    ),
                )
                self.conn.executemany(
                    "INSERT INTO audit (version, at, operator, action, sku, detail) VALUES (?, ?, ?, ?, ?, ?)",
                    [(version, now, operator, action, sku, detail) for sku, detail in [(None, summary), *entries]],
                )
                checkpoint("commit")
                self.conn.execute("COMMIT")
            except BaseException as e:
                self._undo(version)
                if isinstance(e, (OSError, sqlite3.OperationalError)):
                    raise GalleryError(
                        f"{self.root}: could not write the change ({_reason(e)}); nothing changed, still at version {before}"
                    ) from None
                raise
            self._forget_pending()
            try:
                switch_current(self.root, version)
            except OSError as e:
                raise GalleryError(
                    f"{self.root}: version {version} is saved but could not be published ({_reason(e)}); "
                    "the next change of this gallery publishes it"
                ) from None
            try:
                self._prune()
            except OSError as e:  # the change is made and published; old versions go at the next change
                log.warning("%s: could not remove old versions (%s)", self.root, _reason(e))
            return ChangeResult(version, summary)

    def _undo(self, version: int) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        with contextlib.suppress(OSError):
            remove_tree(version_dir(self.root, version))
            for path in self._created:
                path.unlink(missing_ok=True)
            self._forget_pending()

    def _note_pending(self, relpath: str) -> None:
        """Record an image about to be stored by an uncommitted change, so that if this writer is
        killed the next one removes it (unless the database refers to it)."""
        with open(self.root / PENDING, "a", encoding="utf-8") as f:
            f.write(relpath + "\n")

    def _forget_pending(self) -> None:
        (self.root / PENDING).unlink(missing_ok=True)

    def _remove_orphan_images(self) -> None:
        """Images a killed writer stored for a change it never committed."""
        try:
            listed = (self.root / PENDING).read_text(encoding="utf-8").split()
        except FileNotFoundError:
            return
        for relpath in listed:
            if (
                self.conn.execute("SELECT 1 FROM refs WHERE sha256 = ? LIMIT 1", (Path(relpath).stem,)).fetchone()
                is None
            ):
                (self.root / relpath).unlink(missing_ok=True)
        self._forget_pending()

    def _prune(self) -> None:
        keep = int(self.meta["keep_versions"])
        current = read_current(self.root)
        for v in stored_versions(self.root)[:-keep]:
            if v != current:
                checkpoint("prune")
                remove_tree(version_dir(self.root, v))

    def _content(self, version: int, operator: str) -> VersionContent:
        """The gallery as the database holds it now, as a version to publish."""
        meta = self.meta
        products = [
            Product(sku, name, tuple(codes.split("\n")) if codes else (), category, price)
            for sku, name, category, price, codes in self.conn.execute(
                "SELECT p.sku, p.name, p.category, p.price, (SELECT group_concat(code, char(10)) FROM "
                "(SELECT code FROM barcodes b WHERE b.sku = p.sku ORDER BY code)) FROM products p WHERE active ORDER BY sku"
            )
        ]
        position = {p.sku: i for i, p in enumerate(products)}
        rows = self.conn.execute(
            "SELECT id, sku, image, embedding FROM refs WHERE removed_version IS NULL ORDER BY id"
        ).fetchall()
        dim = int(meta["embedding_dim"])
        images: dict[str, str] = {}
        for _, sku, image, _ in rows:
            images.setdefault(sku, image)
        vectors = np.frombuffer(b"".join(r[3] for r in rows), np.float32).reshape(len(rows), dim)
        return VersionContent(
            version=version,
            products=products,
            images=images,
            ref_ids=np.array([r[0] for r in rows], np.int64),
            ref_skus=np.array([position[r[1]] for r in rows], np.int32),
            vectors=vectors,
            model_fingerprint=meta["model_fingerprint"],
            model_path=meta["model_path"],
            operator=operator,
        )

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
        if row is None or not row[3]:
            name = update.name or (row[0] if row else sku)
            self.conn.execute(
                "INSERT INTO products (sku, name, category, price, active) VALUES (?, ?, ?, ?, 1) "
                "ON CONFLICT(sku) DO UPDATE SET name = excluded.name, category = excluded.category, price = excluded.price, active = 1",
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

    def _insert_refs(self, photos: Sequence[Photo], vectors: np.ndarray, version: int) -> list[tuple[str | None, str]]:
        entries: list[tuple[str | None, str]] = []
        for photo, vec in zip(photos, vectors):
            data = read_bytes(photo.path)
            if sha256_bytes(data) != photo.sha256:
                raise GalleryError(f"{photo.path}: the file changed while it was being added; add it again")
            if not (self.root / photo.relpath).is_file():
                self._note_pending(photo.relpath)
            if store_image(self.root, photo.relpath, data):
                self._created.append(self.root / photo.relpath)
            cur = self.conn.execute(
                "INSERT INTO refs (sku, image, sha256, phash, source, added_version, embedding) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    photo.sku,
                    photo.relpath,
                    photo.sha256,
                    photo.phash,
                    photo.source,
                    version,
                    np.asarray(vec, np.float32).tobytes(),
                ),
            )
            entries.append((photo.sku, f"added reference {cur.lastrowid}: {photo.source} -> {photo.relpath}"))
        return entries

    def _known_photos(self, photos: Sequence[Photo]) -> dict[str, str]:
        """sha256 -> SKU for the given photos that are already references."""
        found: dict[str, str] = {}
        for photo in photos:
            row = self.conn.execute(
                "SELECT sku FROM refs WHERE sha256 = ? AND removed_version IS NULL", (photo.sha256,)
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
    ) -> ChangeResult:
        """Add (sku, photo path) references and create or update the products in `updates` as one version.

        Bad photos, and photos already in the gallery, refuse the whole change (nothing is written)
        unless `skip_bad`, which leaves them out and reports them in `skipped`.
        """
        operator = _operator(operator)
        if not os.access(self.root, os.W_OK):
            raise GalleryError(f"{self.root}: cannot change the gallery: the directory is read-only for this user")
        photos, vectors, errors = embed_photos(items, self.embedder(embedder, model), progress=progress)
        if errors and not skip_bad:
            raise GalleryError(
                f"{len(errors)} of {len(items)} photos cannot be added; nothing changed (--skip-bad adds the rest):{_listing(errors)}"
            )
        skipped = list(errors)

        def apply(version: int) -> tuple[str, list[tuple[str | None, str]]]:
            known = self._known_photos(photos)
            dupes = [
                f"{p.source}: this photo is already a reference of SKU {known[p.sha256]!r}"
                for p in photos
                if p.sha256 in known
            ]
            if dupes and not skip_bad:
                raise GalleryError(
                    f"{len(dupes)} photos are already in the gallery; nothing changed (--skip-bad adds the rest):{_listing(dupes)}"
                )
            skipped.extend(dupes)
            keep = [i for i, p in enumerate(photos) if p.sha256 not in known]
            if not keep and not updates:
                raise GalleryError(f"nothing to add: every photo was refused{_listing(skipped)}")
            entries = [(sku, line) for sku, upd in updates.items() if (line := self._set_product(sku, upd))]
            for sku in sorted({photos[i].sku for i in keep} - set(updates)):
                if not self._active_product(sku):
                    entries.append((sku, self._set_product(sku, ProductUpdate())))
            if not keep and not entries:
                raise GalleryError("nothing to change: the product already has these details")
            entries += self._insert_refs([photos[i] for i in keep], vectors[keep], version)
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
                f"{folder}: {len(problems)} entries cannot be imported; nothing changed (--skip-bad imports the rest):{_listing(problems)}"
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

        def apply(version: int) -> tuple[str, list[tuple[str | None, str]]]:
            if not self._active_product(sku):
                raise GalleryError(f"unknown SKU {sku!r} (see `reid gallery list {self.root}`)")
            n = self.conn.execute(
                "UPDATE refs SET removed_version = ? WHERE sku = ? AND removed_version IS NULL", (version, sku)
            ).rowcount
            codes = [c for (c,) in self.conn.execute("SELECT code FROM barcodes WHERE sku = ?", (sku,))]
            self.conn.execute("DELETE FROM barcodes WHERE sku = ?", (sku,))
            self.conn.execute("UPDATE products SET active = 0 WHERE sku = ?", (sku,))
            return f"removed SKU {sku!r} ({n} references, barcodes: {', '.join(codes) or 'none'})", [
                (sku, f"removed product and {n} references")
            ]

        return self._change("remove", _operator(operator), apply)

    def remove_ref(self, ref_id: int, *, operator: str | None = None) -> ChangeResult:
        """Take one reference (by its id, see `show`) out of the gallery."""

        def apply(version: int) -> tuple[str, list[tuple[str | None, str]]]:
            row = self.conn.execute(
                "SELECT sku, source FROM refs WHERE id = ? AND removed_version IS NULL", (ref_id,)
            ).fetchone()
            if row is None:
                raise GalleryError(
                    f"no reference {ref_id} in the gallery (see `reid gallery show {self.root} --sku SKU`)"
                )
            self.conn.execute("UPDATE refs SET removed_version = ? WHERE id = ?", (version, ref_id))
            return f"removed reference {ref_id} of SKU {row[0]!r} ({row[1]})", [(row[0], f"removed reference {ref_id}")]

        return self._change("remove", _operator(operator), apply)

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
    ) -> ChangeResult:
        """Make the gallery hold exactly `products` and `refs` (row by row with `vectors`) as a new version.

        A ref is a reference id of this gallery, or a photo: a photo already known under the same SKU
        reuses its reference, otherwise it is stored as a new one. `model` = (fingerprint, path, dim)
        rebinds the gallery (a rollback across a rebuild). Used by rollback and bundle import.
        """

        def apply(version: int) -> tuple[str, list[tuple[str | None, str]]]:
            refs_before, skus_before = self._active_refs(), {p.product.sku for p in self.products()}
            self.conn.execute("UPDATE products SET active = 0")
            self.conn.execute("DELETE FROM barcodes")
            for p in products:
                self.conn.execute(
                    "INSERT INTO products (sku, name, category, price, active) VALUES (?, ?, ?, ?, 1) ON CONFLICT(sku) DO UPDATE "
                    "SET name = excluded.name, category = excluded.category, price = excluded.price, active = 1",
                    (p.sku, p.name, p.category, p.price),
                )
                self.conn.executemany(
                    "INSERT INTO barcodes (code, sku) VALUES (?, ?)", [(c, p.sku) for c in p.barcodes]
                )
            self.conn.execute("UPDATE refs SET removed_version = ? WHERE removed_version IS NULL", (version,))
            entries: list[tuple[str | None, str]] = []
            for ref, vec in zip(refs, vectors):
                ref_id = self._find_ref(ref) if isinstance(ref, Photo) else ref
                if ref_id is None:
                    entries += self._insert_refs([ref], vec[None], version)  # type: ignore[list-item]
                else:
                    self.conn.execute(
                        "UPDATE refs SET removed_version = NULL, embedding = ? WHERE id = ?",
                        (np.asarray(vec, np.float32).tobytes(), ref_id),
                    )
            if model is not None:
                db.set_meta(self.conn, model_fingerprint=model[0], model_path=model[1], embedding_dim=str(model[2]))
            refs_after, skus_after = self._active_refs(), {p.sku for p in products}
            entries += [(sku, "product added") for sku in sorted(skus_after - skus_before)]
            entries += [(sku, "product removed") for sku in sorted(skus_before - skus_after)]
            change = (
                f"{_count(len(refs_after - refs_before), 'reference')} in, {len(refs_before - refs_after)} out; "
                f"{_count(len(skus_after - skus_before), 'SKU')} in, {len(skus_before - skus_after)} out"
            )
            return f"{summary} ({change})", entries

        return self._change(action, _operator(operator), apply)

    def _active_refs(self) -> set[int]:
        return {i for (i,) in self.conn.execute("SELECT id FROM refs WHERE removed_version IS NULL")}

    def _find_ref(self, photo: Photo) -> int | None:
        return self.conn.execute(
            "SELECT MAX(id) FROM refs WHERE sku = ? AND sha256 = ?", (photo.sku, photo.sha256)
        ).fetchone()[0]

    def rollback(self, version: int, *, operator: str | None = None) -> ChangeResult:
        """A new version with the contents (and model) of an older, still stored version."""
        if self.conn.execute("SELECT 1 FROM versions WHERE version = ?", (version,)).fetchone() is None:
            raise GalleryError(f"{self.root}: there is no version {version} (see `reid gallery history {self.root}`)")
        if version == read_current(self.root):
            raise GalleryError(f"{self.root}: version {version} is the current version already")
        try:
            snap = Snapshot.load(self.root, version)
        except FileNotFoundError:
            raise GalleryError(
                f"{self.root}: version {version} is no longer stored (the {self.meta['keep_versions']} latest are kept); "
                f"stored versions: {', '.join(map(str, stored_versions(self.root)))}"
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
        )

    def rebuild(self, model: str | Path, *, operator: str | None = None, progress: bool = False) -> ChangeResult:
        """Re-embed every reference photo with `model` into a new version bound to that model."""
        embedder = OnnxEmbedder(model)
        embedder.calibration  # noqa: B018 - refuse an uncalibrated model before the long re-embedding
        vectors: dict[int, np.ndarray] = {}

        def embed(ids: set[int] | None) -> None:
            rows = self.conn.execute("SELECT id, sku, image FROM refs WHERE removed_version IS NULL").fetchall()
            rows = [r for r in rows if ids is None or r[0] in ids]
            by_path = {self.root / image: ref_id for ref_id, _, image in rows}
            photos, vecs, errors = embed_photos(
                [(sku, self.root / image) for _, sku, image in rows], embedder, progress=progress
            )
            if errors:
                raise GalleryError(f"{len(errors)} stored photos cannot be read; nothing changed:{_listing(errors)}")
            vectors.update({by_path[p.path]: v for p, v in zip(photos, vecs)})

        embed(None)  # the long part, before taking the lock

        def apply(version: int) -> tuple[str, list[tuple[str | None, str]]]:
            active = {i for (i,) in self.conn.execute("SELECT id FROM refs WHERE removed_version IS NULL")}
            embed(active - vectors.keys())  # references added by others meanwhile
            self.conn.executemany(
                "UPDATE refs SET embedding = ? WHERE id = ?", [(vectors[i].tobytes(), i) for i in active]
            )
            old = self.meta["model_fingerprint"]
            db.set_meta(
                self.conn,
                model_fingerprint=embedder.fingerprint,
                model_path=str(embedder.path.resolve()),
                embedding_dim=str(embedder.dim),
            )
            return (
                f"re-embedded {len(active)} references with model {embedder.fingerprint[:12]} ({embedder.path}), was {old[:12]}",
                [],
            )

        return self._change("rebuild", _operator(operator), apply)

    # ---- reading ---------------------------------------------------------------------------------

    def products(self) -> list[ProductRow]:
        rows = self.conn.execute(
            "SELECT p.sku, p.name, p.category, p.price, "
            "(SELECT group_concat(code, char(10)) FROM (SELECT code FROM barcodes b WHERE b.sku = p.sku ORDER BY code)), "
            "(SELECT COUNT(*) FROM refs r WHERE r.sku = p.sku AND r.removed_version IS NULL) "
            "FROM products p WHERE active ORDER BY p.sku"
        ).fetchall()
        return [
            ProductRow(Product(sku, name, tuple(codes.split("\n")) if codes else (), cat, price), n)
            for sku, name, cat, price, codes, n in rows
        ]

    def product(self, sku: str) -> tuple[ProductRow, list[RefRow]]:
        sku = check_sku(sku, "--sku")
        found = [p for p in self.products() if p.product.sku == sku]
        if not found:
            raise GalleryError(f"unknown SKU {sku!r} (see `reid gallery list {self.root}`)")
        refs = [
            RefRow(*row)
            for row in self.conn.execute(
                "SELECT id, sku, image, source, added_version FROM refs WHERE sku = ? AND removed_version IS NULL ORDER BY id",
                (sku,),
            )
        ]
        return found[0], refs

    def history(self) -> list[VersionRow]:
        current, stored = read_current(self.root), set(stored_versions(self.root))
        entries: dict[int, list[tuple[str | None, str]]] = {}
        for version, sku, detail in self.conn.execute(
            "SELECT version, sku, detail FROM audit WHERE sku IS NOT NULL ORDER BY id"
        ):
            entries.setdefault(version, []).append((sku, detail))
        return [
            VersionRow(*row, current=row[0] == current, stored=row[0] in stored, entries=tuple(entries.get(row[0], ())))
            for row in self.conn.execute("SELECT * FROM versions ORDER BY version")
        ]


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError):
        return f"{e.strerror or e}{f': {e.filename}' if e.filename else ''}"
    return str(e)


def _short(items: Sequence[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
