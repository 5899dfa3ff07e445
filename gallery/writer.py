"""The change machinery of a gallery: every change (add, remove, rollback, rebuild, import) becomes a
new version, one writer at a time, crash-safe at every step.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retail_reid.durable import remove_tree
from retail_reid.faults import checkpoint
from retail_reid.gallery import db
from retail_reid.gallery.catalog import Product, check_text
from retail_reid.gallery.errors import GalleryError, damaged_database, is_damage
from retail_reid.gallery.image_store import IMAGES_DIR
from retail_reid.gallery.integrity import check_unit_rows
from retail_reid.gallery.reading import GalleryReader
from retail_reid.gallery.snapshot import (
    CURRENT,
    VERSIONS_DIR,
    VersionContent,
    read_current,
    stored_versions,
    switch_current,
    version_dir,
    write_version,
)

LOCK = "lock"
PENDING = "images/.pending"  # images stored by the change in progress, one path a line
log = logging.getLogger(__name__)

AuditEntries = list[tuple[str | None, str]]  # (sku, detail) lines of a change
Apply = Callable[[int], tuple[str, AuditEntries]]  # database changes of a version: its summary and entries


@dataclass(frozen=True)
class ChangeResult:
    version: int
    summary: str
    skipped: tuple[str, ...] = ()  # bad inputs left out (with skip_bad)


REF_COLUMNS = "id, sku, image, source, phash, added_version, embedding, origin, rendering_of, view"  # a version's rows


def default_operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        return f"uid-{os.getuid()}"


def operator_name(operator: str | None) -> str:
    """The operator recorded for a change: the one given (checked), or the user running it."""
    return check_text(operator, "--operator") if operator is not None else default_operator()


def failure(e: BaseException) -> str:
    """What went wrong in an OS or database call, for a one-line message."""
    if isinstance(e, OSError):
        return f"{e.strerror or e}{f': {e.filename}' if e.filename else ''}"
    return str(e)


@contextlib.contextmanager
def writer_lock(root: Path) -> Iterator[None]:
    """The one-writer-at-a-time lock on DIR/lock (the kernel releases it if the holder dies)."""
    if not os.access(root, os.W_OK):
        raise GalleryError(f"{root}: cannot change the gallery: the directory is read-only for this user")
    try:
        fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise GalleryError(
            f"{root / LOCK}: cannot open the writer lock ({e.strerror}); is the gallery read-only?"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("%s: another change is in progress; waiting for it to finish", root)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class VersionWriter(GalleryReader):
    """A gallery opened for changes: `_change` runs one as a new version (subclasses say what changes)."""

    def __init__(self, root: Path, conn: sqlite3.Connection):
        super().__init__(root, conn)
        self._created: list[Path] = []  # image files the running change created (removed if it fails)

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return writer_lock(self.root)

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
                        content.photos,
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
                if is_damage(e):
                    raise damaged_database(self.root, e) from None
                if isinstance(e, (OSError, sqlite3.OperationalError)):
                    raise GalleryError(
                        f"{self.root}: could not write the change ({failure(e)}); nothing changed, still at version "
                        f"{before}"
                    ) from None
                raise
            self._forget_pending()
            try:
                switch_current(self.root, version)
            except OSError as e:
                raise GalleryError(
                    f"{self.root}: version {version} is saved but could not be published ({failure(e)}); "
                    "the next change of this gallery publishes it"
                ) from None
            try:
                self._prune()
            except OSError as e:  # the change is made and published; old versions go at the next change
                log.warning("%s: could not remove old versions (%s)", self.root, failure(e))
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
        rows = self.conn.execute(f"SELECT {REF_COLUMNS} FROM refs WHERE removed_version IS NULL ORDER BY id").fetchall()
        return self._content_of(version, operator, [row.product for row in self.products()], rows)

    def _content_of(self, version: int, operator: str, products: list[Product], rows: list[tuple]) -> VersionContent:
        """A version of `products` and the reference `rows` (`REF_COLUMNS`, by id) under the gallery's model."""
        meta = self.meta
        position = {p.sku: i for i, p in enumerate(products)}
        dim = int(meta["embedding_dim"])
        images: dict[str, str] = {}
        for _, sku, image, *_ in rows:
            images.setdefault(sku, image)
        ref_ids = np.array([r[0] for r in rows], np.int64)
        if any(len(r[6]) != 4 * dim for r in rows):
            raise GalleryError(
                f"{self.root / db.DB_NAME}: a reference's embedding is not {dim} floats; the database is damaged"
            )
        vectors = np.frombuffer(b"".join(r[6] for r in rows), np.float32).reshape(len(rows), dim)
        check_unit_rows(vectors, ref_ids, str(self.root / db.DB_NAME))
        return VersionContent(
            version=version,
            products=products,
            images=images,
            ref_ids=ref_ids,
            ref_skus=np.array([position[r[1]] for r in rows], np.int32),
            vectors=vectors,
            model_fingerprint=meta["model_fingerprint"],
            model_path=meta["model_path"],
            operator=operator,
            references=[
                {
                    "id": i,
                    "image": image,
                    "source": source,
                    "phash": phash,
                    "added_version": added,
                    "origin": origin,
                    **({} if photo is None else {"rendering_of": photo, "view": view}),
                }
                for i, _, image, source, phash, added, _, origin, photo, view in rows
            ],
            keep_versions=int(meta["keep_versions"]),
            lane_camera=self.lane_profile().to_dict(),
        )
