"""The console in a real browser: Debian's Chromium, driven by Selenium through Debian's
chromedriver (named explicitly, so Selenium Manager never downloads one). An operator signs in,
reviews an alert, uploads a photo to a product and sees the new gallery version, accepts lane
references, and rolls back (its preview first, then its confirmation).
A screenshot of each main page is saved under the test's tmp folder (docs/console.md shows them)."""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import pytest
from console_fixtures import PASSWORDS, SAMPLE_VAL, make_busy_lane, make_lane_references, make_settings

from retail_reid.gallery.store import GalleryStore
from retail_reid.pipeline.console.app import create_app
from retail_reid.pipeline.console.server import make_server
from retail_reid.pipeline.console.settings import Bind
from retail_reid.pipeline.console.verdicts import DB_NAME, VerdictStore

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (scripts/test.sh installs them)",
)


def _serve(settings):
    """The console served by waitress on a free loopback port, as `reid console` serves it."""
    server = make_server(create_app(settings), settings, Bind("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    server.close()
    thread.join()


@pytest.fixture
def console(tmp_path: Path, gallery_dir: Path):
    settings = make_settings(
        tmp_path,
        gallery_dir,
        references=(make_lane_references(tmp_path / "lane-refs"),),
        threads=2,
        time_zone="Europe/Paris",  # the pages write times in it, UTC on hover
    )
    for base in _serve(settings):
        yield base, gallery_dir


@pytest.fixture
def busy_console(tmp_path: Path, gallery_dir: Path):
    """The console over the fixtures' folders and a lane with 50 alerts to review (lane-2), its
    verdicts database."""
    settings = make_settings(tmp_path, gallery_dir, threads=2)
    settings = settings.__class__(
        **{**settings.__dict__, "lanes": (*settings.lanes, make_busy_lane(tmp_path / "lane-2"))}
    )
    for base in _serve(settings):
        yield base, settings.data / DB_NAME


@pytest.fixture
def browser(tmp_path: Path):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000", "--lang=en"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(20)
    yield driver
    driver.quit()


def _shot(driver, folder: Path, name: str) -> None:
    """A screenshot of the whole page, below the window's fold too (Chrome DevTools' capture)."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 3000), "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    (folder / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))


def _mark_page(driver) -> None:
    """Mark the document shown now; the next page loaded starts without the mark."""
    driver.execute_script("window.__reidOldPage = true")


def _wait_next_page(driver) -> None:
    """Wait until a new document has replaced the marked one and has loaded whole.

    Chromium answers a query about the dying document with assorted errors while it navigates
    ("Node with given id does not belong to the document", a lost execution context), so those
    count as "not yet" rather than failing the test; keys sent before the wait ends would hit it.
    """
    WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script("return window.__reidOldPage === undefined && document.readyState === 'complete'")
    )


def _go(driver, element) -> None:
    """Click a link or a form's button and wait until the next page has replaced this one."""
    _mark_page(driver)
    element.click()
    _wait_next_page(driver)


def _text(driver) -> str:
    return driver.find_element(By.TAG_NAME, "main").text


def _sign_in(driver, base: str, page: str) -> None:
    """Sign in as alice from `page` with the keyboard (Enter in the password signs in)."""
    driver.get(f"{base}{page}")
    driver.find_element(By.NAME, "operator").send_keys("alice")
    _mark_page(driver)
    driver.find_element(By.NAME, "password").send_keys(PASSWORDS["alice"] + Keys.ENTER)
    _wait_next_page(driver)
    assert page in driver.current_url


def _press(driver, keys: str, leaves: bool = True) -> None:
    """Press keys on the page (not in a field); with `leaves`, wait for the page they lead to."""
    if leaves:
        _mark_page(driver)
    ActionChains(driver).send_keys(keys).perform()
    if leaves:
        _wait_next_page(driver)


def _key_of(driver) -> str:
    """The alert the page shows (the last part of its address)."""
    return driver.current_url.split("?")[0].rsplit("/", 1)[1]


def test_review_an_alert_upload_a_photo_and_roll_back_in_chromium(console, browser, tmp_path):
    base, gallery = console
    shots = tmp_path / "screenshots"
    shots.mkdir()
    b = browser

    b.get(f"{base}/alerts")
    assert "/login" in b.current_url  # every page asks for sign-in first
    _shot(b, shots, "login")
    b.find_element(By.NAME, "operator").send_keys("alice")
    b.find_element(By.NAME, "password").send_keys(PASSWORDS["alice"])
    _go(b, b.find_element(By.CSS_SELECTOR, "form.login button"))
    assert b.current_url.endswith("/alerts") and "6 shown" in _text(b)
    _shot(b, shots, "alerts")

    Select(b.find_element(By.NAME, "type")).select_by_value("product_switch")
    Select(b.find_element(By.NAME, "lane")).select_by_visible_text("lane-1")
    _go(b, b.find_element(By.CSS_SELECTOR, "form.filters button"))
    assert "2 shown" in _text(b)
    _go(b, b.find_elements(By.LINK_TEXT, "Open")[-1])  # the older switch: Bravo-Orange-Juice scanned as Red-Bell-Pepper
    assert "Red-Bell-Pepper" in _text(b)
    crops = b.find_elements(By.CSS_SELECTOR, ".crops img")
    assert len(crops) == 2 and all(b.execute_script("return arguments[0].naturalWidth", img) > 0 for img in crops)
    pictures = b.find_elements(By.CSS_SELECTOR, ".lane-frame img")  # the lane mid-pass (its clip: the test below)
    assert len(pictures) == 1 and all(b.execute_script("return arguments[0].naturalWidth", i) > 0 for i in pictures)
    assert "Red-Bell-Pepper" in b.find_element(By.CSS_SELECTOR, "tr.hit").text  # the lane's own POS record
    _shot(b, shots, "alert")
    Select(b.find_element(By.NAME, "reason")).select_by_value("wrong_product")
    b.find_element(By.NAME, "note").send_keys("a Kiwi in the hand")
    _go(b, b.find_element(By.CSS_SELECTOR, "button.dismiss"))  # then the list's next unreviewed alert: the other switch
    assert "dismissed (wrong product recognised): product switch lane-1/lane-1-9f3a1c2e-2" in _text(b)
    assert "Kiwi" in b.find_element(By.CSS_SELECTOR, "table.kv").text
    _go(b, b.find_element(By.CSS_SELECTOR, "a[rel=next]"))  # the one just reviewed, below it in the list
    assert "dismissed (wrong product recognised) by alice" in _text(b).lower()
    _shot(b, shots, "alert-reviewed")
    _go(b, b.find_element(By.PARTIAL_LINK_TEXT, "Add its crops as lane references"))  # each crop matched first
    assert _text(b).count("best match Bravo-Orange-Juice") == 2
    assert "2 of 2 crops look more like another product than Red-Bell-Pepper" in _text(b)
    assert not any(box.is_selected() for box in b.find_elements(By.CSS_SELECTOR, "input[name=crop]"))
    _shot(b, shots, "alert-references")

    b.get(f"{base}/alerts/replay-a/1")  # the same views over a replay's output folder, with its POS lines
    hit = b.find_element(By.CSS_SELECTOR, "tr.hit")
    assert "Lemon" in hit.text and "Granny-Smith" in _text(b)
    _shot(b, shots, "replay-alert")
    _go(b, b.find_element(By.CSS_SELECTOR, "button.confirm"))
    assert "confirmed: product switch replay-a/1" in _text(b)

    _go(b, b.find_element(By.LINK_TEXT, "Precision"))
    assert "product switch" in _text(b) and "0.00" in _text(b) and "1.00" in _text(b)
    charts = b.find_elements(By.CSS_SELECTOR, "figure.chart svg")  # loss alerts' precision; alerts per lane-hour
    assert len(charts) == 2 and all(c.rect["width"] > 300 and c.rect["height"] > 50 for c in charts)
    assert {"lane-1", "replay-a", "2026-W01"} <= {t.text for t in charts[0].find_elements(By.TAG_NAME, "text")}
    _shot(b, shots, "precision")

    _go(b, b.find_element(By.LINK_TEXT, "Gallery"))
    _shot(b, shots, "gallery")
    _go(b, b.find_element(By.PARTIAL_LINK_TEXT, "Lime"))
    n_before = len(b.find_elements(By.CSS_SELECTOR, ".ref"))
    with GalleryStore.open(gallery, readonly=True) as store:
        before = store.history()[-1].version
    b.find_element(By.CSS_SELECTOR, "form.upload input[type=file]").send_keys(str(SAMPLE_VAL / "Lime" / "Lime_004.jpg"))
    _go(b, b.find_element(By.CSS_SELECTOR, "form.upload button"))
    assert f"version {before + 1}: add: 1 reference for 1 SKU (Lime)" in _text(b)
    assert len(b.find_elements(By.CSS_SELECTOR, ".ref")) == n_before + 1
    _shot(b, shots, "product")

    _go(b, b.find_element(By.LINK_TEXT, "Lane references"))  # the lanes' confident crops, offered per product
    _shot(b, shots, "lane-references")
    _go(b, b.find_element(By.LINK_TEXT, "Review"))
    boxes = b.find_elements(By.CSS_SELECTOR, "form.lane-refs input[type=checkbox]")
    assert len(boxes) == 3 and all(box.is_selected() for box in boxes)
    boxes[2].click()  # accept two of the three
    _shot(b, shots, "lane-reference")
    _go(b, b.find_element(By.CSS_SELECTOR, "button.accept"))
    assert f"version {before + 2}: accept-lane-references: 2 references for 1 SKU (Lime)" in _text(b)
    assert len(b.find_elements(By.CSS_SELECTOR, "form.lane-refs input[type=checkbox]")) == 1
    with GalleryStore.open(gallery, readonly=True) as store:
        last = store.history()[-1]
        assert (last.action, last.operator) == ("accept-lane-references", "alice")
        assert [r.origin for r in store.product("Lime")[1]].count("lane") == 2

    _go(b, b.find_element(By.LINK_TEXT, "History"))
    top = b.find_element(By.CSS_SELECTOR, "table.list tbody tr")
    assert f"v{before + 2}" in top.text and "alice" in top.text and "current" in top.text
    _go(b, b.find_element(By.LINK_TEXT, f"Roll back to v{before}…"))  # undoes the upload and the crops: a preview first
    preview = _text(b)
    assert f"This makes version {before + 3} with the contents of version {before}" in preview
    assert "Photos removed 3" in preview and "Products removed" not in preview and "Photos brought back" not in preview
    removed = b.find_elements(By.CSS_SELECTOR, ".ref img")
    assert len(removed) == 3 and all(b.execute_script("return arguments[0].naturalWidth", i) > 0 for i in removed)
    _shot(b, shots, "rollback-preview")
    with GalleryStore.open(gallery, readonly=True) as store:
        assert store.history()[-1].version == before + 2  # the preview changed nothing
    _go(b, b.find_element(By.CSS_SELECTOR, "form.confirm-change button.confirm"))
    assert f"version {before + 3}: rolled back to the contents of version {before}" in _text(b)
    _shot(b, shots, "history")
    with GalleryStore.open(gallery, readonly=True) as store:
        last = store.history()[-1]
        assert (last.version, last.action, last.operator) == (before + 3, "rollback", "alice")
        assert len(store.product("Lime")[1]) == n_before

    _go(b, b.find_element(By.CSS_SELECTOR, ".who button"))
    assert "/login" in b.current_url
    assert sorted(p.name for p in shots.iterdir()) == sorted(
        f"{n}.png"
        for n in (
            "login",
            "alerts",
            "alert",
            "alert-reviewed",
            "alert-references",
            "replay-alert",
            "precision",
            "gallery",
            "product",
            "lane-references",
            "lane-reference",
            "rollback-preview",
            "history",
        )
    )


# the state of a <video> element once the browser has loaded what it needs to show a frame
VIDEO_STATE = """const v = arguments[0];
return {ready: v.readyState, duration: v.duration, width: v.videoWidth, height: v.videoHeight,
        error: v.error ? v.error.code + ' ' + v.error.message : null};"""


def _settled(state: dict) -> bool:
    """The video has a frame to show, or has failed."""
    return state["ready"] >= 2 or state["error"] is not None


def test_an_alert_clip_the_lane_wrote_plays_in_chromium_and_an_older_avi_shows_its_frames(console, browser):
    """The clip `ClipEvidenceWriter` wrote (H.264 MP4) through the console's page into Chromium's
    own decoder: it loads without a media error, has a first frame and its duration; it plays."""
    base, _ = console
    b = browser
    b.get(f"{base}/login")
    b.find_element(By.NAME, "operator").send_keys("alice")
    b.find_element(By.NAME, "password").send_keys(PASSWORDS["alice"])
    _go(b, b.find_element(By.CSS_SELECTOR, "form.login button"))
    b.get(f"{base}/alerts/lane-1/lane-1-9f3a1c2e-2")
    [video] = b.find_elements(By.CSS_SELECTOR, ".clip video")
    WebDriverWait(b, 30).until(lambda d: _settled(d.execute_script(VIDEO_STATE, video)))
    state = b.execute_script(VIDEO_STATE, video)
    assert state["error"] is None and state["ready"] >= 2, state  # HAVE_CURRENT_DATA: a frame decoded
    assert (state["width"], state["height"]) == (320, 240) and 2.0 < state["duration"] < 3.5, state
    b.execute_script("arguments[0].play()", video)  # muted: Chromium lets a page play it without a gesture
    WebDriverWait(b, 30).until(lambda d: d.execute_script("return arguments[0].currentTime", video) > 0)
    assert b.execute_script(VIDEO_STATE, video)["error"] is None
    b.get(f"{base}/alerts/lane-1/lane-1-9f3a1c2e-3")  # an older lane's MJPEG AVI: browsers play none, stills
    stills = b.find_elements(By.CSS_SELECTOR, ".clip img")
    assert len(stills) == 12 and all(b.execute_script("return arguments[0].naturalWidth", i) > 0 for i in stills)
    assert not b.find_elements(By.CSS_SELECTOR, ".clip video")


def test_enter_in_the_note_records_nothing_and_shortcuts_wait_while_typing(busy_console, browser):
    base, db = busy_console
    b = browser
    page = "/alerts/lane-2/lane-2-busy-7?lane=lane-2"
    _sign_in(b, base, page)
    Select(b.find_element(By.NAME, "reason")).select_by_value("not_a_product")
    note = b.find_element(By.NAME, "note")
    note.send_keys("crushed, dented; press n or p" + Keys.ENTER)  # Enter, and every shortcut key, in the note
    note.send_keys(Keys.ENTER)
    assert page in b.current_url and note.get_attribute("value") == "crushed, dented; press n or p"
    _go(b, b.find_element(By.CSS_SELECTOR, "button.dismiss"))  # the one decision clicked
    [verdict] = VerdictStore(db).all()
    assert (verdict.alert_key, verdict.decision.value, verdict.reason.value, verdict.note) == (
        "lane-2-busy-7",
        "dismissed",
        "not_a_product",
        "crushed, dented; press n or p",
    )


def test_fifty_alerts_reviewed_with_the_keyboard_alone(busy_console, browser):
    """The issue's target: an analyst reviews a lane's 50 alerts with the keyboard alone."""
    base, db = busy_console
    b = browser
    _sign_in(b, base, "/alerts?lane=lane-2&verdict=unreviewed")
    assert "50 shown" in _text(b) and "n" in b.find_element(By.CSS_SELECTOR, "p.keys kbd").text
    _press(b, "n")  # review this list: its newest alert
    assert _key_of(b) == "lane-2-busy-50"
    _press(b, "n")
    assert _key_of(b) == "lane-2-busy-49"
    _press(b, "p")
    assert _key_of(b) == "lane-2-busy-50"
    expected = {}
    for i in range(50):
        key = _key_of(b)
        if i % 10 == 3:  # dismissed: reason 2 (item not a product), then d
            _press(b, "2", leaves=False)
            _press(b, "d")
            expected[key] = ("dismissed", "not_a_product", "")
        elif i % 10 == 7:  # a note first: e, type (shortcut letters too), Esc, then c
            _press(b, "e", leaves=False)
            _press(b, "checked the clip", leaves=False)
            _press(b, Keys.ESCAPE, leaves=False)
            _press(b, "c")
            expected[key] = ("confirmed", None, "checked the clip")
        else:
            _press(b, "c")
            expected[key] = ("confirmed", None, "")
    assert "No unreviewed alert left in this list." in _text(b) and "0 shown" in _text(b)
    verdicts = VerdictStore(db).all()
    assert len(verdicts) == 50 and {v.reviewer for v in verdicts} == {"alice"}
    got = {v.alert_key: (v.decision.value, v.reason.value if v.reason else None, v.note) for v in verdicts}
    assert got == expected and set(got) == {f"lane-2-busy-{i}" for i in range(1, 51)}
    assert [v.alert_key for v in verdicts] == [f"lane-2-busy-{i}" for i in range(50, 0, -1)]  # newest first


def test_search_and_a_bulk_verdict_in_the_alert_list(busy_console, browser, tmp_path):
    base, db = busy_console
    b = browser
    _sign_in(b, base, "/alerts")
    assert "56 shown" in _text(b)
    thumbs = b.find_elements(By.CSS_SELECTOR, "td.thumb img")
    assert len(thumbs) == 55  # every alert but lane-1's scan without item, which kept no picture
    b.find_element(By.NAME, "sku").send_keys("kiwi")
    _go(b, b.find_element(By.CSS_SELECTOR, "form.filters button"))
    assert "9 shown" in _text(b)
    for img in b.find_elements(By.CSS_SELECTOR, "td.thumb img"):
        b.execute_script("arguments[0].scrollIntoView()", img)
        WebDriverWait(b, 30).until(lambda d, i=img: d.execute_script("return arguments[0].complete", i))
        assert b.execute_script("return arguments[0].naturalWidth", img) > 0
    b.find_element(By.NAME, "sku").clear()
    b.find_element(By.NAME, "txn").send_keys("T103" + Keys.ENTER)  # Enter in a filter searches
    WebDriverWait(b, 30).until(lambda d: "txn=T103" in d.current_url)
    assert "10 shown" in _text(b)
    b.find_element(By.CSS_SELECTOR, "input[data-select-all]").click()  # every alert of the page
    boxes = b.find_elements(By.CSS_SELECTOR, "input[name=alert]")
    assert len(boxes) == 10 and all(box.is_selected() for box in boxes)
    boxes[0].click()
    boxes[1].click()  # all but two
    Select(b.find_element(By.CSS_SELECTOR, "#bulk select[name=reason]")).select_by_value("wrong_product")
    b.find_element(By.CSS_SELECTOR, "#bulk input[name=note]").send_keys("glare on the belt" + Keys.ENTER)
    assert VerdictStore(db).all() == []  # Enter in the bulk note records nothing either
    _shot(b, tmp_path, "bulk")
    _go(b, b.find_element(By.CSS_SELECTOR, "#bulk button.dismiss"))
    assert "dismissed (wrong product recognised): 8 alerts" in _text(b) and "txn=T103" in b.current_url
    verdicts = VerdictStore(db).all()
    assert len(verdicts) == 8 and {(v.reason.value, v.note, v.reviewer) for v in verdicts} == {
        ("wrong_product", "glare on the belt", "alice")
    }
    assert {v.alert_key for v in verdicts} == {f"lane-2-busy-{i}" for i in range(31, 39)}  # the newest two untouched
