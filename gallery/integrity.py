"""Checksums and sanity checks of what a gallery stores, applied wherever it is loaded or copied.

Every file of a version is listed with its sha256 in the version's manifest; every stored photo is
named by its sha256. A flipped byte therefore shows as a checksum mismatch, and reference vectors
that are not finite unit vectors are refused even where no checksum covers them (a damaged database
row, a version written before checksums).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import faiss
import numpy as np

from retail_reid.durable import fsync_dir
from retail_reid.gallery.errors import GalleryError
from retail_reid.gallery.index import reference_vectors

CHUNK = 1 << 20  # bytes hashed at a time
VECTOR_CHUNK = 65_536  # reference vectors checked at a time
UNIT_TOLERANCE = 1e-3  # |norm - 1| allowed (float32 rounding is about 1e-7)
DAMAGED_DIR = "damaged"  # where repair and the writer set aside files that fail their checks


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in chunks (photos and indexes can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def bad_rows(vectors: np.ndarray) -> np.ndarray:
    """Indices of the rows that are not finite unit vectors."""
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    return np.flatnonzero(~np.isfinite(norms) | (np.abs(norms - 1.0) > UNIT_TOLERANCE))


def check_unit_rows(vectors: np.ndarray, ids: np.ndarray, where: str) -> None:
    """Refuse vectors (row i of reference ids[i]) that are not finite unit vectors."""
    bad = bad_rows(vectors)
    if len(bad):
        norm = float(np.linalg.norm(vectors[bad[0]].astype(np.float64)))
        raise GalleryError(
            f"{where}: {len(bad)} reference vectors are not finite unit vectors (reference {int(ids[bad[0]])} has "
            f"norm {norm:.4g}); the data is damaged"
        )


def check_index_vectors(index: faiss.Index, ids: np.ndarray, where: str) -> None:
    """check_unit_rows over an index's stored vectors, a chunk at a time (memory stays small)."""
    for start in range(0, len(ids), VECTOR_CHUNK):
        chunk = ids[start : start + VECTOR_CHUNK]
        check_unit_rows(reference_vectors(index, chunk), chunk, where)


def image_problem(path: Path) -> str | None:
    """Why a stored photo (named <sha256>.<ext>) cannot be trusted, or None if its bytes are its name's."""
    try:
        digest = file_sha256(path)
    except FileNotFoundError:
        return "is missing"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if digest != path.name.split(".", 1)[0]:
        return f"is damaged (its sha256 is {digest[:12]}..., its name says {path.name[:12]}...)"
    return None


def set_aside(root: Path, path: Path) -> Path:
    """Move a damaged file or directory into DIR/damaged/ (kept as evidence, never deleted); returns where."""
    dest = root / DAMAGED_DIR / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}" / path.relative_to(root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, dest)
    fsync_dir(path.parent)
    return dest
