"""`reid gallery repair`: rebuild what can be rebuilt from the immutable versions and the stored photos,
say what cannot, and never destroy evidence (a damaged file is moved into DIR/damaged/, not deleted).

What it mends, under the writer lock:
- damaged version directories and stored photos are set aside (`check` says which);
- a missing, unreadable or damaged gallery.db is rebuilt from the stored versions (their catalogue,
  reference vectors and refs.json, which links each reference to its photo); the audit log and the
  history of versions no longer stored cannot be recovered;
- reference vectors damaged in the database are restored from the newest whole version holding them;
- a missing or wrong CURRENT is pointed at the newest whole version (the database's last version is
  rewritten from the database first if its directory was damaged);
- an older damaged version is rebuilt from the database: its references are those its own files
  still name (refs.json or rows.npy, where they pass their checksums) or else those the database's
  history places in it (when their number is the one the database recorded), their vectors are the
  database's (when the version used the gallery's current model), its catalogue is its own
  catalog.json where whole, else the database's. What cannot be rebuilt is said, and its damaged
  copy stays in DIR/damaged/, where `rollback` finds it and says so.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retail_reid.durable import fsync_dir
from retail_reid.gallery import db
from retail_reid.gallery.catalog import Product
from retail_reid.gallery.damage import Damage, find_damage
from retail_reid.gallery.errors import GalleryError
from retail_reid.gallery.image_store import IMAGES_DIR
from retail_reid.gallery.index import reference_vectors
from retail_reid.gallery.integrity import set_aside
from retail_reid.gallery.renderings import META_KEY
from retail_reid.gallery.snapshot import (
    CATALOG,
    MANIFEST,
    REFS,
    ROWS,
    VERSIONS_DIR,
    Snapshot,
    VersionContent,
    checksum_problem,
    switch_current,
    version_dir,
    write_version,
)
from retail_reid.gallery.store import DEFAULT_KEEP  # versions kept, when the database that said so is lost
from retail_reid.gallery.writer import REF_COLUMNS, VersionWriter, failure, operator_name, writer_lock


@dataclass
class RepairResult:
    done: list[str] = field(default_factory=list)  # what was mended or set aside
    cannot: list[str] = field(default_factory=list)  # what could not be rebuilt, and what to do about it


def repair(root: str | Path, operator: str | None = None) -> RepairResult:
    """Mend the gallery at `root` as far as the stored versions and photos allow."""
    root = Path(root)
    operator = operator_name(operator)
    if not root.is_dir():
        raise GalleryError(f"{root}: no such gallery directory")
    if not (root / VERSIONS_DIR).is_dir() and not (root / db.DB_NAME).exists():
        raise GalleryError(f"{root}: not a gallery (no {VERSIONS_DIR}/ and no {db.DB_NAME}); nothing to repair")
    result = RepairResult()
    for sub in (VERSIONS_DIR, IMAGES_DIR):
        (root / sub).mkdir(exist_ok=True)
    with writer_lock(root):
        try:
            _repair_locked(root, operator, result)
        except (OSError, sqlite3.Error) as e:
            raise GalleryError(f"{root}: repair stopped ({failure(e)}); what it did so far: {result.done}") from None
    return result


def _repair_locked(root: Path, operator: str, result: RepairResult) -> None:
    damage = find_damage(root)
    moved: dict[int, Path] = {}  # damaged version -> its copy in DIR/damaged/
    for version, why in sorted(damage.bad_versions.items()):
        moved[version] = set_aside(root, version_dir(root, version))
        result.done.append(f"version {version} is damaged ({why}): moved to {moved[version]}")
    for relpath, why in sorted(damage.bad_images.items()):
        if (root / relpath).exists():
            result.done.append(f"{relpath} {why}: moved to {set_aside(root, root / relpath)}")
    if not damage.database_ok:
        _mend_database(root, damage, operator, result)
    try:
        conn = db.connect(root)
    except GalleryError as e:
        result.cannot.append(str(e))
        _point_current_at_newest(root, damage, result)
        return
    with VersionWriter(root, conn) as store:
        last = store._last_version()
        if last not in damage.good_versions:
            try:
                write_version(root, store._content(last, store._version_operator(last)))
            except GalleryError as e:  # the database's contents are damaged too
                result.cannot.append(f"version {last} cannot be rewritten from the database: {e}")
                _point_current_at_newest(root, damage, result)
                return
            result.done.append(f"version {last}, the database's last, rewritten from the database")
        for version in sorted(v for v in moved if v != last):
            _rebuild_old_version(store, version, moved[version], result)
        if damage.current != last:
            switch_current(root, last)
            was = "missing or unreadable" if damage.current is None else f"version {damage.current}"
            result.done.append(f"CURRENT set to version {last} (was {was})")
        missing = conn.execute(
            "SELECT id, sku, image FROM refs WHERE removed_version IS NULL AND rendering_of IS NULL ORDER BY id"
        ).fetchall()
        for ref_id, sku, image in missing:
            if not (root / image).is_file():
                result.cannot.append(
                    f"reference {ref_id} of SKU {sku!r}: its photo {image} is gone; matching still works (its vector "
                    f"is stored), `rebuild` and `export` need it: `reid gallery remove {root} --ref {ref_id}` and add "
                    "the photo again"
                )


def _intact(copy: Path, name: str) -> bytes | None:
    """A file of a damaged version's copy, if it is there and matches the copy's own manifest."""
    try:
        manifest = json.loads((copy / MANIFEST).read_bytes())
        data = (copy / name).read_bytes()
        if not isinstance(manifest, dict) or manifest.get("sha256", {}).get(name) is None:
            return None
        return None if checksum_problem(manifest, name, data) else data
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return None


def _members(store: VersionWriter, version: int, copy: Path, expected: int) -> tuple[list[int], str] | str:
    """The reference ids of `version` and where they came from, or why they cannot be known."""
    if (refs := _intact(copy, REFS)) is not None:
        return sorted(int(r["id"]) for r in json.loads(refs)["references"]), REFS
    if (rows := _intact(copy, ROWS)) is not None:
        return sorted(int(i) for i in np.load(io.BytesIO(rows), allow_pickle=False)[:, 0]), ROWS
    ids = [
        i
        for (i,) in store.conn.execute(
            "SELECT id FROM refs WHERE added_version <= ? AND (removed_version IS NULL OR removed_version > ?) "
            "ORDER BY id",
            (version, version),
        )
    ]
    if len(ids) != expected:
        return (
            f"its refs.json and rows.npy are damaged, and the database's history places {len(ids)} references in it "
            f"where it recorded {expected} (a rollback re-used some)"
        )
    return ids, "the database's history"


def _old_content(store: VersionWriter, version: int, copy: Path) -> tuple[VersionContent, str] | str:
    """What `version` held, rebuilt from the database and the intact files of its damaged copy; or why not."""
    row = store.conn.execute(
        "SELECT operator, model_fingerprint, n_refs FROM versions WHERE version = ?", (version,)
    ).fetchone()
    if row is None:
        return "gallery.db has no record of it"
    operator, fingerprint, n_refs = row
    meta = store.meta
    if fingerprint != meta["model_fingerprint"]:
        return (
            f"it was built with another model ({fingerprint[:12]}); gallery.db holds the vectors of the current "
            f"one ({meta['model_fingerprint'][:12]}) only"
        )
    members = _members(store, version, copy, n_refs)
    if isinstance(members, str):
        return members
    ids, source = members
    marks = ",".join("?" * len(ids))
    rows = store.conn.execute(f"SELECT {REF_COLUMNS} FROM refs WHERE id IN ({marks}) ORDER BY id", ids).fetchall()
    if len(rows) != len(ids):
        return f"{len(ids) - len(rows)} of its references are not in gallery.db"
    if (catalog := _intact(copy, CATALOG)) is not None:
        products = [Product.from_dict(p, f"{copy / CATALOG}") for p in json.loads(catalog)["products"]]
        source += f" and its {CATALOG}"
    else:
        skus = sorted({r[1] for r in rows})
        current = {p.product.sku: p.product for p in store.products()}  # with barcodes: the active products'
        retired = {
            sku: Product(sku=sku, name=name, category=category, price=price)
            for sku, name, category, price in store.conn.execute("SELECT sku, name, category, price FROM products")
        }
        products = [current.get(sku) or retired[sku] for sku in skus]
        source += "; its catalogue (names, barcodes) as gallery.db holds it now"
    if not {r[1] for r in rows} <= {p.sku for p in products}:
        return f"its {CATALOG} does not list every product its references belong to"
    try:
        content = store._content_of(version, operator, products, rows)
    except GalleryError as e:
        return str(e)
    return content, source


def _rebuild_old_version(store: VersionWriter, version: int, copy: Path, result: RepairResult) -> None:
    """Write an older damaged version again, or say why it cannot be (its damaged copy stays set aside)."""
    rebuilt = _old_content(store, version, copy)
    if isinstance(rebuilt, str):
        result.cannot.append(
            f"version {version} cannot be rebuilt: {rebuilt}; it cannot be rolled back to (its damaged copy is {copy})"
        )
        return
    content, source = rebuilt
    write_version(store.root, content)
    result.done.append(f"version {version} rebuilt from the database ({source})")


def _mend_database(root: Path, damage: Damage, operator: str, result: RepairResult) -> None:
    path = root / db.DB_NAME
    if damage.database_readable:  # only some reference vectors are damaged
        _restore_embeddings(root, damage, result)
        return
    usable = [v for v in damage.good_versions if (version_dir(root, v) / REFS).is_file()]
    if not usable:
        result.cannot.append(
            f"{path}: cannot be rebuilt: no whole stored version records its references' photos (versions written "
            "before this release lack refs.json); the damaged database is left where it is"
        )
        return
    unusable = sorted(set(damage.good_versions) - set(usable))
    tmp = root / f".{db.DB_NAME}.repair-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    _rebuild_database(tmp, root, usable, operator)
    for name in (db.DB_NAME, f"{db.DB_NAME}-wal", f"{db.DB_NAME}-shm"):
        if (root / name).exists():
            result.done.append(f"{name}: moved to {set_aside(root, root / name)}")
    os.replace(tmp, path)
    fsync_dir(root)
    result.done.append(
        f"{db.DB_NAME} rebuilt from versions {', '.join(map(str, usable))} (the audit log, and the history of "
        "versions no longer stored, went with the old database)"
    )
    if unusable:
        result.cannot.append(
            f"versions {', '.join(map(str, unusable))} predate refs.json (their references cannot be linked to "
            "their photos) and were left out of the rebuilt database; they cannot be rolled back to"
        )


def _restore_embeddings(root: Path, damage: Damage, result: RepairResult) -> None:
    """Put back damaged reference vectors from the newest whole version (of the same model) holding each."""
    with contextlib.closing(db.connect(root)) as conn:
        fingerprint = db.get_meta(conn)["model_fingerprint"]
        todo = set(damage.bad_embeddings)
        conn.execute("BEGIN IMMEDIATE")
        for version in reversed(damage.good_versions):
            snap = Snapshot.load(root, version)
            found = np.intersect1d(snap.ref_ids, np.array(sorted(todo), np.int64))
            if snap.model_fingerprint != fingerprint or not len(found):
                continue
            for ref_id, vec in zip(found.tolist(), reference_vectors(snap.index, found), strict=True):
                conn.execute("UPDATE refs SET embedding = ? WHERE id = ?", (vec.astype(np.float32).tobytes(), ref_id))
            todo -= set(found.tolist())
        conn.execute("COMMIT")
    restored = len(damage.bad_embeddings) - len(todo)
    if restored:
        result.done.append(f"{restored} damaged reference vectors restored from the stored versions")
    for ref_id in sorted(todo):
        result.cannot.append(
            f"reference {ref_id}: its damaged vector is in no whole stored version; `reid gallery remove {root} "
            f"--ref {ref_id}` and add its photo again"
        )


def _rebuild_database(path: Path, root: Path, versions: list[int], operator: str) -> None:
    """A new database holding what the stored versions hold, the newest as the gallery's contents."""
    snaps = {v: Snapshot.load(root, v) for v in versions}
    latest = snaps[versions[-1]]
    m = latest.manifest
    db.create(
        path,
        {
            "model_fingerprint": m["model_fingerprint"],
            "model_path": m["model_path"],
            "embedding_dim": str(m["embedding_dim"]),
            "keep_versions": str(m.get("keep_versions", DEFAULT_KEEP)),
            "created": str(time.time()),
            # versions made before lane-camera profiles hold no renderings: the gallery's profile stays off
            **({META_KEY: json.dumps(m[META_KEY], sort_keys=True)} if META_KEY in m else {}),
        },
    )
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        refs: dict[int, tuple] = {}
        seen_in: dict[int, list[int]] = {}
        for v in versions:
            snap = snaps[v]
            for p in snap.products.values():
                conn.execute(
                    "INSERT INTO products (sku, name, category, price, active) VALUES (?, ?, ?, ?, 0) ON CONFLICT(sku) "
                    "DO UPDATE SET name = excluded.name, category = excluded.category, price = excluded.price",
                    (p.sku, p.name, p.category, p.price),
                )
            listed = json.loads((version_dir(root, v) / REFS).read_bytes())["references"]
            vectors = reference_vectors(snap.index, snap.ref_ids)
            for row, (info, vec) in enumerate(zip(listed, vectors, strict=True)):
                sku = snap.skus[int(snap.ref_sku[row])]
                refs[info["id"]] = (sku, info, vec.astype(np.float32).tobytes())
                seen_in.setdefault(info["id"], []).append(v)
        conn.executemany("UPDATE products SET active = 1 WHERE sku = ?", [(sku,) for sku in latest.products])
        conn.executemany(
            "INSERT INTO barcodes (code, sku) VALUES (?, ?)",
            [(c, p.sku) for p in latest.products.values() for c in p.barcodes],
        )
        for ref_id, (sku, info, emb) in sorted(refs.items()):
            last_seen = seen_in[ref_id][-1]
            later = [v for v in versions if v > last_seen]
            conn.execute(
                "INSERT INTO refs (id, sku, image, sha256, phash, source, origin, rendering_of, view, added_version, "
                "removed_version, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ref_id,
                    sku,
                    info["image"],
                    Path(info["image"]).name.split(".", 1)[0],
                    info["phash"],
                    info["source"],
                    info.get("origin", "photo"),  # refs.json written before origins were recorded: photos
                    info.get("rendering_of"),
                    info.get("view"),
                    info["added_version"],
                    later[0] if later else None,
                    emb,
                ),
            )
        now = time.time()
        for v in versions:
            mv = snaps[v].manifest
            conn.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    v,
                    mv["created"],
                    mv["operator"],
                    "recovered",
                    f"recovered by repair from {version_dir(root, v)}",
                    mv["model_fingerprint"],
                    mv.get("photos", mv["refs"]),
                    mv["skus"],
                ),
            )
        conn.execute(
            "INSERT INTO audit (version, at, operator, action, sku, detail) VALUES (?, ?, ?, 'repair', NULL, ?)",
            (versions[-1], now, operator, f"database rebuilt from stored versions {', '.join(map(str, versions))}"),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def _point_current_at_newest(root: Path, damage: Damage, result: RepairResult) -> None:
    """Without a usable database, readers can still follow the newest whole version."""
    if not damage.good_versions:
        result.cannot.append(f"{root}: no whole version is stored; CURRENT cannot point anywhere")
        return
    newest = damage.good_versions[-1]
    if damage.current != newest:
        switch_current(root, newest)
        result.done.append(f"CURRENT set to version {newest}, the newest whole version")
