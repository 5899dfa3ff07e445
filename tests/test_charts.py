"""The charts beside the tables: what they draw, computed from known verdicts, alerts and recordings
(the console's precision per lane and week and alerts per lane-hour; the chain summary's alerts per
lane-hour by store and lane and its slowest recordings), as SVG a strict page can inline; and, in
Chromium, the batch summary page showing its charts."""

from __future__ import annotations

import html
import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import pytest
from console_fixtures import LANE_T0, make_lane, make_users, sign_in

from retail_reid.cli import main
from retail_reid.pipeline.batch.manifest import Recording
from retail_reid.pipeline.batch.page import lane_rates, render_page, slowest_speeds
from retail_reid.pipeline.batch.summary import chain_summary
from retail_reid.pipeline.batch.worker import Outcome, Status
from retail_reid.pipeline.charts import bar_chart, inline_svg, line_chart
from retail_reid.pipeline.config import LaneConfig
from retail_reid.pipeline.console.alerts import AlertFolder, SourceKind
from retail_reid.pipeline.console.app import create_app
from retail_reid.pipeline.console.settings import ConsoleSettings
from retail_reid.pipeline.console.trends import (
    LaneDay,
    LaneWeek,
    alerts_per_lane_hour,
    lane_activity,
    precision_chart,
    weekly_precision,
)
from retail_reid.pipeline.console.verdicts import Decision, Reason, Verdict, VerdictStore
from retail_reid.pipeline.records import Event, EventType

MONDAY = datetime(2026, 11, 30, tzinfo=timezone.utc).timestamp()  # ISO week 2026-W49
WEEK = 7 * 86400
HOUR = 3600


def _verdict(key: str, lane: str, kind: str, t: float, decision: Decision, decided_at: float) -> Verdict:
    return Verdict(
        source="s",
        alert_key=key,
        lane=lane,
        alert_type=kind,
        alert_time=t,
        decision=decision,
        reason=Reason.WRONG_PRODUCT if decision is Decision.DISMISSED else None,
        note="",
        reviewer="alice",
        decided_at=decided_at,
    )


def test_precision_per_lane_and_week_adds_the_types_of_each_alerts_latest_verdict(tmp_path):
    store = VerdictStore(tmp_path / "verdicts.db")
    C, D = Decision.CONFIRMED, Decision.DISMISSED
    for args in [
        ("a", "L1", "non_scan", MONDAY + 10, D, 1),
        ("a", "L1", "non_scan", MONDAY + 10, C, 2),  # changed: the latest counts
        ("b", "L1", "product_switch", MONDAY + 20, D, 3),
        ("c", "L1", "product_switch", MONDAY + WEEK, C, 4),  # the next week
        ("d", "L2", "unknown_item", MONDAY + 30, D, 5),
        ("e", "L2", "non_scan", MONDAY + 40, D, 6),
    ]:
        store.record(_verdict(*args))
    weeks = weekly_precision(store.precision())
    store.close()
    assert weeks == [
        LaneWeek(lane="L1", week="2026-W49", confirmed=1, dismissed=1),
        LaneWeek(lane="L1", week="2026-W50", confirmed=1, dismissed=0),
        LaneWeek(lane="L2", week="2026-W49", confirmed=0, dismissed=2),
    ]
    assert [w.precision for w in weeks] == [0.5, 1.0, 0.0]
    svg = precision_chart("precision-loss", "Precision of loss alerts", weeks)
    assert _texts(svg) >= {"L1", "L2", "2026-W49", "2026-W50", "precision"}


def test_alerts_per_lane_hour_counts_the_hours_a_lane_was_at_work():
    alerts = {"L1": [MONDAY + 9 * HOUR + 60, MONDAY + 9 * HOUR + 120, MONDAY + 13 * HOUR]}
    at_work = {  # POS events: L1 at work 09:00-11:00 (three hours) and on Tuesday at 08:00; L2 without alerts
        "L1": [MONDAY + 9 * HOUR + 5, MONDAY + 10 * HOUR, MONDAY + 11 * HOUR + 59 * 60, MONDAY + 86400 + 8 * HOUR],
        "L2": [MONDAY + 12 * HOUR],
    }
    assert alerts_per_lane_hour(alerts, at_work) == [
        LaneDay(lane="L1", day="2026-11-30", alerts=3, lane_hours=4),  # 09, 10, 11, and 13 (an alert)
        LaneDay(lane="L1", day="2026-12-01", alerts=0, lane_hours=1),
        LaneDay(lane="L2", day="2026-11-30", alerts=0, lane_hours=1),
    ]
    assert alerts_per_lane_hour(alerts, at_work)[0].per_lane_hour == 0.75
    assert alerts_per_lane_hour({}, {}) == []


def test_only_the_most_recent_days_are_kept():
    days = alerts_per_lane_hour({"L1": [MONDAY + d * 86400 for d in range(40)]}, {})
    assert len(days) == 28 and days[0].day == "2026-12-12" and days[-1].day == "2027-01-08"


def test_a_live_lanes_alerts_and_pos_events_make_its_lane_hours(tmp_path):
    lane = AlertFolder("lane-1", SourceKind.LANE, make_lane(tmp_path / "lane-1", lane="till-7"))
    alerts, at_work = lane_activity([lane, AlertFolder("r", SourceKind.REPLAY, tmp_path / "lane-1")])
    assert alerts == {"till-7": [LANE_T0 + 12, LANE_T0 + 40, LANE_T0 + 75, LANE_T0 + 90]}  # the replay not counted
    assert at_work == {"till-7": [LANE_T0 + 5, LANE_T0 + 30, LANE_T0 + 40.5, LANE_T0 + 59, LANE_T0 + 300]}
    assert alerts_per_lane_hour(alerts, at_work) == [LaneDay(lane="till-7", day="2025-12-29", alerts=4, lane_hours=1)]


def test_a_precision_page_with_nothing_to_chart_says_so(tmp_path, gallery_dir):
    idle = tmp_path / "lane-idle"  # a lane that has not written anything yet
    idle.mkdir()
    settings = ConsoleSettings(
        lanes=(idle,), replays=(), gallery=gallery_dir, users=make_users(tmp_path / "users.toml"), data=tmp_path / "d"
    )
    client = create_app(settings).test_client()
    sign_in(client)
    r = client.get("/precision")
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and "<svg" not in page
    assert "No verdicts yet: precision is charted once alerts are reviewed." in page
    assert "No lane at work yet: no live lane has received a POS event or raised an alert." in page
    assert "'unsafe-inline'" not in r.headers["Content-Security-Policy"]  # the charts need no inline style


def _texts(svg: str) -> set[str]:
    """The words a chart shows."""
    return {html.unescape(t) for t in re.findall(r"<text[^>]*>([^<]+)</text>", svg)}


LABELS = ["S1 / L1", "S1 / L<2>", "$\\bad$ till"]  # markup and mathtext are names, written as they are


def _bars() -> str:
    return bar_chart("rates", "Alerts <per> lane-hour", LABELS, [2.5, 0.0, 1.0], "alerts per lane-hour")


def test_a_chart_is_an_inline_svg_a_strict_page_can_show():
    svg = _bars()
    assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg"') and svg.endswith("</svg>")
    assert _texts(svg) >= {*LABELS, "2.5", "0", "alerts per lane-hour"}
    assert '<title id="rates-title">Alerts &lt;per&gt; lane-hour</title>' in svg and 'role="img"' in svg
    assert not re.search(r"\sstyle=|<style|<script|<metadata|<!--|xlink:", svg)  # nothing a CSP blocks
    ids = re.findall(r'\sid="([^"]+)"', svg)
    assert ids and all(i.startswith("rates-") for i in ids) and len(ids) == len(set(ids))
    refs = re.findall(r'url\(#([^)]+)\)|href="#([^"]+)"', svg)
    assert refs and {a or b for a, b in refs} <= set(ids)  # every reference is to the chart's own ids
    two = line_chart("weeks", "t", ["2026-W01", "2026-W02"], {"L1": [0.5, None], "L2": [1.0, 0.25]}, "precision", 1.0)
    assert _texts(two) >= {"L1", "L2", "2026-W01", "2026-W02"} and not set(re.findall(r'\sid="([^"]+)"', two)) & set(
        ids
    )


def test_the_same_data_gives_the_same_bytes_from_threads_drawing_at_once():
    with ThreadPoolExecutor(4) as pool:
        drawn = set(pool.map(lambda _: _bars(), range(8)))
    assert drawn == {_bars()}


def test_what_an_svg_may_not_carry_is_taken_out():
    document = (
        '<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">'
        '<script>alert(1)</script><g id="a" onclick="alert(2)" style="fill: #fff; stroke-width: 2">'
        '<use xlink:href="https://example.com/x.svg#y"/><use xlink:href="#a"/></g></svg>'
    )
    svg = inline_svg(document, "c", "t")
    assert "script" not in svg and "onclick" not in svg and "example.com" not in svg
    assert all(
        f' {a}="{v}"' in svg for a, v in [("id", "c-a"), ("fill", "#fff"), ("stroke-width", "2"), ("href", "#c-a")]
    )
    assert svg.count("<use") == 2 and svg.count("href=") == 1  # the outside link is gone, the shape stays
    with pytest.raises(ValueError, match="'filter' has no SVG presentation attribute"):
        inline_svg('<svg xmlns="http://www.w3.org/2000/svg"><g style="filter: blur(2px)"/></svg>', "c", "t")
    with pytest.raises(ValueError, match="no data"):
        bar_chart("c", "t", [], [], "x")


def _recording(out: Path, rid: str, store: str, lane: str, video_s: float, speed: float, kinds: list[str]) -> Recording:
    folder = out / "recordings" / rid
    folder.mkdir(parents=True)
    counts = {k: kinds.count(k) for k in kinds}
    (folder / "summary.json").write_text(
        json.dumps(
            {
                "video_seconds": video_s,
                "processing_seconds": video_s / speed,
                "speed_x_realtime": speed,
                "frames_processed": int(video_s * 15),
                "passes": len(kinds),
                "scans": 0,
                "counts": counts,
            }
        )
    )
    alerts = [Event(type=EventType(k), t_start=float(i), t_end=i + 1.0) for i, k in enumerate(kinds)]
    (folder / "events.jsonl").write_text("".join(json.dumps(e.to_dict()) + "\n" for e in alerts))
    start = datetime(2026, 11, 30, 8, tzinfo=timezone.utc)
    return Recording(rid, Path(f"{rid}.mp4"), Path("pos.jsonl"), Path("lane.toml"), LaneConfig(), store, lane, start, 2)


@pytest.fixture
def batch_out(tmp_path: Path) -> tuple[Path, dict]:
    """A chain summary over three recordings on disk: S1/L1 two half-hours, S2/L3 one hour."""
    out = tmp_path / "out"
    recordings = [
        _recording(out, "s1-l1-a", "S1", "L1", 1800, 4.0, ["non_scan", "non_scan", "double_scan"]),
        _recording(out, "s1-l1-b", "S1", "L1", 1800, 2.5, ["product_switch"]),
        _recording(out, "s2-l3", "S2", "L3", 3600, 8.0, []),
    ]
    outcomes = [Outcome(r.id, Status.DONE) for r in recordings]
    summary = chain_summary(recordings, outcomes, out, {"workers": 2, "start_seconds": 1.0, "replay_seconds": 9.0})
    (out / "index.html").write_text(render_page(summary))
    return out, summary


def test_the_chain_summary_charts_alerts_per_lane_hour_and_the_slowest_recordings(batch_out):
    out, summary = batch_out
    assert lane_rates(summary) == (["S1 / L1", "S2 / L3"], [3.0, 0.0])  # loss alerts: 3 in 1 h; 0 in 1 h
    assert slowest_speeds(summary) == (["s1-l1-b", "s1-l1-a", "s2-l3"], [2.5, 4.0, 8.0])
    page = (out / "index.html").read_text()
    charts = re.findall(r"<svg .*?</svg>", page, re.S)
    assert len(charts) == 2
    assert _texts(charts[0]) >= {"S1 / L1", "S2 / L3", "3", "alerts per lane-hour"}
    assert _texts(charts[1]) >= {"s1-l1-b", "s1-l1-a", "s2-l3", "2.5"}
    assert "<td>S1</td><td>L1</td><td>1.0</td>" in page  # the tables stay, with their exact figures


def test_a_chain_summary_with_nothing_replayed_says_so(tmp_path):
    r = _recording(tmp_path, "x", "S1", "L1", 60, 1.0, [])
    summary = chain_summary(
        [r],
        [Outcome("x", Status.FAILED, error="video not found")],
        tmp_path,
        {
            "workers": 1,
            "start_seconds": 0.0,
            "replay_seconds": 0.0,
        },
    )
    page = render_page(summary)
    assert "<svg" not in page and page.count("No recording replayed yet: nothing to chart.") == 2


def test_without_matplotlib_the_batch_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails as if it were not installed
    for name in ("batch.runner", "batch.summary", "batch.page", "charts"):
        monkeypatch.delitem(sys.modules, f"retail_reid.pipeline.{name}", raising=False)
    code = main(["replay-batch", str(tmp_path / "m.csv"), "--gallery", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 2 and "needs the [ray] extra: pip install 'retail-reid[ray]'" in capsys.readouterr().err


CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()), reason="needs Debian's chromium and chromium-driver"
)
def test_the_batch_summary_page_shows_its_charts_in_chromium(batch_out):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    out, _ = batch_out
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        driver.get((out / "index.html").as_uri())
        charts = driver.find_elements(By.CSS_SELECTOR, "svg.chart")
        assert len(charts) == 2
        for chart in charts:
            box = chart.rect
            assert box["width"] > 300 and box["height"] > 50
        labels = {t.text for t in driver.find_elements(By.CSS_SELECTOR, "svg.chart text")}
        assert {"S1 / L1", "S2 / L3", "s1-l1-b"} <= labels
        bars = driver.find_elements(By.CSS_SELECTOR, "svg.chart path[fill='#2b6cb0']")
        assert len(bars) == 5 and all(b.rect["width"] > 0 for b in bars[:1] + bars[2:])  # S2 / L3's bar is 0 wide
        driver.save_screenshot(str(out / "chain-summary.png"))  # docs/batch.md shows it
    finally:
        driver.quit()
