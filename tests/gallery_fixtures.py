"""Shared fixtures of the gallery tests: one real gallery built from sample/grocery/train with the
shipped ONNX model, once per test session, and a private copy of it for each test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from retail_reid.gallery.store import GalleryStore
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
