"""Gallery bundles: one tar archive that carries a gallery's published version to another gallery
(a central gallery deployed to stores, a backup restored).

Members, in this order: `manifest.json` (format, model fingerprint, catalogue, references, and the
size and sha256 of every other member), `embeddings.npy` (float32, one row per reference), and the
photos under `images/<2 hex>/<sha256>.<ext>`. Import trusts nothing in the archive: members must be
regular files with exactly the names and sizes the manifest lists (no absolute paths, no `..`, no
links, no devices, nothing oversized), each checksum must match, the model must be the gallery's,
and every photo must decode; only then does the gallery change, as one new version.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np

from retail_reid.bounded_json import parse_object
from retail_reid.durable import fsync_dir, temp_name
from retail_reid.gallery.archive import DEFAULT_LIMITS, BoundedStream, BundleLimits, open_archive, stream_bytes
from retail_reid.gallery.catalog import Product, check_sku
from retail_reid.gallery.errors import GalleryError
from retail_reid.gallery.index import reference_vectors
from retail_reid.gallery.integrity import image_problem
from retail_reid.gallery.matching import load_current
from retail_reid.gallery.photos import Photo, perceptual_hash
from retail_reid.gallery.renderings import embed_renderings
from retail_reid.gallery.store import ChangeResult, GalleryStore
from retail_reid.images import ImageError, decode_image
from retail_reid.models.runtime import OnnxEmbedder

FORMAT = "retail-reid-gallery-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
EMBEDDINGS = "embeddings.npy"
IMAGE_NAME = re.compile(r"images/([0-9a-f]{2})/([0-9a-f]{64})\.(jpg|png|bmp|tif|webp|img)")
CHUNK = 1 << 20  # bytes copied at a time


@dataclass(frozen=True)
class BundleInfo:
    path: Path
    version: int  # the gallery version it holds
    refs: int
    skus: int
    bytes: int


def export_bundle(root: str | Path, bundle: str | Path) -> BundleInfo:
    """Write the published version of the gallery at `root` to `bundle` (complete, or not at all)."""
    root, bundle = Path(root), Path(bundle)
    snap = load_current(root)
    with GalleryStore.open(root, readonly=True) as store:
        info = {
            r[0]: r[1:] for r in store.conn.execute("SELECT id, sku, image, sha256, source, rendering_of FROM refs")
        }
    unknown = [i for i in snap.ref_ids.tolist() if i not in info]
    if unknown:
        raise GalleryError(
            f"{root}: version {snap.version} has {len(unknown)} references the database does not know (e.g. "
            f"{unknown[0]}); nothing exported (`reid gallery repair {root}` rebuilds the database)"
        )
    # the photos only: lane-camera renderings are made again by the importing gallery, under its own profile
    photo_ids = np.array([i for i in snap.ref_ids.tolist() if info[i][4] is None], np.int64)
    refs = []
    for ref_id in photo_ids.tolist():
        sku, image, sha, source, _ = info[ref_id]
        refs.append({"sku": sku, "image": image, "sha256": sha, "source": source})
    emb = io.BytesIO()
    np.save(emb, reference_vectors(snap.index, photo_ids))
    files: dict[str, dict] = {
        EMBEDDINGS: {"size": emb.getbuffer().nbytes, "sha256": hashlib.sha256(emb.getbuffer()).hexdigest()}
    }
    for ref in refs:
        path = root / ref["image"]
        if ref["image"] not in files and (problem := image_problem(path)):
            raise GalleryError(
                f"{path}: the stored photo of SKU {ref['sku']!r} {problem}; nothing exported "
                f"(`reid gallery check {root}` lists what is damaged)"
            )
        files[ref["image"]] = {"size": path.stat().st_size, "sha256": ref["sha256"]}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": time.time(),
        "gallery_version": snap.version,
        "model_fingerprint": snap.model_fingerprint,
        "model_path": snap.manifest["model_path"],
        "embedding_dim": int(snap.index.d),
        "products": [snap.products[sku].to_dict() for sku in snap.skus],
        "references": refs,
        "files": files,
    }
    data = json.dumps(manifest, ensure_ascii=False, indent=1).encode()
    if not bundle.parent.is_dir():
        raise GalleryError(f"{bundle.parent}: no such directory for the bundle")
    tmp = temp_name(bundle)
    try:
        with open(tmp, "wb") as f:
            with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
                _add(tar, MANIFEST, io.BytesIO(data), len(data))
                emb.seek(0)
                _add(tar, EMBEDDINGS, emb, files[EMBEDDINGS]["size"])
                for image, meta in files.items():
                    if image != EMBEDDINGS:
                        with open(root / image, "rb") as src:
                            _add(tar, image, src, meta["size"])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, bundle)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise GalleryError(f"{bundle}: cannot write the bundle ({e.strerror or e})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(bundle.parent)
    return BundleInfo(bundle, snap.version, len(refs), len(snap.skus), bundle.stat().st_size)


def import_bundle(
    root: str | Path,
    bundle: str | Path,
    operator: str | None = None,
    limits: BundleLimits = DEFAULT_LIMITS,
    progress: bool = False,
    embedder: OnnxEmbedder | None = None,
) -> ChangeResult:
    """Make the gallery at `root` hold the bundle's catalogue and references, as a new version, each
    photo with lane-camera renderings made under this gallery's profile (`progress`: a bar for them)."""
    root, bundle = Path(root), Path(bundle)
    with GalleryStore.open(root) as store:
        meta = store.meta
        staging = Path(tempfile.mkdtemp(prefix="reid-bundle-"))
        try:
            with open_archive(bundle, limits) as (tar, stream):
                manifest, products, photos, vectors = _read_members(
                    tar, stream, bundle, staging, meta["model_fingerprint"], int(meta["embedding_dim"]), limits
                )
            profile = store.lane_profile()
            renderings = (
                embed_renderings([(p.sha256, p.path) for p in photos], profile, store.embedder(embedder), progress)
                if profile.views
                else None
            )
            summary = f"imported {bundle.name}, version {manifest['gallery_version']} of its gallery"
            return store.replace_contents(
                products,
                photos,
                vectors,
                action="import",
                summary=summary,
                operator=operator,
                lane_camera=profile,
                renderings=renderings,
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _add(tar: tarfile.TarFile, name: str, data: BinaryIO, size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, int(time.time())
    tar.addfile(info, data)


def _member_problem(m: tarfile.TarInfo) -> str | None:
    """Why a member may not be unpacked at all, whatever the manifest says."""
    path = PurePosixPath(m.name)
    if m.name.startswith("/") or path.is_absolute() or re.match(r"^[A-Za-z]:", m.name):
        return "has an absolute path"
    if ".." in path.parts:
        return "has '..' in its path"
    if m.issym() or m.islnk():
        return f"is a link (to {m.linkname!r})"
    if not m.isreg():
        return "is not a regular file"
    return None


def _read_members(
    tar: tarfile.TarFile,
    stream: BoundedStream,
    bundle: Path,
    staging: Path,
    fingerprint: str,
    dim: int,
    limits: BundleLimits,
) -> tuple[dict, list[Product], list[Photo], np.ndarray]:
    first = tar.next()
    if first is None or first.name != MANIFEST:
        raise GalleryError(
            f"{bundle}: not a gallery bundle (its first member must be {MANIFEST}, found "
            f"{first.name if first else 'nothing'!r})"
        )
    if problem := _member_problem(first):
        raise GalleryError(f"{bundle}: member {first.name!r} {problem}; refused")
    if first.size > limits.manifest_bytes:
        raise GalleryError(
            f"{bundle}: {MANIFEST} is {first.size} bytes, more than the limit of {limits.manifest_bytes}; refused"
        )
    raw = tar.extractfile(first).read()  # type: ignore[union-attr]
    manifest, products, files = _parse_manifest(raw, bundle, fingerprint, dim, limits)
    stream.narrow(stream_bytes([f["size"] for f in files.values()], limits))
    free = shutil.disk_usage(staging).free
    needed = sum(f["size"] for f in files.values())
    if needed > free:
        raise GalleryError(
            f"{bundle}: unpacking needs {needed} bytes, only {free} are free in {staging.parent}; refused"
        )
    got: dict[str, Path] = {}
    while (m := tar.next()) is not None:
        if problem := _member_problem(m):
            raise GalleryError(f"{bundle}: member {m.name!r} {problem}; refused")
        if m.name not in files:
            raise GalleryError(f"{bundle}: member {m.name!r} is not listed in the manifest; refused")
        if m.name in got:
            raise GalleryError(f"{bundle}: member {m.name!r} appears twice; refused")
        if m.size != files[m.name]["size"]:
            raise GalleryError(
                f"{bundle}: member {m.name!r} is {m.size} bytes, the manifest says {files[m.name]['size']}; refused"
            )
        dest = staging / f"{len(got):08d}"
        h = hashlib.sha256()
        with tar.extractfile(m) as src:  # type: ignore[union-attr]
            try:
                with open(dest, "wb") as out:
                    for chunk in iter(lambda: src.read(CHUNK), b""):
                        h.update(chunk)
                        out.write(chunk)
            except OSError as e:
                raise GalleryError(f"{staging}: cannot unpack the bundle there ({e.strerror or e})") from None
        if h.hexdigest() != files[m.name]["sha256"]:
            raise GalleryError(
                f"{bundle}: member {m.name!r} does not match its sha256 checksum in the manifest; the archive is "
                "damaged or altered"
            )
        got[m.name] = dest
    missing = sorted(set(files) - set(got))
    if missing:
        raise GalleryError(f"{bundle}: {len(missing)} files listed in the manifest are missing, e.g. {missing[0]!r}")
    vectors = _load_embeddings(got[EMBEDDINGS], bundle, len(manifest["references"]), dim)
    photos = []
    for ref in manifest["references"]:
        path = got[ref["image"]]
        try:
            image = decode_image(path.read_bytes(), f"{bundle}: {ref['image']}")
        except ImageError as e:
            raise GalleryError(str(e)) from None
        ext = "." + ref["image"].rsplit(".", 1)[1]
        photos.append(Photo(ref["sku"], path, ref["source"], ref["sha256"], ext, perceptual_hash(image)))
    return manifest, products, photos, vectors


def _parse_manifest(
    raw: bytes, bundle: Path, fingerprint: str, dim: int, limits: BundleLimits
) -> tuple[dict, list[Product], dict[str, dict]]:
    where = f"{bundle}: {MANIFEST}"
    manifest = parse_object(raw, where, max_bytes=limits.manifest_bytes, error=GalleryError)
    if manifest.get("format") != FORMAT:
        raise GalleryError(f"{where}: not a gallery bundle (field 'format' must be {FORMAT!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise GalleryError(
            f"{where}: bundle format version {manifest.get('format_version')!r} is not supported (expected "
            f"{FORMAT_VERSION})"
        )
    for field, kind in (
        ("model_fingerprint", str),
        ("embedding_dim", int),
        ("gallery_version", int),
        ("products", list),
        ("references", list),
        ("files", dict),
    ):
        if not isinstance(manifest.get(field), kind):
            raise GalleryError(f"{where}: field {field!r} is missing or not a {kind.__name__}")
    if manifest["model_fingerprint"] != fingerprint:
        raise GalleryError(
            f"{where}: the bundle's embeddings are from model {manifest['model_fingerprint'][:12]} "
            f"({manifest.get('model_path')}), "
            f"this gallery's model is {fingerprint[:12]}; import it into a gallery created with that model "
            "(`reid gallery init DIR --model M`), then `reid gallery rebuild` it if needed"
        )
    if manifest["embedding_dim"] != dim:
        raise GalleryError(f"{where}: embedding_dim {manifest['embedding_dim']} differs from the gallery's {dim}")
    products = [Product.from_dict(p, f"{where}: products[{i}]") for i, p in enumerate(manifest["products"])]
    skus = {p.sku for p in products}
    if len(skus) != len(products):
        raise GalleryError(f"{where}: a SKU is listed twice in 'products'")
    codes = [c for p in products for c in p.barcodes]
    if len(set(codes)) != len(codes):
        raise GalleryError(f"{where}: a barcode belongs to two products")
    if len(manifest["files"]) + 1 > limits.members:
        raise GalleryError(
            f"{where}: lists {len(manifest['files'])} files, more than the limit of {limits.members - 1}; refused"
        )
    files: dict[str, dict] = {}
    for name, f in manifest["files"].items():
        if name != EMBEDDINGS and not IMAGE_NAME.fullmatch(name):
            raise GalleryError(
                f"{where}: files: {name!r} is not a name a bundle may hold (embeddings.npy, images/xx/<sha256>.<ext>)"
            )
        if not (isinstance(f, dict) and isinstance(f.get("size"), int) and isinstance(f.get("sha256"), str)):
            raise GalleryError(f"{where}: files[{name!r}] must have an integer 'size' and a 'sha256'")
        limit = 128 + 4 * dim * len(manifest["references"]) + 1024 if name == EMBEDDINGS else limits.image_bytes
        if not 0 < f["size"] <= limit:
            raise GalleryError(
                f"{where}: files[{name!r}] has an absurd size {f['size']} (limit {limit} bytes); refused"
            )
        files[name] = f
    if EMBEDDINGS not in files:
        raise GalleryError(f"{where}: 'files' does not list {EMBEDDINGS}")
    seen: set[str] = set()
    for i, ref in enumerate(manifest["references"]):
        at = f"{where}: references[{i}]"
        if not isinstance(ref, dict) or not all(
            isinstance(ref.get(k), str) for k in ("sku", "image", "sha256", "source")
        ):
            raise GalleryError(f"{at}: must have text fields 'sku', 'image', 'sha256' and 'source'")
        if check_sku(ref["sku"], f"{at}: field 'sku'") not in skus:
            raise GalleryError(f"{at}: SKU {ref['sku']!r} is not in the bundle's products")
        match = IMAGE_NAME.fullmatch(ref["image"])
        if (
            not match
            or ref["image"] not in files
            or match.group(2) != ref["sha256"]
            or files[ref["image"]]["sha256"] != ref["sha256"]
        ):
            raise GalleryError(
                f"{at}: image {ref['image']!r} is not a listed file named by its sha256 {ref['sha256']!r}"
            )
        if ref["sha256"] in seen:
            raise GalleryError(f"{at}: the same photo ({ref['sha256'][:12]}) is a reference twice")
        seen.add(ref["sha256"])
    unused = sorted(set(files) - {EMBEDDINGS} - {ref["image"] for ref in manifest["references"]})
    if unused:
        raise GalleryError(f"{where}: files lists {len(unused)} photos no reference uses, e.g. {unused[0]!r}; refused")
    return manifest, products, files


def _load_embeddings(path: Path, bundle: Path, n: int, dim: int) -> np.ndarray:
    try:
        vectors = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise GalleryError(f"{bundle}: {EMBEDDINGS}: not a numpy array file ({e})") from None
    if vectors.dtype != np.float32 or vectors.shape != (n, dim):
        raise GalleryError(
            f"{bundle}: {EMBEDDINGS}: expected float32 of shape ({n}, {dim}), found {vectors.dtype} {vectors.shape}"
        )
    norms = np.linalg.norm(vectors, axis=1)
    if not np.all(np.isfinite(vectors)) or not np.allclose(norms, 1.0, atol=1e-3):
        raise GalleryError(f"{bundle}: {EMBEDDINGS}: rows must be finite unit vectors")
    return vectors
