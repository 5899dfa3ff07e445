"""The console's way into the gallery: reading the catalogue and changing it only through
`GalleryStore`'s public methods, so every change is a new version under the gallery's lock, in its
audit log under the signed-in operator's name, and picked up by running lanes as any other."""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from retail_reid.gallery import GalleryError
from retail_reid.gallery.matching import Gallery
from retail_reid.gallery.photos import RefOrigin
from retail_reid.gallery.reading import ProductRow, RefRow, VersionRow
from retail_reid.gallery.snapshot import read_current
from retail_reid.gallery.store import ChangeResult, GalleryStore
from retail_reid.images import decode_image
from retail_reid.models.runtime import OnnxEmbedder
from retail_reid.pipeline.console.gallery_changes import (
    ChangeKind,
    ChangePreview,
    check_unchanged,
    preview_remove_photo,
    preview_remove_product,
    preview_rollback,
)
from retail_reid.pipeline.console.safe_files import inside
from retail_reid.pipeline.console.settings import ConsoleError

UPLOADS = "uploads"


@dataclass(frozen=True)
class Upload:
    """One uploaded photo, already bounded in size by the server."""

    filename: str  # as the browser sent it, made safe
    data: bytes


class GalleryAccess:
    def __init__(self, root: Path, staging: Path):
        self.root = root
        self.staging = staging  # under the console's data folder
        self._embedder: OnnxEmbedder | None = None
        self._matcher: Gallery | None = None
        self._write = threading.Lock()  # one change at a time from this process (the store's lock covers others)
        self._matching = threading.Lock()  # the matcher is loaded or refreshed by one request at a time

    def _open(self, readonly: bool = True) -> GalleryStore:
        return GalleryStore.open(self.root, readonly=readonly)

    def products(self) -> list[ProductRow]:
        with self._open() as store:
            return store.products()

    def product(self, sku: str) -> tuple[ProductRow, list[RefRow]]:
        with self._open() as store:
            return store.product(sku)

    def photos(self, sku: str | None, n: int) -> list[RefRow]:
        """Up to `n` reference photos of a SKU; none for a SKU the gallery does not hold."""
        return self.first_photos([sku], n).get(sku, []) if sku else []

    def first_photos(self, skus: list[str], n: int) -> dict[str, list[RefRow]]:
        """Up to `n` reference photos of each SKU the gallery holds (one database connection for all)."""
        found: dict[str, list[RefRow]] = {}
        with self._open() as store:
            for sku in skus:
                try:
                    found[sku] = store.product(sku)[1][:n]
                except GalleryError:  # not (or no longer) in the gallery
                    continue
        return found

    def history(self) -> list[VersionRow]:
        with self._open() as store:
            return list(reversed(store.history()))

    def photo_file(self, sku: str, ref_id: int) -> Path | None:
        """The stored file of a current reference, checked to lie inside the gallery folder."""
        refs = self.photos(sku, 10**9)
        ref = next((r for r in refs if r.id == ref_id), None)
        return inside(self.root, ref.image) if ref else None

    def _embedder_for(self, store: GalleryStore) -> OnnxEmbedder:
        """The gallery's model, loaded once (and again only if the gallery is rebuilt with another)."""
        if self._embedder is None or self._embedder.fingerprint != store.meta["model_fingerprint"]:
            self._embedder = store.embedder()
        return self._embedder

    def add_photos(self, sku: str, uploads: list[Upload], operator: str, name: str | None = None) -> ChangeResult:
        """Check every upload decodes as an image, then add them as one new version (or create the product)."""
        if not uploads:
            raise ConsoleError("photos: choose at least one photo to upload")
        for up in uploads:
            decode_image(up.data, up.filename)  # refuses a non-image before the gallery sees it
        folder = self.staging / UPLOADS / f"{operator}-{time.strftime('%Y%m%dT%H%M%S')}-{time.monotonic_ns()}"
        try:
            paths = _stage(folder, uploads)
            with self._write, self._open(readonly=False) as store:
                return store.add(sku, paths, name=name, operator=operator, embedder=self._embedder_for(store))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def reference_hashes(self) -> set[str]:
        with self._open() as store:
            return store.reference_hashes()

    def matcher(self) -> Gallery:
        """The current version matched as the lanes match it (their `Gallery`, its default scoring),
        loaded once and refreshed when a new version is published."""
        with self._matching:
            if self._matcher is not None:
                try:
                    self._matcher.refresh()
                    return self._matcher
                except GalleryError:  # rebuilt with another model: load it afresh
                    self._matcher = None
            with self._open() as store:
                embedder = self._embedder_for(store)
            self._matcher = Gallery.open(self.root, embedder)
            return self._matcher

    def add_lane_references(
        self,
        sku: str,
        paths: list[Path],
        operator: str,
        note: str | None = None,
        sources: dict[Path, str] | None = None,
    ) -> ChangeResult:
        """Crops a lane kept (already checked files inside the console's folders) as references of
        an existing product, marked as lane references; crops already in the gallery are left out.
        `note` goes into the gallery's audit log under the SKU (an operator's override, say);
        `sources` what the gallery records a path came from (its lane and time: `lane_source`)."""
        with self._write, self._open(readonly=False) as store:
            if sku not in {p.product.sku for p in store.products()}:
                raise ConsoleError(f"sku: unknown product {sku!r}; lane references go to products the gallery holds")
            return store.add_photos(
                [(sku, p) for p in paths],
                {},
                action="accept-lane-references",
                operator=operator,
                skip_bad=True,
                embedder=self._embedder_for(store),
                origin=RefOrigin.LANE,
                notes=[(sku, note)] if note else [],
                sources=sources,
            )

    def preview(self, kind: ChangeKind, target: str, sku: str | None = None) -> ChangePreview:
        """What a destructive change would do to the current version (`sku`: the removed photo's product)."""
        with self._open() as store:
            if kind is ChangeKind.ROLLBACK:
                return preview_rollback(store, int(target))
            if kind is ChangeKind.REMOVE_PRODUCT:
                return preview_remove_product(store, target)
            return preview_remove_photo(store, sku or "", int(target))

    def apply(self, preview: ChangePreview, operator: str) -> ChangeResult:
        """Make a previewed change, refused if the gallery is no longer at the version previewed."""
        with self._write, self._open(readonly=False) as store:
            check_unchanged(preview.base_version, read_current(self.root))
            if preview.kind is ChangeKind.ROLLBACK:
                return store.rollback(int(preview.target), operator=operator)
            if preview.kind is ChangeKind.REMOVE_PRODUCT:
                return store.remove_sku(preview.target, operator=operator)
            return store.remove_ref(int(preview.target), operator=operator)


def _stage(folder: Path, uploads: list[Upload]) -> list[Path]:
    """Write the uploads as files for `GalleryStore.add`, under the operator's own file names."""
    paths = []
    try:
        folder.mkdir(parents=True)
        for i, up in enumerate(uploads):
            path = folder / up.filename  # recorded as the photo's source
            if path.exists():  # two uploads of the same name
                path = folder / f"{i}-{up.filename}"
            path.write_bytes(up.data)
            paths.append(path)
    except OSError as e:
        raise ConsoleError(f"{folder}: cannot stage the upload ({e.strerror or e}); nothing changed") from None
    return paths
