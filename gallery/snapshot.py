"""Published gallery versions: one immutable directory per version (index, row labels, catalogue,
manifest) and the CURRENT pointer that names the version readers use.

A version directory is written under a temporary name and renamed into place; CURRENT is replaced
atomically. A reader therefore sees a whole version or the previous one, never a mix, and it never
needs the database (a lane can read a gallery it is not allowed to write).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import TypeVar

import faiss
import numpy as np

from retail_reid.durable import fsync_dir, remove_tree, replace_atomically, write_durably
from retail_reid.gallery.catalog import Product
from retail_reid.gallery.errors import GalleryError, not_a_gallery
from retail_reid.gallery.index import EXACT, build_index, can_update, describe, factory_for, tune, update_index
from retail_reid.gallery.integrity import check_index_vectors
from retail_reid.gallery.photos import RefOrigin

T = TypeVar("T")

VERSIONS_DIR = "versions"
CURRENT = "CURRENT"
MANIFEST, INDEX, ROWS, CATALOG, REFS = "manifest.json", "index.faiss", "rows.npy", "catalog.json", "refs.json"
KINDS = "kinds.npy"  # (N,) int8 per row of rows.npy: its RowKind (matching scores the kinds apart)
LOADED = (INDEX, ROWS, CATALOG)  # what a reader loads; REFS (each reference's photo) is for repair and export
FORMAT = "retail-reid-gallery-version"
FORMAT_VERSION = 1


class RowKind(IntEnum):
    """What a row of a version is, for matching: each kind of a SKU is averaged into its own centroid."""

    PHOTO = 0
    RENDERING = 1  # a lane-camera rendering of a photo (gallery/renderings.py)
    LANE = 2  # a lane reference: a crop a lane saw (gallery/lane_suggestions.py)


def row_kinds(references: list[dict]) -> np.ndarray:
    """The RowKind of each reference as a version's REFS records it."""
    by_origin = {RefOrigin.RENDERING.value: RowKind.RENDERING, RefOrigin.LANE.value: RowKind.LANE}
    kinds = [
        RowKind.RENDERING if "rendering_of" in r else by_origin.get(r.get("origin", ""), RowKind.PHOTO)
        for r in references
    ]
    return np.array(kinds, np.int8)


def version_dir(root: Path, version: int) -> Path:
    return root / VERSIONS_DIR / f"{version:08d}"


def stored_versions(root: Path) -> list[int]:
    """Numbers of the complete version directories on disk, oldest first."""
    d = root / VERSIONS_DIR
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def read_current(root: Path) -> int:
    """The published version number (one small file read: cheap enough to poll)."""
    path = root / CURRENT
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise not_a_gallery(root, f"{CURRENT} file") from None
    except OSError as e:
        raise GalleryError(f"{path}: cannot read ({e.strerror or e})") from None
    if not text.strip().isdigit():
        raise GalleryError(
            f"{path}: expected a version number, found {text[:40]!r}; `reid gallery repair {root}` rewrites it"
        )
    return int(text)


def switch_current(root: Path, version: int) -> None:
    """Publish `version` (it must be written completely already)."""
    replace_atomically(root / CURRENT, f"{version}\n".encode(), "switch")


@dataclass(frozen=True)
class VersionContent:
    """What a writer publishes: the catalogue and the reference vectors with their labels."""

    version: int
    products: list[Product]  # sorted by SKU id
    images: dict[str, str]  # SKU -> a reference photo (path inside the gallery), for reports
    ref_ids: np.ndarray  # (N,) int64, the database ids of the references, ascending
    ref_skus: np.ndarray  # (N,) int32, reference -> position in `products`
    vectors: np.ndarray  # (N, D) float32, unit rows
    model_fingerprint: str
    model_path: str
    operator: str
    references: list[dict]  # per row of ref_ids: id, image, source, phash, added_version, origin, and for a
    # lane-camera rendering rendering_of (its photo's id) and view (what repair needs)
    keep_versions: int
    lane_camera: dict[str, object]  # the gallery's LaneProfile (gallery/renderings.py), as its renderings were made

    @property
    def photos(self) -> int:
        """References an operator sees (photos and lane references): the rest are renderings."""
        return sum("rendering_of" not in r for r in self.references)


def write_version(root: Path, content: VersionContent) -> Path:
    """Build the index and write the version directory durably, under its final name only when whole."""
    final = version_dir(root, content.version)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    remove_tree(tmp)
    remove_tree(final)  # a leftover of a writer that died before committing this number
    tmp.mkdir(parents=True)
    try:
        index, how = _index_for(root, content)
        rows = io.BytesIO()
        np.save(rows, np.stack([content.ref_ids.astype(np.int64), content.ref_skus.astype(np.int64)], axis=1))
        kinds = io.BytesIO()
        np.save(kinds, row_kinds(content.references))
        catalog = [{**p.to_dict(), "image": content.images.get(p.sku)} for p in content.products]
        files = {
            INDEX: faiss.serialize_index(index).tobytes(),
            ROWS: rows.getvalue(),
            CATALOG: json.dumps({"products": catalog}, ensure_ascii=False).encode(),
            REFS: json.dumps({"references": content.references}, ensure_ascii=False).encode(),
            KINDS: kinds.getvalue(),
        }
        for name, data in files.items():
            write_durably(tmp / name, data, "version")
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "version": content.version,
            "created": time.time(),
            "operator": content.operator,
            "model_fingerprint": content.model_fingerprint,
            "model_path": content.model_path,
            "embedding_dim": int(content.vectors.shape[1]),
            "index_factory": describe(index),
            "index_made": how,
            "refs": len(content.ref_ids),
            "photos": content.photos,
            "renderings": len(content.ref_ids) - content.photos,
            "lane_references": sum(r.get("origin") == RefOrigin.LANE.value for r in content.references),
            "lane_camera": content.lane_camera,
            "skus": len(content.products),
            "keep_versions": content.keep_versions,
            "files": {name: len(data) for name, data in files.items()},
            "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
        }
        write_durably(tmp / MANIFEST, json.dumps(manifest, indent=1).encode(), "version")
        fsync_dir(tmp)
        os.replace(tmp, final)
    except BaseException:
        remove_tree(tmp)
        raise
    fsync_dir(final.parent)
    return final


def _index_for(root: Path, content: VersionContent) -> tuple[faiss.Index, str]:
    """The new version's index, and how it was made: an IVF index is updated from the latest stored
    version's when that one is of the same model and its lists still fit the size."""
    n = len(content.ref_ids)
    if factory_for(n) != EXACT:
        older = [v for v in stored_versions(root) if v < content.version]
        previous = _stored_index(root, older[-1], content) if older else None
        if previous is not None and can_update(previous[0], n):
            return update_index(
                previous[0], previous[1], content.vectors, content.ref_ids
            ), f"updated from version {older[-1]}"
    return build_index(content.vectors, content.ref_ids, factory_for(n)), "built"


def _stored_index(root: Path, version: int, content: VersionContent) -> tuple[faiss.Index, np.ndarray] | None:
    """A stored version's index and reference ids, if it can be the base of `content`'s index."""
    d = version_dir(root, version)
    try:
        manifest = _read_manifest(d, version)
        if (
            manifest["model_fingerprint"] != content.model_fingerprint
            or manifest["embedding_dim"] != content.vectors.shape[1]
        ):
            return None
        data = {name: (d / name).read_bytes() for name in (INDEX, ROWS)}
        if any(checksum_problem(manifest, name, data[name]) for name in data):
            return None
        return faiss.deserialize_index(np.frombuffer(data[INDEX], np.uint8)), np.load(io.BytesIO(data[ROWS]))[:, 0]
    except (GalleryError, OSError, RuntimeError, ValueError, KeyError):
        return None  # damaged or pruned meanwhile: build afresh


@dataclass(frozen=True)
class Snapshot:
    """One published version, loaded into memory and never changed: queries use it without locks."""

    root: Path
    version: int
    manifest: dict
    products: dict[str, Product]
    skus: list[str]  # position -> SKU id, as references refer to them
    position: dict[str, int]  # SKU id -> position
    images: dict[str, str]
    barcodes: dict[str, str]  # barcode -> SKU
    index: faiss.Index  # its ids are the references' database ids
    ref_ids: np.ndarray  # (N,) int64, ascending
    ref_sku: np.ndarray  # (N,) int64, SKU position of each reference in ref_ids
    sku_refs: list[np.ndarray]  # SKU position -> the ids of its references
    kinds: np.ndarray  # (N,) int8, per row of ref_ids: its RowKind
    _derived: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def model_fingerprint(self) -> str:
        return self.manifest["model_fingerprint"]

    def derived(self, name: str, make: Callable[[Snapshot], T]) -> T:
        """What `make` computes from this version, computed once (the version never changes)."""
        if name not in self._derived:
            self._derived[name] = make(self)
        return self._derived[name]

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Positions in `ref_ids` of these reference ids (which must be in the version)."""
        return np.searchsorted(self.ref_ids, ids)

    @classmethod
    def load(cls, root: Path, version: int) -> Snapshot:
        """Read the version's files into memory (FileNotFoundError if it is pruned meanwhile) and check them."""
        d = version_dir(root, version)
        manifest = _read_manifest(d, version)
        data = {name: _read_file(d, name) for name in LOADED}
        for name in LOADED:
            if problem := checksum_problem(manifest, name, data[name]):
                raise GalleryError(f"{d / name}: {problem}; version {version} is damaged")
        try:
            index = faiss.deserialize_index(np.frombuffer(data[INDEX], np.uint8))
            rows = np.load(io.BytesIO(data[ROWS]), allow_pickle=False)
            raw = json.loads(data[CATALOG])
        except (RuntimeError, ValueError) as e:
            raise GalleryError(f"{d}: damaged version files ({str(e).splitlines()[0]})") from None
        tune(index)
        products = [Product.from_dict(p, f"{d / CATALOG}: product {i}") for i, p in enumerate(raw["products"])]
        n, dim = manifest["refs"], manifest["embedding_dim"]
        if index.ntotal != n or index.d != dim or rows.shape != (n, 2):
            raise GalleryError(
                f"{d}: index ({index.ntotal}x{index.d}), rows {rows.shape} and manifest ({n}x{dim}) disagree"
            )
        if n and not (rows[:, 1].min() >= 0 and rows[:, 1].max() < len(products) and np.all(np.diff(rows[:, 0]) > 0)):
            raise GalleryError(
                f"{d / ROWS}: reference ids out of order, or SKUs outside the catalogue of {len(products)}"
            )
        ref_ids, ref_sku = rows[:, 0].copy(), rows[:, 1].copy()
        check_index_vectors(index, ref_ids, f"{d / INDEX}")
        order = np.argsort(ref_sku, kind="stable")
        bounds = np.searchsorted(ref_sku[order], np.arange(len(products) + 1))
        return cls(
            root=root,
            version=version,
            manifest=manifest,
            products={p.sku: p for p in products},
            skus=[p.sku for p in products],
            position={p.sku: i for i, p in enumerate(products)},
            images={p["sku"]: p["image"] for p in raw["products"] if p.get("image")},
            barcodes={b: p.sku for p in products for b in p.barcodes},
            index=index,
            ref_ids=ref_ids,
            ref_sku=ref_sku,
            sku_refs=[ref_ids[order[bounds[i] : bounds[i + 1]]] for i in range(len(products))],
            kinds=_kinds_of_rows(d, manifest, n),
        )


def _kinds_of_rows(d: Path, manifest: dict, n: int) -> np.ndarray:
    """Each row's RowKind: KINDS, or for a version written before it existed, what its REFS say."""
    name = KINDS if KINDS in manifest["files"] else REFS
    data = _read_file(d, name)
    if problem := checksum_problem(manifest, name, data):
        raise GalleryError(f"{d / name}: {problem}; version {manifest['version']} is damaged")
    try:
        kinds = (
            np.load(io.BytesIO(data), allow_pickle=False)
            if name == KINDS
            else row_kinds(json.loads(data)["references"])
        )
    except (ValueError, KeyError, TypeError) as e:
        raise GalleryError(f"{d / name}: damaged ({str(e).splitlines()[0]})") from None
    if kinds.shape != (n,) or kinds.dtype != np.int8 or (n and not 0 <= kinds.min() <= kinds.max() < len(RowKind)):
        raise GalleryError(f"{d / name}: gives kinds of {kinds.shape} rows where the version has {n}; it is damaged")
    return kinds


def _read_file(d: Path, name: str) -> bytes:
    """A version's file; one missing from a directory that exists is damage, not a prune (which renames
    the whole directory away), so only the latter stays a FileNotFoundError."""
    try:
        return (d / name).read_bytes()
    except FileNotFoundError:
        if d.is_dir():
            raise GalleryError(f"{d / name}: missing; version {int(d.name)} is damaged") from None
        raise


def checksum_problem(manifest: dict, name: str, data: bytes) -> str | None:
    """Why a version's file does not match its manifest (size, and sha256 where the manifest has one)."""
    size = manifest["files"].get(name)
    if size is not None and len(data) != size:
        return f"is {len(data)} bytes, the manifest says {size}"
    digest = manifest.get("sha256", {}).get(name)
    if digest is not None and hashlib.sha256(data).hexdigest() != digest:
        return "does not match its sha256 in the manifest"
    return None


def _read_manifest(d: Path, version: int) -> dict:
    path = d / MANIFEST
    try:
        manifest = json.loads(path.read_bytes())
    except FileNotFoundError:
        if d.is_dir():
            raise GalleryError(f"{path}: missing; version {version} is damaged") from None
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GalleryError(f"{path}: not valid JSON ({e}); version {version} is damaged") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or manifest.get("format_version") != FORMAT_VERSION
    ):
        raise GalleryError(f"{path}: not a {FORMAT} manifest of format version {FORMAT_VERSION}")
    fields = {"files": dict, "sha256": dict, "refs": int, "embedding_dim": int, "model_fingerprint": str}
    wrong = [k for k, kind in fields.items() if not isinstance(manifest.get(k, {} if k == "sha256" else None), kind)]
    if wrong:
        raise GalleryError(
            f"{path}: field {wrong[0]!r} is missing or not a {fields[wrong[0]].__name__}; version {version} is damaged"
        )
    if manifest.get("version") != version:
        raise GalleryError(
            f"{path}: says version {manifest.get('version')!r}, but the directory is for version {version}"
        )
    return manifest


def read_manifest(root: Path, version: int) -> dict:
    """The manifest of a stored version (model, size, index type) without loading the version."""
    try:
        return _read_manifest(version_dir(root, version), version)
    except FileNotFoundError:
        raise GalleryError(f"{root}: version {version} is not stored (old versions are pruned)") from None
