"""The gallery's SQLite database: the catalogue, the references (with their embeddings), the
versions and the audit log. WAL mode lets readers (list, show, history) run while a writer commits;
synchronous=FULL makes a commit durable before the version switch that follows it."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from retail_reid.gallery.errors import GalleryError, not_a_gallery

DB_NAME = "gallery.db"
FORMAT = "retail-reid-gallery"
FORMAT_VERSION = 1

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE products (
    sku TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    category TEXT,
    price REAL,
    active INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE barcodes (code TEXT PRIMARY KEY, sku TEXT NOT NULL REFERENCES products(sku));
CREATE TABLE refs (
    id INTEGER PRIMARY KEY,
    sku TEXT NOT NULL REFERENCES products(sku),
    image TEXT NOT NULL,            -- path of the photo in the content-addressed store
    sha256 TEXT NOT NULL,           -- of the photo file's bytes
    phash INTEGER NOT NULL,         -- 64-bit perceptual hash, for near-duplicate checks
    source TEXT NOT NULL,           -- the file name it was added from
    origin TEXT NOT NULL DEFAULT 'photo',  -- RefOrigin: a photo added by an operator, a lane reference, or a
                                    -- lane-camera rendering of a photo
    rendering_of INTEGER,           -- a rendering: the reference id of its photo (NULL for a photo)
    view INTEGER,                   -- a rendering: which of its photo's views (0, 1, ...)
    added_version INTEGER NOT NULL,
    removed_version INTEGER,        -- NULL while the reference is part of the gallery
    embedding BLOB NOT NULL         -- float32, unit length, under the gallery's model
);
CREATE UNIQUE INDEX refs_active_photo ON refs(sha256) WHERE removed_version IS NULL AND rendering_of IS NULL;
CREATE INDEX refs_sku ON refs(sku);
CREATE INDEX refs_rendering_of ON refs(rendering_of);
CREATE INDEX refs_sha256 ON refs(sha256);
CREATE TABLE versions (
    version INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    operator TEXT NOT NULL,
    action TEXT NOT NULL,
    summary TEXT NOT NULL,
    model_fingerprint TEXT NOT NULL,
    n_refs INTEGER NOT NULL,
    n_skus INTEGER NOT NULL
);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    version INTEGER NOT NULL REFERENCES versions(version),
    at REAL NOT NULL,
    operator TEXT NOT NULL,
    action TEXT NOT NULL,
    sku TEXT,
    detail TEXT NOT NULL
);
"""


def connect(root: Path, readonly: bool = False) -> sqlite3.Connection:
    """Open the gallery database; explicit transactions only (the writer manages BEGIN/COMMIT)."""
    path = root / DB_NAME
    if not path.is_file():
        raise not_a_gallery(root, DB_NAME)
    if not readonly and not (os.access(root, os.W_OK) and os.access(path, os.W_OK)):
        raise GalleryError(f"{root}: cannot change the gallery: it is read-only for this user")
    uri = f"{path.resolve().as_uri()}?mode={'ro' if readonly else 'rw'}"
    if readonly and not os.access(root, os.W_OK) and not path.with_name(f"{DB_NAME}-wal").exists():
        # SQLite cannot set up WAL's shared memory in a directory it may not write; with no -wal file
        # no writer has the database open, so the file is complete and can be read as immutable.
        uri += "&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=60.0)
        conn.execute("PRAGMA foreign_keys = ON")
        if not readonly:
            conn.execute("PRAGMA synchronous = FULL")
        fmt = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('format', 'format_version')").fetchall())
    except sqlite3.DatabaseError as e:
        advice = f"; `reid gallery repair {root}` rebuilds it" if (root / "versions").is_dir() else ""
        raise GalleryError(f"{path}: not a gallery database ({e}){advice}") from None
    if fmt.get("format") != FORMAT or fmt.get("format_version") != str(FORMAT_VERSION):
        conn.close()
        raise GalleryError(
            f"{path}: not a {FORMAT} database of format version {FORMAT_VERSION} (found {fmt or 'nothing'})"
        )
    if not readonly:
        try:
            migrate(conn)
        except sqlite3.Error as e:
            conn.close()
            raise GalleryError(f"{path}: cannot bring the database up to date ({e})") from None
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a database written by an older release up to this schema (a writer's connection):
    galleries made before references had an origin get the column, every old one a photo; those made
    before lane-camera renderings get the columns that link a rendering to its photo, and a photo's
    uniqueness then holds among photos only (a rendering shares its photo's sha256)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(refs)")}
    if "origin" not in columns:
        conn.execute("ALTER TABLE refs ADD COLUMN origin TEXT NOT NULL DEFAULT 'photo'")
    if "rendering_of" in columns:
        return
    conn.execute("BEGIN IMMEDIATE")
    if "rendering_of" in {row[1] for row in conn.execute("PRAGMA table_info(refs)")}:  # another writer did it
        conn.execute("ROLLBACK")
        return
    conn.execute("ALTER TABLE refs ADD COLUMN rendering_of INTEGER")
    conn.execute("ALTER TABLE refs ADD COLUMN view INTEGER")
    conn.execute("DROP INDEX refs_active_photo")
    conn.execute(
        "CREATE UNIQUE INDEX refs_active_photo ON refs(sha256) WHERE removed_version IS NULL AND rendering_of IS NULL"
    )
    conn.execute("CREATE INDEX refs_rendering_of ON refs(rendering_of)")
    conn.execute("COMMIT")


def origin_column(conn: sqlite3.Connection) -> str:
    """The SQL for a reference's origin: the column, or 'photo' in an old database opened read-only."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(refs)")}
    return "origin" if "origin" in columns else "'photo'"


def photos_only(conn: sqlite3.Connection) -> str:
    """The SQL condition for references an operator sees (photos and lane references, not their
    lane-camera renderings); always true in an old database opened read-only."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(refs)")}
    return "rendering_of IS NULL" if "rendering_of" in columns else "1"


def create(path: Path, meta: dict[str, str]) -> None:
    """Create a new database file with the schema and the gallery's settings."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript("BEGIN;" + SCHEMA + "COMMIT;")
        conn.execute("BEGIN")
        rows = {"format": FORMAT, "format_version": str(FORMAT_VERSION), **meta}
        conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", rows.items())
        conn.execute("COMMIT")
    finally:
        conn.close()


def get_meta(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def set_meta(conn: sqlite3.Connection, **values: str) -> None:
    conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", values.items())
