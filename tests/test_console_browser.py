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
from console_fixtures import PASSWORDS, SAMPLE_VAL, make_lane_references, make_settings

from retail_reid.gallery.store import GalleryStore
from retail_reid.pipeline.console.app import create_app
from retail_reid.pipeline.console.server import make_server
from retail_reid.pipeline.console.settings import Bind

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (scripts/test.sh installs them)",
)


@pytest.fixture
def console(tmp_path: Path, gallery_dir: Path):
    """The console served by waitress on a free loopback port, as `reid console` serves it."""
    settings = make_settings(
        tmp_path, gallery_dir, references=(make_lane_references(tmp_path / "lane-refs"),), threads=2
    )
    server = make_server(create_app(settings), settings, Bind("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}", gallery_dir
    server.close()
    thread.join()


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


def _go(driver, element) -> None:
    """Click a link or a form's button and wait until the next page has replaced this one."""
    page = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 30).until(expected_conditions.staleness_of(page))


def _text(driver) -> str:
    return driver.find_element(By.TAG_NAME, "main").text


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
    pictures = b.find_elements(By.CSS_SELECTOR, ".lane-frame img, .clip img")  # the lane mid-pass, the clip's frames
    assert len(pictures) == 13 and all(b.execute_script("return arguments[0].naturalWidth", i) > 0 for i in pictures)
    assert "Red-Bell-Pepper" in b.find_element(By.CSS_SELECTOR, "tr.hit").text  # the lane's own POS record
    _shot(b, shots, "alert")
    Select(b.find_element(By.NAME, "reason")).select_by_value("wrong_product")
    b.find_element(By.NAME, "note").send_keys("a Kiwi in the hand")
    _go(b, b.find_element(By.CSS_SELECTOR, "button.dismiss"))
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
    assert "confirmed by alice" in _text(b).lower()

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
