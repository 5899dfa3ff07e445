"""The console's destructive gallery changes (roll back, remove a product, remove a photo) as a
preview first and a confirmation second: the preview says what the change takes out and brings
back, and signs a token naming the change, the operator and the version it was computed on; the
confirmation is refused without that token, or once the gallery has moved on since, so no single
request (a stray click, a stale page, a forged form) changes the gallery."""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from retail_reid.compat import StrEnum
from retail_reid.gallery import GalleryError, db
from retail_reid.gallery.reading import GalleryReader
from retail_reid.gallery.snapshot import Snapshot, read_current, stored_versions
from retail_reid.pipeline.console.settings import ConsoleError

TOKEN_MAX_AGE_S = 15 * 60  # a preview older than this is shown again before its change is made
SALT = "reid-console-gallery-change"


class ChangeKind(StrEnum):
    ROLLBACK = "rollback"
    REMOVE_PRODUCT = "remove-product"
    REMOVE_PHOTO = "remove-photo"


@dataclass(frozen=True)
class PhotoLine:
    """A reference photo (or lane reference) the change takes out or brings back."""

    id: int
    sku: str
    source: str
    current: bool  # in the gallery now (so its picture can be shown)


@dataclass(frozen=True)
class ChangePreview:
    kind: ChangeKind
    target: str  # the version rolled back to, the SKU removed, or the reference id removed
    base_version: int  # the current version the preview was computed on
    next_version: int  # the version the change makes, which running lanes take
    products_added: tuple[str, ...]
    products_removed: tuple[str, ...]
    photos_added: tuple[PhotoLine, ...]
    photos_removed: tuple[PhotoLine, ...]
    products_after: int
    photos_after: int

    @property
    def empties(self) -> bool:
        """The gallery after it holds no product or no photo: the lanes would recognise nothing."""
        return self.products_after == 0 or self.photos_after == 0


def _photos(reader: GalleryReader) -> dict[int, tuple[str, str]]:
    """Every reference photo ever stored (not renderings): id -> (SKU, source)."""
    rows = reader.conn.execute(f"SELECT id, sku, source FROM refs WHERE {db.photos_only(reader.conn)}")
    return {i: (sku, source) for i, sku, source in rows}


def _next_version(reader: GalleryReader) -> int:
    return reader.conn.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM versions").fetchone()[0]


def _preview(
    reader: GalleryReader, kind: ChangeKind, target: str, products_after: set[str], photos_after: set[int]
) -> ChangePreview:
    photos = _photos(reader)
    now_products = {p.product.sku for p in reader.products()}
    now_photos = reader.photo_ids()

    def lines(ids: set[int], current: bool) -> tuple[PhotoLine, ...]:
        return tuple(PhotoLine(i, *photos[i], current=current) for i in sorted(ids))

    return ChangePreview(
        kind=kind,
        target=target,
        base_version=read_current(reader.root),
        next_version=_next_version(reader),
        products_added=tuple(sorted(products_after - now_products)),
        products_removed=tuple(sorted(now_products - products_after)),
        photos_added=lines(photos_after - now_photos, current=False),
        photos_removed=lines(now_photos - photos_after, current=True),
        products_after=len(products_after),
        photos_after=len(photos_after),
    )


def preview_rollback(reader: GalleryReader, version: int) -> ChangePreview:
    """What rolling back to `version` would change (refused as `GalleryStore.rollback` would refuse it)."""
    root = reader.root
    if reader.conn.execute("SELECT 1 FROM versions WHERE version = ?", (version,)).fetchone() is None:
        raise GalleryError(f"{root}: there is no version {version} (see the gallery's history)")
    if version == read_current(root):
        raise GalleryError(f"{root}: version {version} is the current version already")
    if version not in stored_versions(root):
        raise GalleryError(f"{root}: version {version} is no longer stored, so it cannot be rolled back to")
    try:
        snap = Snapshot.load(root, version)
    except FileNotFoundError:  # pruned since the check above
        raise GalleryError(f"{root}: version {version} is no longer stored, so it cannot be rolled back to") from None
    photos = set(_photos(reader)) & {int(i) for i in snap.ref_ids}
    return _preview(reader, ChangeKind.ROLLBACK, str(version), set(snap.products), photos)


def preview_remove_product(reader: GalleryReader, sku: str) -> ChangePreview:
    """What removing a product would change: it and all its photos leave the gallery."""
    _, refs = reader.product(sku)  # refuses an unknown SKU
    products = {p.product.sku for p in reader.products()} - {sku}
    return _preview(reader, ChangeKind.REMOVE_PRODUCT, sku, products, reader.photo_ids() - {r.id for r in refs})


def preview_remove_photo(reader: GalleryReader, sku: str, ref_id: int) -> ChangePreview:
    """What removing one photo of `sku` would change (the product stays, with its other photos)."""
    _, refs = reader.product(sku)
    if ref_id not in {r.id for r in refs}:
        raise GalleryError(f"no current reference {ref_id} of {sku!r}")
    products = {p.product.sku for p in reader.products()}
    return _preview(reader, ChangeKind.REMOVE_PHOTO, str(ref_id), products, reader.photo_ids() - {ref_id})


def _serializer(secret: bytes) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=SALT)


def token_for(preview: ChangePreview, operator: str, secret: bytes) -> str:
    """The token the preview's confirm form carries: this change, by this operator, on this version."""
    return _serializer(secret).dumps([preview.kind.value, preview.target, preview.base_version, operator])


def check_confirmation(preview: ChangePreview, token: str, operator: str, secret: bytes) -> None:
    """Refuse (one line, nothing changed) unless `token` is this preview's, signed for this operator
    within TOKEN_MAX_AGE_S, and the gallery is still at the version the preview was computed on."""
    if not token:
        raise ConsoleError(
            f"{preview.kind}: confirm it from its preview page, which shows what it changes; nothing changed"
        )
    try:
        kind, target, base, signer = _serializer(secret).loads(token, max_age=TOKEN_MAX_AGE_S)
    except SignatureExpired:
        raise ConsoleError(
            f"{preview.kind}: the preview is over {TOKEN_MAX_AGE_S // 60} minutes old; "
            "look at it again; nothing changed"
        ) from None
    except (BadSignature, ValueError, TypeError):
        raise ConsoleError(
            f"{preview.kind}: the confirmation is not from a preview of this change; nothing changed"
        ) from None
    if (kind, target, signer) != (preview.kind.value, preview.target, operator):
        raise ConsoleError(f"{preview.kind}: the confirmation is not from a preview of this change; nothing changed")
    check_unchanged(base, preview.base_version)


def check_unchanged(previewed: int, current: int) -> None:
    """Refuse a change whose preview was computed on another version than the current one."""
    if previewed != current:
        raise ConsoleError(
            f"the gallery changed since the preview (it showed version {previewed}, version {current} is current "
            "now): look at the preview again; nothing changed"
        )
