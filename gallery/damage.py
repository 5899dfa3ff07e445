"""Finding what in a gallery is damaged: every stored version's files against their checksums, every
stored photo against the sha256 it is named by, the database's own consistency and its reference
vectors, and the CURRENT pointer. `reid gallery check` reports it; `reid gallery repair` starts from it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retail_reid.gallery import db
from retail_reid.gallery.errors import GalleryError
from retail_reid.gallery.image_store import IMAGES_DIR
from retail_reid.gallery.integrity import bad_rows, image_problem
from retail_reid.gallery.snapshot import (
    REFS,
    Snapshot,
    checksum_problem,
    read_current,
    stored_versions,
    version_dir,
)


@dataclass
class Damage:
    """What is damaged (one line each, naming the file), and what could not be verified."""

    damaged: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    current: int | None = None  # the version CURRENT names, if it can be read
    database_ok: bool = False  # readable, consistent, and every reference vector whole
    database_readable: bool = False  # readable and consistent (SQLite's quick_check)
    good_versions: list[int] = field(default_factory=list)  # stored and whole, oldest first
    bad_versions: dict[int, str] = field(default_factory=dict)  # version -> why
    bad_images: dict[str, str] = field(default_factory=dict)  # image path in the gallery -> why
    bad_embeddings: list[int] = field(default_factory=list)  # reference ids whose stored vector is damaged

    def to_dict(self) -> dict:
        return {"damaged": self.damaged, "unverified": self.unverified}


def find_damage(root: Path) -> Damage:
    """Verify everything the gallery at `root` stores (reads every stored version and photo)."""
    found = Damage()
    try:
        found.current = read_current(root)
    except GalleryError as e:
        found.damaged.append(str(e))
    refs = _check_database(root, found)
    for version in stored_versions(root):
        problem, checksummed = _version_problem(root, version)
        if problem is None:
            found.good_versions.append(version)
            if not checksummed:
                found.unverified.append(
                    f"{version_dir(root, version)}: written before checksums (sizes and vectors checked only)"
                )
        else:
            found.bad_versions[version] = problem
            found.damaged.append(problem)
    if (
        found.current is not None
        and found.current not in found.good_versions
        and found.current not in found.bad_versions
    ):
        found.damaged.append(f"{root}: CURRENT names version {found.current}, which is not stored")
    images = root / IMAGES_DIR
    on_disk = {str(p.relative_to(root)) for p in images.rglob("*") if p.is_file() and not p.name.startswith(".")}
    for relpath in sorted(on_disk | set(refs)):
        if problem := image_problem(root / relpath):
            found.bad_images[relpath] = problem
            used = f" (reference {', '.join(map(str, refs[relpath][:3]))})" if relpath in refs else ""
            found.damaged.append(f"{root / relpath}: stored photo {problem}{used}")
    return found


def _check_database(root: Path, found: Damage) -> dict[str, list[int]]:
    """Check gallery.db; returns each stored photo's reference ids (empty if the database is unreadable)."""
    path = root / db.DB_NAME
    refs: dict[str, list[int]] = {}
    try:
        conn = db.connect(root, readonly=True)
    except GalleryError as e:
        found.damaged.append(str(e))
        return refs
    try:
        result = [r[0] for r in conn.execute("PRAGMA quick_check")]
        if result != ["ok"]:
            found.damaged.append(f"{path}: damaged ({'; '.join(result[:3])})")
            return refs
        dim = int(db.get_meta(conn)["embedding_dim"])
        rows = conn.execute("SELECT id, image, embedding FROM refs ORDER BY id").fetchall()
    except (sqlite3.DatabaseError, KeyError, ValueError) as e:
        found.damaged.append(f"{path}: damaged ({e})")
        return refs
    finally:
        conn.close()
    found.database_ok = found.database_readable = True
    for ref_id, image, _ in rows:
        refs.setdefault(image, []).append(ref_id)
    sized = [(i, e) for i, _, e in rows if len(e) == 4 * dim]
    found.bad_embeddings = sorted({i for i, _, e in rows if len(e) != 4 * dim})
    if sized:
        vectors = np.frombuffer(b"".join(e for _, e in sized), np.float32).reshape(len(sized), dim)
        found.bad_embeddings = sorted({*found.bad_embeddings, *(sized[r][0] for r in bad_rows(vectors))})
    if found.bad_embeddings:
        found.database_ok = False
        found.damaged.append(
            f"{path}: {len(found.bad_embeddings)} reference vectors are not finite unit vectors "
            f"(references {', '.join(map(str, found.bad_embeddings[:5]))})"
        )
    return refs


def _version_problem(root: Path, version: int) -> tuple[str | None, bool]:
    """Why a stored version cannot be used (None if it loads and every file matches its checksum), and
    whether its manifest has checksums at all."""
    try:
        snap = Snapshot.load(root, version)
        refs = version_dir(root, version) / REFS
        if refs.exists() or REFS in snap.manifest["files"]:
            problem = checksum_problem(snap.manifest, REFS, refs.read_bytes())
            if problem:
                return f"{refs}: {problem}; version {version} is damaged", True
    except (GalleryError, OSError) as e:
        return str(e), True
    return None, "sha256" in snap.manifest
