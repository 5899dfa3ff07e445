"""Lane references in the console: suggestions per product, bulk accept (new gallery version, the
references marked as lane references and attributed) and reject (never suggested again), the crops of
an alert dismissed as "wrong product recognised" as references of the product really there; every
route behind sign-in and CSRF, bad input refused with nothing changed."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import pytest
from console_fixtures import SAMPLE_VAL, make_lane_references, make_settings, sign_in
from console_fixtures import csrf_token as _token

from retail_reid.gallery.lane_suggestions import LabelPolicy, suggestions
from retail_reid.gallery.store import GalleryStore
from retail_reid.pipeline.config import LaneReferenceConfig
from retail_reid.pipeline.console.app import create_app
from retail_reid.pipeline.console.settings import ConsoleError
from retail_reid.pipeline.events import TillLabel
from retail_reid.pipeline.lane_references import LaneReferenceSampler
from retail_reid.pipeline.types import Crop, ItemPass

pytest.importorskip("flask")

WRONG = "/alerts/lane-1/lane-1-9f3a1c2e-2"  # Bravo-Orange-Juice seen, Red-Bell-Pepper scanned


@pytest.fixture
def refs(tmp_path: Path) -> Path:
    return make_lane_references(tmp_path / "lane-1-refs")


@pytest.fixture
def settings(tmp_path: Path, gallery_dir: Path, refs: Path):
    return make_settings(tmp_path, gallery_dir, references=(refs,))


@pytest.fixture
def client(settings):
    return create_app(settings).test_client()


@pytest.fixture
def signed_in(client):
    sign_in(client)
    return client


def _hashes(refs: Path) -> list[str]:
    return [s.crop.sha256 for s in suggestions([refs])["Lime"]]


def _state(gallery: Path) -> tuple[int, list[str]]:
    with GalleryStore.open(gallery, readonly=True) as store:
        return store.history()[-1].version, [r.origin for r in store.product("Lime")[1]]


def test_pages_and_crops_need_a_signed_in_operator(client, refs):
    for route in ("/lane-references", "/lane-references/products/Lime", f"/lane-references/crops/{_hashes(refs)[0]}"):
        r = client.get(route)
        assert r.status_code == 302 and r.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("route", ["/lane-references/products/Lime", f"{WRONG}/references"])
def test_writes_need_an_operator_and_a_csrf_token(client, settings, refs, route):
    before = _state(settings.gallery)
    data = {"decision": "accepted", "crop": _hashes(refs), "sku": "Lime"}
    assert client.post(route, data={**data, "csrf_token": _token(client)}).status_code == 401
    sign_in(client, "bob")
    r = client.post(route, data=data)
    assert r.status_code == 400 and "CSRF token is missing" in r.get_data(as_text=True)
    assert _state(settings.gallery) == before


def test_suggestions_are_listed_per_product_and_their_crops_served(signed_in, refs):
    assert "Lime" in signed_in.get("/lane-references").get_data(as_text=True)
    page = signed_in.get("/lane-references/products/Lime").get_data(as_text=True)
    assert all(h in page for h in _hashes(refs)) and "confidence 0.970" in page
    r = signed_in.get(f"/lane-references/crops/{_hashes(refs)[0]}")
    assert r.status_code == 200 and r.data[:3] == b"\xff\xd8\xff"
    for bad in ("../../etc/passwd", "0" * 64, "%2e%2e%2fgallery.db"):
        assert signed_in.get(f"/lane-references/crops/{bad}").status_code == 404


def test_a_till_candidate_is_shown_as_such_with_what_the_camera_saw(signed_in, refs):
    """A crop the till labelled (policy till) is offered as a candidate, with the camera's own SKU."""
    image = cv2.imread(str(SAMPLE_VAL / "Lime" / sorted(p.name for p in (SAMPLE_VAL / "Lime").iterdir())[-1]))
    crop = Crop(image=image, ts=50.0, box=(0, 0, image.shape[1], image.shape[0]), quality=1.0)
    item = ItemPass(track_id=7, t_start=49.0, t_end=50.0, frames=5, crops=(crop,))
    sampler = LaneReferenceSampler(
        refs, LaneReferenceConfig(policy=LabelPolicy.TILL, min_gap_s=0), lambda s: s, "lane-1"
    )
    assert sampler.labelled(TillLabel(item=item, sku="Lime", scan_ts=49.5, txn="T", seen_sku="Kiwi", seen_score=0.4))
    page = signed_in.get("/lane-references/products/Lime").get_data(as_text=True)
    assert "till candidate: the camera saw Kiwi" in page
    assert page.count("till candidate") == 1  # the confident crops are not marked


def test_accepting_in_bulk_makes_attributed_lane_references_once(signed_in, settings, refs):
    version, origins = _state(settings.gallery)
    picked = _hashes(refs)[:2]
    r = signed_in.post(
        "/lane-references/products/Lime",
        data={"csrf_token": _token(signed_in, "/alerts"), "decision": "accepted", "crop": picked},
    )
    assert r.status_code == 303
    assert f"version {version + 1}: accept-lane-references: 2 references" in signed_in.get(
        r.headers["Location"]
    ).get_data(as_text=True)
    after, now = _state(settings.gallery)
    assert after == version + 1 and now.count("lane") == 2 and len(now) == len(origins) + 2
    with GalleryStore.open(settings.gallery, readonly=True) as store:
        assert store.history()[-1].operator == "alice"
    page = signed_in.get("/lane-references/products/Lime").get_data(as_text=True)
    assert not any(h in page for h in picked) and _hashes(refs)[2] in page  # decided ones are not offered again
    assert "lane reference" in signed_in.get("/gallery/products/Lime").get_data(as_text=True)


def test_rejected_crops_are_not_suggested_again_and_the_gallery_is_unchanged(signed_in, settings, refs):
    before = _state(settings.gallery)
    token = _token(signed_in, "/alerts")
    r = signed_in.post(
        "/lane-references/products/Lime", data={"csrf_token": token, "decision": "rejected", "crop": _hashes(refs)}
    )
    assert r.status_code == 303 and _state(settings.gallery) == before
    assert "No suggestions waiting for Lime" in signed_in.get("/lane-references/products/Lime").get_data(as_text=True)
    r = signed_in.post(
        "/lane-references/products/Lime", data={"csrf_token": token, "decision": "accepted", "crop": _hashes(refs)[:1]}
    )
    assert r.status_code == 400 and "not suggested for" in r.get_data(as_text=True)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"decision": "accepted"}, "choose at least one crop"),
        ({"decision": "maybe", "crop": "a" * 64}, "decision: expected accepted or rejected"),
        ({"decision": "accepted", "crop": "../../gallery.db"}, "not a crop&#39;s sha256"),
        ({"decision": "accepted", "crop": ["a" * 64] * 201}, "at most 200 crops"),
        ({"decision": "accepted", "crop": "b" * 64}, "not suggested for"),
    ],
)
def test_bad_decisions_are_refused_with_nothing_changed(signed_in, settings, data, message):
    before = _state(settings.gallery)
    r = signed_in.post("/lane-references/products/Lime", data={"csrf_token": _token(signed_in, "/alerts"), **data})
    assert r.status_code == 400 and message in r.get_data(as_text=True)
    assert _state(settings.gallery) == before


def _dismiss_as_wrong_product(client) -> tuple[str, list[str]]:
    """Dismiss the switch as "wrong product recognised"; the CSRF token and the crops its page offers."""
    token = _token(client, "/alerts")
    client.post(f"{WRONG}/verdict", data={"csrf_token": token, "decision": "dismissed", "reason": "wrong_product"})
    assert "Add its crops as lane references" in client.get(WRONG).get_data(as_text=True)
    page = client.get(f"{WRONG}/references").get_data(as_text=True)
    return token, re.findall(r'name="crop" value="(\d+)"', page)


def test_only_a_wrong_product_dismissal_offers_its_crops(signed_in, settings):
    token = _token(signed_in, "/alerts")
    for r in (
        signed_in.post(f"{WRONG}/references", data={"csrf_token": token, "sku": "Lime", "crop": "0"}),
        signed_in.get(f"{WRONG}/references"),
    ):
        assert r.status_code == 400 and "only an alert dismissed as" in r.get_data(as_text=True)
    assert "Add its crops as lane references" not in signed_in.get(WRONG).get_data(as_text=True)
    token, crops = _dismiss_as_wrong_product(signed_in)
    before = _state(settings.gallery)
    for data, message in (
        ({"sku": "No-Such-Product", "crop": crops}, "unknown product"),
        ({"sku": "Bravo-Orange-Juice"}, "tick at least one crop"),
        ({"sku": "Bravo-Orange-Juice", "crop": "99"}, "not one of this alert&#39;s crops"),
    ):
        r = signed_in.post(f"{WRONG}/references", data={"csrf_token": token, **data})
        assert r.status_code == 400 and message in r.get_data(as_text=True)
    assert _state(settings.gallery) == before


def test_the_crops_page_shows_each_crops_best_match(signed_in):
    _, crops = _dismiss_as_wrong_product(signed_in)  # the crops show Bravo-Orange-Juice; Red-Bell-Pepper was scanned
    page = signed_in.get(f"{WRONG}/references").get_data(as_text=True)
    assert len(crops) == 2 and page.count("best match Bravo-Orange-Juice 0.") == 2
    assert 'value="Red-Bell-Pepper"' in page and "2 of 2 crops look more like another product" in page
    assert 'name="override"' in page and page.count("checked") == 0  # not ticked for the scanned SKU
    page = signed_in.get(f"{WRONG}/references?sku=Bravo-Orange-Juice").get_data(as_text=True)
    assert "look more like another product" not in page and page.count(" checked>") == 2


def test_crops_matching_another_sku_better_are_refused_without_the_override(signed_in, settings):
    token, crops = _dismiss_as_wrong_product(signed_in)
    before = _state(settings.gallery)
    r = signed_in.post(f"{WRONG}/references", data={"csrf_token": token, "sku": "Lime", "crop": crops})
    text = r.get_data(as_text=True)
    assert r.status_code == 400 and "crop 1 looks more like Bravo-Orange-Juice (0." in text and "than Lime (" in text
    assert "and 1 more of the ticked crops" in text and "nothing changed" in text
    assert _state(settings.gallery) == before
    r = signed_in.post(
        f"{WRONG}/references", data={"csrf_token": token, "sku": "Lime", "crop": crops, "override": "yes"}
    )
    assert r.status_code == 303
    version, origins = _state(settings.gallery)
    assert version == before[0] + 1 and origins.count("lane") == 2
    with GalleryStore.open(settings.gallery, readonly=True) as store:
        last = store.history()[-1]
    assert last.operator == "alice" and last.action == "accept-lane-references"
    assert any(
        sku == "Lime"
        and f"from alert lane-1/{WRONG.rsplit('/', 1)[1]} against the gallery's matching" in detail
        and "crop 2 looks more like Bravo-Orange-Juice" in detail
        for sku, detail in last.entries
    )
    assert "against the gallery&#39;s matching" in signed_in.get("/gallery/history").get_data(as_text=True)


def test_crops_matching_the_product_chosen_are_added_without_the_override(signed_in, settings):
    token, crops = _dismiss_as_wrong_product(signed_in)
    before = _state(settings.gallery)
    r = signed_in.post(f"{WRONG}/references", data={"csrf_token": token, "sku": "Bravo-Orange-Juice", "crop": crops})
    assert r.status_code == 303
    with GalleryStore.open(settings.gallery, readonly=True) as store:
        last = store.history()[-1]
        origins = [r.origin for r in store.product("Bravo-Orange-Juice")[1]]
    assert last.version == before[0] + 1 and origins.count("lane") == 2
    assert not any("against the gallery's matching" in detail for _, detail in last.entries)


def test_a_folder_that_is_not_lane_references_is_refused_at_start(tmp_path, gallery_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConsoleError, match="not a lane-references folder"):
        create_app(make_settings(tmp_path, gallery_dir, references=(tmp_path / "empty",)))
