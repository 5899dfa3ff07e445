"""Gallery pages: the products with their photos, uploads, removing a photo, the history of
versions with who did what, and rolling back. Every change goes through `GalleryStore`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, send_file, url_for
from werkzeug.utils import secure_filename

from retail_reid.gallery import GalleryError
from retail_reid.pipeline.console.gallery_access import Upload
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


def _int(field: str) -> int:
    value = request.form.get(field, "")
    if not value.isdigit():
        raise ConsoleError(f"{field}: expected a whole number, got {value[:40]!r}")
    return int(value)


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


@blueprint.route("/gallery/products/<sku:sku>/photos/<int:ref_id>/remove", methods=["POST"])
def remove_photo(sku: str, ref_id: int) -> BaseResponse:
    if state().gallery.photo_file(sku, ref_id) is None:
        abort(404, f"no current reference {ref_id} of {sku!r}")
    result = state().gallery.remove_photo(ref_id, operator())
    flash(f"version {result.version}: {result.summary}")
    return redirect(url_for("gallery.product", sku=sku), 303)


@blueprint.route("/gallery/history")
def history() -> str:
    return render_template("history.html", versions=state().gallery.history())


@blueprint.route("/gallery/rollback", methods=["POST"])
def rollback() -> BaseResponse:
    result = state().gallery.rollback(_int("version"), operator())
    flash(f"version {result.version}: {result.summary}")
    return redirect(url_for("gallery.history"), 303)
