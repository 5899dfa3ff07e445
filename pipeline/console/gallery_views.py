"""Gallery pages: the products with their photos, uploads, removing a photo or a product, the
history of versions with who did what, and rolling back. Every change goes through `GalleryStore`;
the ones that take photos out (removals, rollbacks) are previewed first and made only by the
preview's own confirmation (`gallery_changes`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, Response, abort, current_app, flash, redirect, render_template, request, send_file, url_for
from werkzeug.utils import secure_filename

from retail_reid.gallery import GalleryError
from retail_reid.pipeline.console.gallery_access import Upload
from retail_reid.pipeline.console.gallery_changes import (
    TOKEN_MAX_AGE_S,
    ChangeKind,
    ChangePreview,
    check_confirmation,
    token_for,
)
from retail_reid.pipeline.console.settings import ConsoleError
from retail_reid.pipeline.console.state import operator, state

if TYPE_CHECKING:
    from werkzeug.wrappers import Response as BaseResponse  # what redirect() returns

blueprint = Blueprint("gallery", __name__)
MAX_FILES = 20  # photos in one upload
PAGE = 60  # products a gallery page shows


def _uploads() -> list[Upload]:
    files = [f for f in request.files.getlist("photos") if f.filename]
    if len(files) > MAX_FILES:
        raise ConsoleError(f"photos: at most {MAX_FILES} photos at a time, got {len(files)}")
    # The body is already capped by MAX_CONTENT_LENGTH, so reading a file here is bounded.
    return [Upload(secure_filename(f.filename or "") or "photo", f.read()) for f in files]


@blueprint.route("/gallery")
def index() -> str:
    query = request.args.get("q", "").strip().lower()
    products = [
        p for p in state().gallery.products() if query in p.product.sku.lower() or query in p.product.name.lower()
    ]
    pages = max(1, -(-len(products) // PAGE))
    page = min(max(1, request.args.get("page", 1, type=int) or 1), pages)
    shown = products[(page - 1) * PAGE : page * PAGE]
    thumbs = state().gallery.first_photos([p.product.sku for p in shown], 1)
    return render_template(
        "gallery.html", products=shown, total=len(products), thumbs=thumbs, query=query, page=page, pages=pages
    )


@blueprint.route("/gallery/products/<sku:sku>")
def product(sku: str) -> str:
    try:
        row, refs = state().gallery.product(sku)
    except GalleryError as e:
        abort(404, str(e))
    return render_template("product.html", row=row, refs=refs)


@blueprint.route("/gallery/products/<sku:sku>/photos/<int:ref_id>")
def photo(sku: str, ref_id: int) -> Response:
    path = state().gallery.photo_file(sku, ref_id)
    if path is None:
        abort(404, f"no current reference {ref_id} of {sku!r}")
    return send_file(path, max_age=3600)


@blueprint.route("/gallery/products", methods=["POST"])
def add_product() -> BaseResponse:
    sku = request.form.get("sku", "").strip()
    name = request.form.get("name", "").strip() or None
    result = state().gallery.add_photos(sku, _uploads(), operator(), name=name)
    flash(f"version {result.version}: {result.summary}")
    return redirect(url_for("gallery.product", sku=sku), 303)


@blueprint.route("/gallery/products/<sku:sku>/photos", methods=["POST"])
def add_photos(sku: str) -> BaseResponse:
    result = state().gallery.add_photos(sku, _uploads(), operator())
    flash(f"version {result.version}: {result.summary}")
    return redirect(url_for("gallery.product", sku=sku), 303)


@blueprint.route("/gallery/history")
def history() -> str:
    return render_template("history.html", versions=state().gallery.history())


def _preview(kind: ChangeKind, target: str, sku: str | None = None) -> ChangePreview:
    try:
        return state().gallery.preview(kind, target, sku)
    except GalleryError as e:
        if kind is ChangeKind.ROLLBACK:
            raise  # a version that cannot be rolled back to: 400 with its reason
        abort(404, str(e))  # a product or photo that is not (or no longer) in the gallery


def _show(preview: ChangePreview, back: str) -> str:
    """The preview page: what the change takes out and brings back, and its confirm form."""
    return render_template(
        "gallery_change.html",
        preview=preview,
        back=back,
        token=token_for(preview, operator(), current_app.config["SECRET_KEY"]),
        gallery_name=state().settings.gallery.name,
        max_age_min=TOKEN_MAX_AGE_S // 60,
    )


def _confirm(preview: ChangePreview, back: str) -> BaseResponse:
    """Make the previewed change if the form is that preview's confirmation (and, for a change that
    leaves the lanes nothing to recognise, carries the gallery's name typed in)."""
    check_confirmation(preview, request.form.get("token", ""), operator(), current_app.config["SECRET_KEY"])
    name = state().settings.gallery.name
    if preview.empties and request.form.get("gallery_name", "").strip() != name:
        raise ConsoleError(
            f"gallery_name: this change leaves the gallery with {preview.products_after} products and "
            f"{preview.photos_after} photos; type the gallery's name, {name}, to make it; nothing changed"
        )
    result = state().gallery.apply(preview, operator())
    flash(f"version {result.version}: {result.summary}")
    return redirect(back, 303)


@blueprint.route("/gallery/rollback/<int:version>")
def rollback_preview(version: int) -> str:
    return _show(_preview(ChangeKind.ROLLBACK, str(version)), url_for("gallery.history"))


@blueprint.route("/gallery/rollback/<int:version>", methods=["POST"])
def rollback(version: int) -> BaseResponse:
    return _confirm(_preview(ChangeKind.ROLLBACK, str(version)), url_for("gallery.history"))


@blueprint.route("/gallery/products/<sku:sku>/remove")
def remove_product_preview(sku: str) -> str:
    return _show(_preview(ChangeKind.REMOVE_PRODUCT, sku), url_for("gallery.product", sku=sku))


@blueprint.route("/gallery/products/<sku:sku>/remove", methods=["POST"])
def remove_product(sku: str) -> BaseResponse:
    return _confirm(_preview(ChangeKind.REMOVE_PRODUCT, sku), url_for("gallery.index"))


@blueprint.route("/gallery/products/<sku:sku>/photos/<int:ref_id>/remove")
def remove_photo_preview(sku: str, ref_id: int) -> str:
    return _show(_preview(ChangeKind.REMOVE_PHOTO, str(ref_id), sku), url_for("gallery.product", sku=sku))


@blueprint.route("/gallery/products/<sku:sku>/photos/<int:ref_id>/remove", methods=["POST"])
def remove_photo(sku: str, ref_id: int) -> BaseResponse:
    return _confirm(_preview(ChangeKind.REMOVE_PHOTO, str(ref_id), sku), url_for("gallery.product", sku=sku))
