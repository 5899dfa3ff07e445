"""Destructive gallery changes in the console through Flask's test client: rolling back, removing a
product and removing a photo each show a preview (products and photos taken out and brought back,
the version the lanes will take) and are made only by that preview's own confirmation; a single
POST, a forged or another change's token, a preview the gallery has moved on from, and a rollback to
an empty version without the gallery's name typed are refused with nothing changed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from console_fixtures import confirmation as _preview
from console_fixtures import csrf_token as _csrf
from console_fixtures import make_settings, sign_in

from retail_reid.gallery.store import GalleryStore
from retail_reid.pipeline.console.app import create_app

pytest.importorskip("flask")


@pytest.fixture
def settings(tmp_path: Path, gallery_dir: Path):
    return make_settings(tmp_path, gallery_dir)


@pytest.fixture
def signed_in(settings):
    client = create_app(settings).test_client()
    sign_in(client)
    return client


def _version(gallery: Path) -> int:
    with GalleryStore.open(gallery, readonly=True) as store:
        return store.history()[-1].version


def _lime(gallery: Path) -> list[int]:
    with GalleryStore.open(gallery, readonly=True) as store:
        return [r.id for r in store.product("Lime")[1]]


def test_a_single_post_cannot_roll_back_or_remove(signed_in, settings):
    before = _version(settings.gallery)
    ref = _lime(settings.gallery)[0]
    csrf = _csrf(signed_in, "/gallery")
    for route in (
        "/gallery/rollback/1",
        "/gallery/products/Lime/remove",
        f"/gallery/products/Lime/photos/{ref}/remove",
    ):
        r = signed_in.post(route, data={"csrf_token": csrf})
        assert r.status_code == 400 and "confirm it from its preview page" in r.get_data(as_text=True)
        r = signed_in.post(route, data={"csrf_token": csrf, "token": "forged.token.value"})
        assert r.status_code == 400 and "not from a preview of this change" in r.get_data(as_text=True)
    assert signed_in.post("/gallery/rollback", data={"csrf_token": csrf, "version": "1"}).status_code == 404  # gone
    assert _version(settings.gallery) == before and ref in _lime(settings.gallery)


def test_the_rollback_preview_lists_what_changes_and_its_confirmation_makes_it(signed_in, settings):
    before = _version(settings.gallery)  # 2: the imported sample
    ref = _lime(settings.gallery)[0]
    _, form = _preview(signed_in, f"/gallery/products/Lime/photos/{ref}/remove")
    assert signed_in.post(f"/gallery/products/Lime/photos/{ref}/remove", data=form).status_code == 303
    _, form = _preview(signed_in, "/gallery/products/Kiwi/remove")
    assert signed_in.post("/gallery/products/Kiwi/remove", data=form).status_code == 303
    assert _version(settings.gallery) == before + 2
    page, form = _preview(signed_in, f"/gallery/rollback/{before}")
    assert f"This makes <strong>version {before + 3}</strong> with the contents of version {before}" in page
    assert "Products brought back <small>1</small>" in page and "Kiwi" in page
    assert re.search(rf"#{ref} · Lime", page) and "Photos removed" not in page
    assert "type the gallery" not in page.lower()
    assert _version(settings.gallery) == before + 2  # the preview changed nothing
    r = signed_in.post(f"/gallery/rollback/{before}", data=form)
    assert r.status_code == 303
    assert f"version {before + 3}: rolled back to the contents of version {before}" in signed_in.get(
        r.headers["Location"]
    ).get_data(as_text=True)
    assert ref in _lime(settings.gallery)
    r = signed_in.post(f"/gallery/rollback/{before}", data=form)  # the same confirmation again
    assert r.status_code == 400 and "the gallery changed since the preview" in r.get_data(as_text=True)
    assert _version(settings.gallery) == before + 3


def test_removal_previews_name_the_photos_and_products_taken_out(signed_in, settings):
    refs = _lime(settings.gallery)
    page, _ = _preview(signed_in, f"/gallery/products/Lime/photos/{refs[0]}/remove")
    assert "Photos removed <small>1</small>" in page and f"/gallery/products/Lime/photos/{refs[0]}" in page
    assert "Products removed" not in page
    page, form = _preview(signed_in, "/gallery/products/Lime/remove")
    assert "Products removed <small>1</small>" in page and f"Photos removed <small>{len(refs)}</small>" in page
    r = signed_in.post("/gallery/products/Lime/remove", data=form)
    assert r.status_code == 303
    with GalleryStore.open(settings.gallery, readonly=True) as store:
        assert "Lime" not in {p.product.sku for p in store.products()}
        assert (store.history()[-1].action, store.history()[-1].operator) == ("remove", "alice")
    assert signed_in.get("/gallery/products/Lime/remove").status_code == 404
    assert signed_in.get("/gallery/products/Kiwi/photos/99999/remove").status_code == 404


def test_a_stale_preview_or_another_changes_token_is_refused(signed_in, settings):
    before = _version(settings.gallery)
    refs = _lime(settings.gallery)
    _, stale = _preview(signed_in, f"/gallery/products/Lime/photos/{refs[0]}/remove")
    _, other = _preview(signed_in, f"/gallery/products/Lime/photos/{refs[1]}/remove")
    r = signed_in.post(f"/gallery/products/Lime/photos/{refs[0]}/remove", data=other)  # photo 2's confirmation
    assert r.status_code == 400 and "not from a preview of this change" in r.get_data(as_text=True)
    r = signed_in.post("/gallery/products/Lime/remove", data=other)  # a photo's confirmation for the product
    assert r.status_code == 400 and "not from a preview of this change" in r.get_data(as_text=True)
    assert signed_in.post(f"/gallery/products/Lime/photos/{refs[1]}/remove", data=other).status_code == 303
    r = signed_in.post(f"/gallery/products/Lime/photos/{refs[0]}/remove", data=stale)  # made before that change
    assert r.status_code == 400 and f"it showed version {before}, version {before + 1} is current" in r.get_data(
        as_text=True
    )
    assert _version(settings.gallery) == before + 1 and refs[0] in _lime(settings.gallery)


def test_another_operators_confirmation_is_refused(signed_in, settings):
    _, form = _preview(signed_in, "/gallery/rollback/1")
    bob = create_app(settings).test_client()
    sign_in(bob, "bob")
    r = bob.post("/gallery/rollback/1", data={**form, "csrf_token": _csrf(bob, "/gallery")})
    assert r.status_code == 400 and "not from a preview of this change" in r.get_data(as_text=True)
    assert _version(settings.gallery) == 2


def test_rolling_back_to_an_empty_version_needs_the_gallerys_name_typed(signed_in, settings):
    page, form = _preview(signed_in, "/gallery/rollback/1")  # version 1: the empty gallery
    assert "the lanes will recognise nothing" in page and "Products removed <small>12</small>" in page
    assert 'name="gallery_name"' in page and "<strong>gallery</strong>" in page
    for typed in ("", "wrong"):
        r = signed_in.post("/gallery/rollback/1", data={**form, "gallery_name": typed})
        assert r.status_code == 400 and "type the gallery&#39;s name, gallery, to make it" in r.get_data(as_text=True)
    assert _version(settings.gallery) == 2
    r = signed_in.post("/gallery/rollback/1", data={**form, "gallery_name": "gallery"})
    assert r.status_code == 303 and _version(settings.gallery) == 3
    with GalleryStore.open(settings.gallery, readonly=True) as store:
        assert store.products() == []


@pytest.mark.parametrize(
    ("route", "message"),
    [("/gallery/rollback/999", "there is no version 999"), ("/gallery/rollback/2", "version 2 is the current version")],
)
def test_a_version_that_cannot_be_rolled_back_to_is_refused_at_its_preview(signed_in, route, message):
    r = signed_in.get(route)
    assert r.status_code == 400 and message in r.get_data(as_text=True)
