"""Catalogue rules (gallery/catalog.py): bad SKU ids, names, prices and barcodes are refused by name
before anything is written, and a barcode belongs to one product."""

from __future__ import annotations

import pytest
from gallery_fixtures import VAL, state

from retail_reid.gallery import GalleryError
from retail_reid.gallery.store import GalleryStore


@pytest.mark.parametrize(
    "sku, message",
    [
        ("", "empty or only whitespace"),
        ("   ", "empty or only whitespace"),
        (" Kiwi", "starts or ends with whitespace"),
        ("Ki\x00wi", "control"),
        ("x" * 101, "more than 100"),
    ],
)
def test_bad_sku_ids_are_refused(gallery_dir, embedder, sku, message):
    before = state(gallery_dir)
    with GalleryStore.open(gallery_dir) as store, pytest.raises(GalleryError, match=message):
        store.add(sku, sorted((VAL / "Kiwi").glob("*.jpg"))[:1], embedder=embedder)
    assert state(gallery_dir) == before


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("barcodes", ["4006381333932"], "wrong check digit"),
        ("barcodes", ["12ab"], "digits only"),
        ("barcodes", ["123456"], "has 6 digits"),
        ("name", "  ", "non-empty"),
        ("price", -1.0, "non-negative"),
        ("price", float("nan"), "non-negative"),
    ],
)
def test_bad_catalogue_fields_are_refused(gallery_dir, embedder, field, value, message):
    before = state(gallery_dir)
    with GalleryStore.open(gallery_dir) as store, pytest.raises(GalleryError, match=message):
        store.add("Kiwi", [], embedder=embedder, **{field: value})
    assert state(gallery_dir) == before


def test_a_barcode_belongs_to_one_product(gallery_dir, embedder):
    with GalleryStore.open(gallery_dir) as store:
        store.add("Kiwi", [], barcodes=["4011"], embedder=embedder)
        before = state(gallery_dir)
        with pytest.raises(GalleryError, match="already belongs to SKU 'Kiwi'"):
            store.add("Lemon", [], barcodes=["4011"], embedder=embedder)
    assert state(gallery_dir) == before
