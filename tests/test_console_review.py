"""Reviewing a day of alerts through Flask's test client: a verdict records only the decision clicked
and a refused one keeps the note; the next unreviewed alert of the same list follows a verdict;
search by SKU, transaction and time in the operator's zone; thumbnails; bulk verdicts with the
same checks and audit trail as single ones."""

from __future__ import annotations

import csv
import io
import re
from html import escape
from pathlib import Path

import cv2
import numpy as np
import pytest
from console_fixtures import csrf_token as _token
from console_fixtures import make_busy_lane, make_settings
from console_fixtures import sign_in as _sign_in

from retail_reid.pipeline.console import thumbnails
from retail_reid.pipeline.console.app import create_app
from retail_reid.pipeline.console.settings import ConsoleError
from retail_reid.pipeline.console.verdicts import DB_NAME, VerdictStore

pytest.importorskip("flask")

LANE = "/alerts/lane-1/lane-1-9f3a1c2e"  # + -1 .. -4: non-scan, product switch, product switch, scan without item


@pytest.fixture
def settings(tmp_path: Path, gallery_dir: Path):
    base = make_settings(tmp_path, gallery_dir, threads=1)
    lanes = (*base.lanes, make_busy_lane(tmp_path / "lane-2"))
    return base.__class__(**{**base.__dict__, "lanes": lanes, "time_zone": "Europe/Paris"})


@pytest.fixture
def client(settings):
    client = create_app(settings).test_client()
    _sign_in(client)
    return client


def _verdicts(settings) -> list:
    return VerdictStore(settings.data / DB_NAME).all()


def _judge(client, page: str, query: str = "", **form: str):
    data = {"csrf_token": _token(client, page), **form}
    return client.post(f"{page}/verdict{query}", data=data)


def _html(client, page: str) -> str:
    return client.get(page).get_data(as_text=True)


# ---- one verdict ----------------------------------------------------------------------------------


def test_the_verdict_forms_default_button_is_disabled_so_enter_records_nothing(client):
    """Enter in a form's text field clicks its first submit button: here a disabled one, so the
    browser submits nothing (HTML's implicit submission); the decisions are the buttons after it."""
    for page, form in ((f"{LANE}-2", '<form class="verdict-form"'), ("/alerts", '<form id="bulk"')):
        body = _html(client, page).split(form, 1)[1].split("</form>", 1)[0]
        buttons = re.findall(r"<button[^>]*>", body)
        assert "disabled" in buttons[0] and 'name="decision"' not in buttons[0], page
        assert all('type="submit" name="decision"' in b for b in buttons[1:]) and len(buttons) == 3, page


def test_a_verdict_without_a_clicked_decision_is_refused_keeping_the_reason_and_the_note(client, settings):
    r = _judge(client, f"{LANE}-2", reason="wrong_product", note="a Kiwi, I think")
    html = r.get_data(as_text=True)
    assert r.status_code == 400 and "decision: expected one of confirmed, dismissed, got &#39;&#39;" in html
    assert 'value="a Kiwi, I think"' in html and re.search(r'<option value="wrong_product"[^>]*selected', html)
    assert "POS lines around it" in html  # the alert's page again, not an error page
    assert _verdicts(settings) == []


def test_a_reasons_error_shows_the_form_again_with_the_note_and_the_reason(client, settings):
    r = _judge(client, f"{LANE}-2", decision="confirmed", reason="not_a_product", note="seen twice")
    html = r.get_data(as_text=True)
    assert r.status_code == 400 and "only a dismissed alert takes a reason" in html
    assert 'value="seen twice"' in html and re.search(r'<option value="not_a_product"[^>]*selected', html)
    r = _judge(client, f"{LANE}-2", decision="dismissed", reason="other", note="  ")
    assert r.status_code == 400 and re.search(r'<option value="other"[^>]*selected', r.get_data(as_text=True))
    assert _verdicts(settings) == []


def test_after_a_verdict_the_next_unreviewed_alert_of_the_same_list_opens(client, settings):
    query = "?lane=lane-1&verdict=unreviewed"
    r = _judge(client, f"{LANE}-3", query, decision="confirmed")
    assert r.status_code == 303 and r.headers["Location"] == f"{LANE}-2{query}"  # the next one below it
    assert "confirmed: product switch lane-1/lane-1-9f3a1c2e-3" in _html(client, r.headers["Location"])
    r = _judge(client, f"{LANE}-1", query, decision="dismissed", reason="not_a_product")
    assert r.headers["Location"] == f"{LANE}-4{query}"  # none below the oldest: from the top of the list
    for key in ("-4", "-2"):
        r = _judge(client, f"{LANE}{key}", query, decision="confirmed")
    assert r.headers["Location"] == f"/alerts{query}"  # the list is done
    assert "No unreviewed alert left in this list." in _html(client, r.headers["Location"])
    assert [(v.alert_key[-1], v.decision.value) for v in _verdicts(settings)] == [
        ("3", "confirmed"),
        ("1", "dismissed"),
        ("4", "confirmed"),
        ("2", "confirmed"),
    ]


def test_an_alert_page_links_its_neighbours_in_the_list_it_was_opened_from(client):
    html = _html(client, f"{LANE}-3?lane=lane-1")
    assert f'href="{LANE}-4?lane=lane-1" rel="prev"' in html and f'href="{LANE}-2?lane=lane-1" rel="next"' in html
    assert 'href="/alerts?lane=lane-1" data-key="l"' in html
    assert f'action="{LANE}-3/verdict?lane=lane-1"' in html  # the list travels with the verdict
    for key in ("c", "d", "e", "n", "p", "l", "1", "4"):  # the shortcuts, marked on what they press
        assert f'data-key="{key}"' in html, key
    assert '<script src="/static/review.js" defer></script>' in html
    html = _html(client, f"{LANE}-3?lane=lane-1&type=product_switch")
    assert 'rel="prev"' not in html and f'href="{LANE}-2?lane=lane-1&amp;type=product_switch" rel="next"' in html


def test_the_keyboard_script_is_served_from_the_console_and_allowed_by_the_policy(client):
    r = client.get("/static/review.js")
    assert r.status_code == 200 and "data-key" in r.get_data(as_text=True)
    policy = client.get("/alerts").headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy and "unsafe-inline" not in policy


# ---- search and time zone -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query, shown",
    [
        ("sku=kiwi", 9),  # lane-1's switch, the replay's non-scan, 7 of the busy lane's 50 (4 seen, 3 scanned)
        ("sku=kiwi&lane=lane-1", 1),
        ("txn=T103", 10),  # a transaction, exactly (not T1, T100 ...)
        ("txn=t1", 6),  # the fixtures' transaction T1: lane-1's 4 and the replay's 2
        ("from=2025-12-29T10:20&to=2025-12-29T10:20&lane=lane-1", 2),  # the minute 10:20 in Paris: 09:20 UTC
        ("from=2025-12-29T10:37&to=2025-12-29T10:39", 3),  # the busy lane, a minute apart from 10:36:40
        ("from=2025-12-29&to=2025-12-29", 54),  # the day in Paris: both lanes
    ],
)
def test_search_by_sku_transaction_and_time_in_the_operators_zone(client, query, shown):
    assert f"{shown} shown" in _html(client, f"/alerts?{query}")


@pytest.mark.parametrize(
    "query, message",
    [
        ("from=10:20", "from: expected a date YYYY-MM-DD or a time YYYY-MM-DDTHH:MM"),
        ("to=2025-13-01", "to: expected a date YYYY-MM-DD or a time"),
        ("sku=" + "x" * 129, "sku: at most 128 characters, got 129"),
        ("txn=" + "x" * 200, "txn: at most 128 characters, got 200"),
    ],
)
def test_a_bad_search_is_refused_naming_the_field(client, query, message):
    r = client.get(f"/alerts?{query}")
    assert r.status_code == 400 and message in r.get_data(as_text=True)


def test_times_are_written_in_the_operators_zone_with_utc_on_hover(client):
    html = _html(client, "/alerts?lane=lane-1")
    assert (
        '<time datetime="2025-12-29T09:20:12+00:00" title="2025-12-29 09:20:12 UTC">2025-12-29 10:20:12 CET</time>'
        in (html)
    )
    assert "Times in Europe/Paris" in html
    assert 'title="2025-12-29 09:20:40 UTC">2025-12-29 10:20:40 CET' in _html(client, f"{LANE}-2")


def test_an_unknown_time_zone_is_a_one_line_error_naming_the_flag(settings):
    bad = settings.__class__(**{**settings.__dict__, "time_zone": "Mars/Olympus"})
    with pytest.raises(ConsoleError, match=r"^--time-zone 'Mars/Olympus': not an IANA time zone name"):
        create_app(bad)
    with pytest.raises(ConsoleError, match=re.escape("--time-zone '../etc/passwd'")):
        settings.__class__(**{**settings.__dict__, "time_zone": "../etc/passwd"}).check()


# ---- thumbnails -----------------------------------------------------------------------------------


def test_each_alert_has_a_small_thumbnail_of_its_crop_kept_by_the_browser(client, monkeypatch):
    html = _html(client, "/alerts?lane=lane-1")
    assert f'src="{LANE}-1/thumbnail"' in html and f'src="{LANE}-4/thumbnail"' not in html  # no picture kept
    r = client.get(f"{LANE}-1/thumbnail")
    image = cv2.imdecode(np.frombuffer(r.data, np.uint8), cv2.IMREAD_COLOR)
    assert r.status_code == 200 and r.mimetype == "image/jpeg" and max(image.shape[:2]) == thumbnails.SIDE
    assert r.headers["Cache-Control"] == "private, max-age=3600"
    assert client.get(f"{LANE}-4/thumbnail").status_code == 404
    monkeypatch.setattr(thumbnails, "MAX_SOURCE_BYTES", 1000)  # a file over the bound is not decoded
    assert client.get(f"{LANE}-3/thumbnail").status_code == 404


def test_a_thumbnail_needs_a_signed_in_operator(settings):
    r = create_app(settings).test_client().get(f"{LANE}-1/thumbnail")
    assert r.status_code == 302 and r.headers["Location"].startswith("/login?next=")


# ---- bulk verdicts --------------------------------------------------------------------------------


def _bulk(client, alerts: list[str], query: str = "", token: str | None = None, **form: str):
    data = {"csrf_token": _token(client, "/alerts") if token is None else token, "alert": alerts, **form}
    return client.post(f"/alerts/verdicts{query}", data=data)


def test_a_bulk_verdict_is_one_attributed_row_per_alert_like_single_verdicts(client, settings):
    busy = [f"lane-2/lane-2-busy-{i}" for i in (1, 2, 3)]
    r = _bulk(client, [*busy, busy[0]], "?lane=lane-2", decision="dismissed", reason="wrong_product", note="glare")
    assert r.status_code == 303 and r.headers["Location"] == "/alerts?lane=lane-2"
    assert "dismissed (wrong product recognised): 3 alerts" in _html(client, r.headers["Location"])
    _judge(client, f"{LANE}-2", decision="confirmed", note="single")
    rows = list(csv.DictReader(io.StringIO(_html(client, "/verdicts.csv"))))
    assert [(r["source"], r["alert_key"], r["decision"], r["reason"], r["note"], r["reviewer"]) for r in rows] == [
        *[("lane-2", key.split("/")[1], "dismissed", "wrong_product", "glare", "alice") for key in busy],
        ("lane-1", "lane-1-9f3a1c2e-2", "confirmed", "", "single", "alice"),
    ]
    assert {r["alert_type"] for r in rows[:3]} == {"product_switch"} and rows[0]["alert_time_utc"]
    assert "3 shown" in _html(client, "/alerts?lane=lane-2&verdict=dismissed")


@pytest.mark.parametrize(
    "alerts, form, message",
    [
        ([], {"decision": "confirmed"}, "alert: tick at least one alert"),
        (["lane-2/lane-2-busy-1", "lane-2/nope"], {"decision": "confirmed"}, "alert: no alert &#39;lane-2/nope&#39;"),
        (["nowhere/1"], {"decision": "confirmed"}, "alert: no alert &#39;nowhere/1&#39;"),
        (["lane-2/lane-2-busy-1"], {"note": "no button"}, "decision: expected one of confirmed, dismissed"),
        (["lane-2/lane-2-busy-1"], {"decision": "dismissed", "note": "why"}, "a dismissed alert needs a reason"),
        (
            ["lane-2/lane-2-busy-1", "replay-a/1"],
            {"decision": "dismissed", "reason": "two_items", "note": "kept"},
            "lane-2/lane-2-busy-1 (product switch): reason: expected one of",
        ),
        ([f"lane-2/lane-2-busy-{i}" for i in range(1, 51)] * 3, {"decision": "confirmed"}, None),
    ],
)
def test_a_bad_bulk_verdict_stores_nothing_and_keeps_the_form(client, settings, alerts, form, message):
    r = _bulk(client, alerts, **form)
    if message is None:  # 50 alerts (repeated) are 50: at most a page's worth at once is fine
        assert r.status_code == 303 and len(_verdicts(settings)) == 50
        return
    html = r.get_data(as_text=True)
    assert r.status_code == 400 and message in html and _verdicts(settings) == []
    if "note" in form:
        assert f'value="{escape(form["note"])}"' in html
    for ref in alerts[:1]:
        if not ref.startswith("nowhere"):
            assert re.search(rf'value="{ref}" form="bulk"[^>]*checked', html), ref


def test_a_bulk_verdict_over_a_page_of_alerts_is_refused(client, settings, monkeypatch):
    monkeypatch.setattr("retail_reid.pipeline.console.alert_views.MAX_BULK", 2)
    r = _bulk(client, [f"lane-2/lane-2-busy-{i}" for i in (1, 2, 3)], decision="confirmed")
    assert r.status_code == 400 and "alert: at most 2 alerts at once, got 3" in r.get_data(as_text=True)
    assert _verdicts(settings) == []


def test_a_bulk_verdict_needs_sign_in_and_its_csrf_token(client, settings):
    assert _bulk(client, ["lane-2/lane-2-busy-1"], token="forged", decision="confirmed").status_code == 400
    r = client.post("/alerts/verdicts", data={"alert": ["lane-2/lane-2-busy-1"], "decision": "confirmed"})
    assert r.status_code == 400 and "CSRF token is missing" in r.get_data(as_text=True)
    signed_out = create_app(settings).test_client()
    r = signed_out.post("/alerts/verdicts", data={"csrf_token": _token(signed_out), "decision": "confirmed"})
    assert r.status_code == 401
    assert _verdicts(settings) == []
