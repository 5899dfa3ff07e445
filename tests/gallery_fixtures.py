"""Shared fixtures of the gallery tests: one real gallery built from sample/grocery/train with the
shipped ONNX model, once per test session, and a private copy of it for each test."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from retail_reid.gallery.snapshot import read_current, stored_versions
from retail_reid.gallery.store import GalleryStore
from retail_reid.images import read_image
from retail_reid.models.runtime import OnnxEmbedder

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample" / "grocery"
TRAIN = SAMPLE / "train"
VAL = SAMPLE / "val"
SKUS = sorted(p.name for p in TRAIN.iterdir() if p.is_dir())

_cache: dict[str, object] = {}


@pytest.fixture(scope="session")
def embedder() -> OnnxEmbedder:
    if "embedder" not in _cache:
        _cache["embedder"] = OnnxEmbedder(threads=1)
    return _cache["embedder"]  # type: ignore[return-value]


@pytest.fixture(scope="session")
def built_gallery(tmp_path_factory: pytest.TempPathFactory, embedder: OnnxEmbedder) -> Path:
    """sample/grocery/train imported as version 2 (version 1 is the empty gallery). Never changed: copy it."""
    if "built" not in _cache:
        root = tmp_path_factory.mktemp("built") / "gallery"
        GalleryStore.init(root, operator="fixture")
        with GalleryStore.open(root) as store:
            store.import_folder(TRAIN, operator="fixture", embedder=embedder)
        _cache["built"] = root
    return _cache["built"]  # type: ignore[return-value]


@pytest.fixture
def gallery_dir(built_gallery: Path, tmp_path: Path) -> Path:
    """A copy of the built gallery that the test may change."""
    dest = tmp_path / "gallery"
    shutil.copytree(built_gallery, dest)
    return dest


def writer_env(**extra: str) -> dict[str, str]:
    """Environment for a writer subprocess: one thread, the repository importable."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REID_THREADS": "1", "PYTHONPATH": str(REPO), **extra}
    return env


def run_reid(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    """`reid ...` in a separate process (a real operator's command)."""
    return subprocess.run(
        [sys.executable, "-m", "retail_reid", *map(str, args)],
        cwd=REPO,
        env=env or writer_env(),
        capture_output=True,
        text=True,
        **kw,
    )


@pytest.fixture(scope="session")
def variant_model(tmp_path_factory: pytest.TempPathFactory, embedder: OnnxEmbedder) -> Path:
    """The shipped model with another doc string: the same embeddings, another fingerprint (as a
    retrained model would have). Appending a protobuf field (ModelProto.doc_string, field 6) keeps it valid."""
    path = tmp_path_factory.mktemp("models") / "variant.onnx"
    note = b"gallery tests: another model file"
    path.write_bytes(embedder.path.read_bytes() + bytes([6 << 3 | 2, len(note)]) + note)
    return path


@pytest.fixture(scope="session")
def val_queries(embedder: OnnxEmbedder) -> tuple[np.ndarray, list[str]]:
    """Embeddings of every photo of sample/grocery/val, and their SKUs."""
    paths = sorted(VAL.glob("*/*.jpg"))
    return embedder.embed([read_image(p) for p in paths]), [p.parent.name for p in paths]


def stored_refs(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """(SKU per reference, embeddings) straight from the database, for brute-force answers."""
    with closing(
        sqlite3.connect(root / "gallery.db")
    ) as conn:  # closed here: a lingering connection removes its WAL files later, mid-copy of the gallery
        rows = conn.execute("SELECT sku, embedding FROM refs WHERE removed_version IS NULL").fetchall()
    return np.array([r[0] for r in rows]), np.stack([np.frombuffer(r[1], np.float32) for r in rows])


def brute_force(
    query: np.ndarray, labels: np.ndarray, vectors: np.ndarray, scoring: str = "centroid"
) -> dict[str, float]:
    out = {}
    for sku in np.unique(labels):
        refs = vectors[labels == sku]
        if scoring == "centroid":
            mean = refs.astype(np.float64).sum(0)
            out[str(sku)] = float(mean @ query / np.linalg.norm(mean))
        else:
            out[str(sku)] = float((refs @ query).max())
    return out


def bits(a: int, b: int) -> int:
    """How many of two 64-bit perceptual hashes' bits differ."""
    return bin((a ^ b) & (2**64 - 1)).count("1")


def state(root: Path) -> tuple:
    """Everything a failed change must leave as it was: the published version, the version
    directories, the stored images, and the database's contents."""
    with GalleryStore.open(root, readonly=True) as store:
        rows = store.conn.execute("SELECT id, sku, sha256, removed_version FROM refs ORDER BY id").fetchall()
        products = store.conn.execute("SELECT * FROM products ORDER BY sku").fetchall()
        codes = store.conn.execute("SELECT * FROM barcodes ORDER BY code").fetchall()
        versions = store.conn.execute("SELECT version FROM versions").fetchall()
    images = sorted(str(p.relative_to(root)) for p in (root / "images").rglob("*") if p.is_file())
    return read_current(root), stored_versions(root), images, rows, products, codes, versions


def flip(path: Path, n: int = 400, at: float = 0.5) -> None:
    """Flip n bytes in the middle of a file, as a failing disk or a bad copy would."""
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    for i in range(start, min(start + n, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
