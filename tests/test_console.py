"""The operator console's routes through Flask's test client: sign-in on every page, a signed-in
operator and a CSRF token on every write, bad input of each kind refused with its reason and
nothing changed (a non-image upload, a huge upload, a `..` or symbolic-link path, a missing token),
verdicts stored durably and exported, gallery changes made as new versions under the operator's name."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from html import escape
from pathlib import Path

import cv2
import numpy as np
import pytest
from console_fixtures import LANE_T0, PASSWORDS, SAMPLE_VAL, confirmation, make_lane, make_settings
from console_fixtures import csrf_token as _token
from console_fixtures import sign_in as _sign_in
from contract_fixtures import assert_valid
from gallery_fixtures import run_reid, writer_env
from werkzeug.test import EnvironBuilder, run_wsgi_app

from retail_reid.cli import main as reid_main
from retail_reid.gallery.store import GalleryStore
from retail_reid.models.datasets import folder_set
from retail_reid.pipeline.console.alerts import open_folders
from retail_reid.pipeline.console.app import create_app
from retail_reid.pipeline.console.formatting import label, utc
from retail_reid.pipeline.console.safe_files import inside
from retail_reid.pipeline.console.server import make_server
from retail_reid.pipeline.console.settings import Bind, ConsoleError
from retail_reid.pipeline.console.throttle import SignInThrottle
from retail_reid.pipeline.console.users import Operators, add_operator
from retail_reid.pipeline.console.verdicts import DB_NAME, VerdictStore
from retail_reid.pipeline.contract import SchemaName
from retail_reid.pipeline.harness.simulate import SimConfig, simulate

pytest.importorskip("flask")

LANE_ALERT = "/alerts/lane-1/lane-1-9f3a1c2e-2"  # a product switch: Bravo-Orange-Juice seen, Red-Bell-Pepper scanned
REPLAY_ALERT = "/alerts/replay-a/1"
PHOTO = SAMPLE_VAL / "Lime" / "Lime_004.jpg"
UPLOAD_CAP = 256 * 1024
TINY_PNG = cv2.imencode(".png", np.full((16, 16, 3), 200, np.uint8))[1].tobytes()


@pytest.fixture
def settings(tmp_path: Path, gallery_dir: Path):
    return make_settings(tmp_path, gallery_dir, max_upload_mb=UPLOAD_CAP / 2**20, threads=1)


@pytest.fixture
def client(settings):
    app = create_app(settings)
    return app.test_client()


@pytest.fixture
def signed_in(client):
    _sign_in(client)
    return client


def _version(gallery: Path) -> int:
    with GalleryStore.open(gallery, readonly=True) as store:
        return max(v.version for v in store.history())


GET_ROUTES = [
    "/alerts",
    LANE_ALERT,
    REPLAY_ALERT,
    f"{LANE_ALERT}/evidence/0",
    f"{LANE_ALERT}/evidence/3",  # the MP4 clip
    "/alerts/lane-1/lane-1-9f3a1c2e-3/evidence/2/frames/0",  # a frame of an older lane's AVI clip
    f"{LANE_ALERT}/thumbnail",
    "/precision",
    "/verdicts.csv",
    "/verdicts.jsonl",
    "/gallery",
    "/gallery/products/Lime",
    "/gallery/history",
]
POST_ROUTES = [
    f"{LANE_ALERT}/verdict",
    "/alerts/verdicts",
    "/gallery/products",
    "/gallery/products/Lime/photos",
    "/gallery/products/Lime/photos/1/remove",
    "/gallery/products/Lime/remove",
    "/gallery/rollback/1",
]


@pytest.mark.parametrize("route", GET_ROUTES)
def test_every_page_needs_a_signed_in_operator(client, route):
    r = client.get(route)
    assert r.status_code == 302 and r.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("route", POST_ROUTES)
def test_every_write_needs_a_signed_in_operator_even_with_a_valid_token(client, settings, route):
    before = _version(settings.gallery)
    r = client.post(route, data={"csrf_token": _token(client), "decision": "confirmed", "version": "1"})
    assert r.status_code == 401 and "sign in first" in r.get_data(as_text=True)
    assert _version(settings.gallery) == before
    assert VerdictStore(settings.data / DB_NAME).all() == []


@pytest.mark.parametrize("route", POST_ROUTES)
def test_every_write_without_a_csrf_token_is_refused(signed_in, settings, route):
    before = _version(settings.gallery)
    r = signed_in.post(route, data={"decision": "confirmed", "version": "1", "sku": "New-Thing"})
    assert r.status_code == 400 and "CSRF token is missing" in r.get_data(as_text=True)
    r = signed_in.post(route, data={"csrf_token": "forged", "decision": "confirmed", "version": "1"})
    assert r.status_code == 400 and "CSRF token is invalid" in r.get_data(as_text=True)
    assert _version(settings.gallery) == before
    assert VerdictStore(settings.data / DB_NAME).all() == []


@pytest.mark.parametrize("route", GET_ROUTES)
def test_every_page_answers_a_signed_in_operator(signed_in, route):
    r = signed_in.get(route)
    assert r.status_code == 200
    assert r.headers["X-Frame-Options"] == "DENY" and "default-src 'none'" in r.headers["Content-Security-Policy"]


def test_sign_in_refuses_a_wrong_password_and_an_unknown_operator_alike(client):
    for name, password in (("alice", "bob-password-22"), ("mallory", "alice-password-1"), ("alice", "")):
        r = client.post("/login", data={"csrf_token": _token(client), "operator": name, "password": password})
        assert r.status_code == 401 and "unknown operator or wrong password" in r.get_data(as_text=True)
    assert client.get("/alerts").status_code == 302


def test_repeated_failed_sign_ins_are_throttled_per_address_and_name(client, settings):
    def attempt(name, password, address="10.0.0.7"):
        data = {"csrf_token": _token(client), "operator": name, "password": password}
        return client.post("/login", data=data, environ_base={"REMOTE_ADDR": address})

    for _ in range(10):
        assert attempt("alice", "guess-guess-guess").status_code == 401
    r = attempt("alice", PASSWORDS["alice"])  # even the right password waits now
    assert r.status_code == 429 and "too many failed sign-ins for &#39;alice&#39;" in r.get_data(as_text=True)
    assert attempt("alice", PASSWORDS["alice"], address="10.0.0.8").status_code == 303  # another address
    client.post("/logout", data={"csrf_token": _token(client, "/alerts")})
    assert attempt("bob", PASSWORDS["bob"]).status_code == 303  # another name from the same address


def test_the_throttle_forgets_old_failures_and_stays_bounded(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("retail_reid.pipeline.console.throttle.time.monotonic", lambda: clock[0])
    t = SignInThrottle(limit=2, window_s=60, max_keys=3)
    t.failed("a", "x")
    t.failed("a", "x")
    assert t.wait_s("a", "x") == 60
    clock[0] += 61
    assert t.wait_s("a", "x") == 0
    for i in range(5):
        t.failed("b", str(i))
    assert len(t) == 3


def test_the_session_cookie_is_httponly_and_samesite_strict(client):
    r = client.post("/login", data={"csrf_token": _token(client), "operator": "bob", "password": PASSWORDS["bob"]})
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_sign_in_only_redirects_to_this_console(client):
    for target, expected in (
        ("//evil.example/x", "/alerts"),
        ("https://evil.example", "/alerts"),
        ("/gallery", "/gallery"),
    ):
        client.post("/logout", data={"csrf_token": _token(client)})
        r = client.post(
            "/login",
            data={"csrf_token": _token(client), "operator": "alice", "password": PASSWORDS["alice"], "next": target},
        )
        assert r.headers["Location"] == expected


def test_sign_out_ends_the_session(signed_in):
    r = signed_in.post("/logout", data={"csrf_token": _token(signed_in, "/alerts")})
    assert r.status_code == 303
    assert signed_in.get("/alerts").status_code == 302


# ---- alerts ---------------------------------------------------------------------------------------


def test_the_list_shows_lane_and_replay_alerts_and_filters_them(signed_in):
    html = signed_in.get("/alerts").get_data(as_text=True)
    assert "6 shown" in html  # 4 lane alerts + 2 replay alerts; the basket line is not an alert
    html = signed_in.get("/alerts?type=product_switch&lane=lane-1").get_data(as_text=True)
    assert "2 shown" in html and "Red-Bell-Pepper" in html
    html = signed_in.get("/alerts?folder=replay-a").get_data(as_text=True)
    assert "2 shown" in html
    assert "0 shown" in signed_in.get("/alerts?from=2030-01-01").get_data(as_text=True)
    assert "4 shown" in signed_in.get("/alerts?lane=lane-1&from=2025-12-29&to=2025-12-29").get_data(as_text=True)


def test_double_scans_are_reviewed_apart_from_loss_alerts(signed_in, settings):
    """A double scan (the customer charged twice) is customer service: listed and reviewable, but
    filtered and counted apart from the loss alerts."""
    double = {
        "seq": 6,
        "id": "lane-1-9f3a1c2e-6",
        "lane": "lane-1",
        "written_at": LANE_T0 + 60.0,
        "gallery_version": 2,
        "type": "double_scan",
        "t_start": LANE_T0 + 59.0,
        "t_end": LANE_T0 + 59.0,
        "track_id": 9,
        "seen_sku": "Kiwi",
        "seen_score": 0.8,
        "seen_confidence": 0.97,
        "scanned_sku": "Lemon",
        "scan_ts": LANE_T0 + 59.0,
        "txn": "T1",
        "evidence": [  # the one item pass it charged twice: its crops (as the lane's switch at 75 s wrote them)
            "evidence/20251229T092000Z-9f3a1c2e/track00009_0.jpg",
            "evidence/20251229T092000Z-9f3a1c2e/track00009_1.jpg",
        ],
    }
    with open(settings.lanes[0] / "events.jsonl", "a") as f:
        f.write(json.dumps(double) + "\n")
    assert "7 shown" in signed_in.get("/alerts").get_data(as_text=True)
    assert "6 shown" in signed_in.get("/alerts?family=loss").get_data(as_text=True)
    html = signed_in.get("/alerts?family=service").get_data(as_text=True)
    assert "1 shown" in html and "double scan" in html
    page = "/alerts/lane-1/lane-1-9f3a1c2e-6"
    html = signed_in.get(page).get_data(as_text=True)
    assert "Customer service, not a loss alert" in html and ("+0.00", "scan", "Lemon") in _pos_rows(html)
    assert "the camera saw one item (track 9, its crops above) and the till scanned it twice" in html
    assert html.count(f'src="{page}/evidence/') == 2 and "s in the zone" not in html
    assert all(signed_in.get(f"{page}/evidence/{i}").mimetype == "image/jpeg" for i in (0, 1))
    assert "two items really bought" in html and "scan missed by the POS log" not in html  # its own reasons

    def judge(path: str, reason: str = "") -> int:
        form = {"decision": "dismissed" if reason else "confirmed", "reason": reason}
        return signed_in.post(f"{path}/verdict", data={"csrf_token": _token(signed_in, path), **form}).status_code

    assert judge(page, "scan_missed_by_pos") == 400 and judge(LANE_ALERT, "two_items") == 400  # another kind's reason
    assert judge(page, "two_items") == 303 and judge(LANE_ALERT) == 303
    html = signed_in.get("/precision").get_data(as_text=True)
    loss, service = html.split("<h2>Loss alerts</h2>")[1].split("<h2>Customer service (double scans)</h2>")
    assert "product switch" in loss and "double scan" not in loss
    assert "double scan" in service and "product switch" not in service and "0.00" in service and "1.00" in loss
    rows = list(csv.DictReader(io.StringIO(signed_in.get("/verdicts.csv").get_data(as_text=True))))
    assert [(r["alert_type"], r["reason"]) for r in rows] == [("double_scan", "two_items"), ("product_switch", "")]


@pytest.mark.parametrize(
    "query, message",
    [
        ("type=theft", "type: expected one of"),
        ("verdict=maybe", "verdict: expected unreviewed"),
        ("from=yesterday", "from: expected a date YYYY-MM-DD"),
        ("family=theft", "family: expected one of loss, service"),
    ],
)
def test_a_bad_filter_is_refused_naming_the_field(signed_in, query, message):
    r = signed_in.get(f"/alerts?{query}")
    assert r.status_code == 400 and message in r.get_data(as_text=True)


def test_an_alert_page_shows_crops_gallery_photos_scores_and_pos_lines(signed_in):
    html = signed_in.get(REPLAY_ALERT).get_data(as_text=True)
    assert html.count("/alerts/replay-a/1/evidence/") == 2
    assert "/gallery/products/Lime/photos/" in html and "/gallery/products/Lemon/photos/" in html
    assert "0.810" in html and "0.210" in html  # seen and scanned similarity
    assert 'class="hit"' in html and "Granny-Smith" in html  # the POS lines, the alert's own scan marked
    lane = signed_in.get(LANE_ALERT).get_data(as_text=True)
    assert "gallery version 2" in lane


def _pos_rows(html: str) -> list[str]:
    table = html.split("POS lines around it", 1)[1]
    return re.findall(r"<td>([+-]\d+\.\d\d) s</td><td>(\w+)</td><td>([^<]*)</td>", table)


def test_a_lane_alert_shows_its_lane_frame_clip_and_the_pos_lines_the_lane_recorded(signed_in, settings):
    html = signed_in.get(LANE_ALERT).get_data(as_text=True)
    # evidence: two crops (0, 1), the lane mid-pass (2), the clip (3), as the lane service wrote them
    assert html.count(f"{LANE_ALERT}/evidence/0") == 1 and f'src="{LANE_ALERT}/evidence/2" alt="the lane' in html
    assert re.search(rf'<video class="clip-video" controls[^>]* src="{LANE_ALERT}/evidence/3"', html)
    assert "/frames/" not in html  # an MP4 plays: no stills
    lane_frame = cv2.imdecode(np.frombuffer(signed_in.get(f"{LANE_ALERT}/evidence/2").data, np.uint8), cv2.IMREAD_COLOR)
    assert lane_frame.shape == (240, 320, 3)  # the whole lane, not a crop
    whole = signed_in.get(f"{LANE_ALERT}/evidence/3")
    mp4 = next(settings.lanes[0].glob("evidence/*/track00007.mp4")).read_bytes()
    assert whole.status_code == 200 and whole.mimetype == "video/mp4" and whole.data == mp4
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert whole.headers["Content-Disposition"].startswith("inline")  # to play, not to download
    # a browser asks for byte ranges to play and seek: 206 with exactly those bytes
    part = signed_in.get(f"{LANE_ALERT}/evidence/3", headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206 and part.data == mp4[100:1100]
    assert part.headers["Content-Range"] == f"bytes 100-1099/{len(mp4)}"
    tail = signed_in.get(f"{LANE_ALERT}/evidence/3", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.data == mp4[-10:]
    beyond = signed_in.get(f"{LANE_ALERT}/evidence/3", headers={"Range": f"bytes={len(mp4)}-"})
    assert beyond.status_code == 416
    assert signed_in.get(f"{LANE_ALERT}/evidence/3/frames/0").status_code == 404  # stills are for AVI clips only
    # the POS lines within 20 s, from both of the lane's files (pos.1.jsonl, then pos.jsonl), the scan marked
    assert _pos_rows(html) == [
        ("-10.00", "scan", "Granny-Smith"),
        ("+0.50", "scan", "Red-Bell-Pepper"),
        ("+19.00", "scan", "Lemon"),
    ]
    assert re.search(r'<tr class="hit">\s*<td>\+0\.50 s', html)
    # the lane goes on: a POS line it records now is shown at once
    from retail_reid.pipeline.edge.pos_record import PosRecord
    from retail_reid.pipeline.pos import PosEvent, PosEventType

    record = PosRecord(settings.lanes[0], max_bytes=10_000)
    record.append([PosEvent(ts=LANE_T0 + 45.0, type=PosEventType.VOID, sku="Lemon", txn="T1")])
    record.close()
    assert ("+5.00", "void", "Lemon") in _pos_rows(signed_in.get(LANE_ALERT).get_data(as_text=True))
    for name in ("pos.jsonl", "pos.1.jsonl"):
        (settings.lanes[0] / name).unlink()
    assert "the lane has recorded no POS events" in signed_in.get(LANE_ALERT).get_data(as_text=True)


def test_an_older_lanes_avi_clip_is_shown_as_still_frames(signed_in, settings):
    page = "/alerts/lane-1/lane-1-9f3a1c2e-3"  # crops (0, 1) and an MJPEG AVI (2), as lanes wrote them before
    html = signed_in.get(page).get_data(as_text=True)
    frames = re.findall(rf'src="{page}/evidence/2/frames/(\d+)"', html)
    assert len(frames) == 12 and frames[0] == "0" and frames[-1] == "29" and "<video" not in html
    assert "download the clip</a> (MJPEG AVI)" in html
    still = signed_in.get(f"{page}/evidence/2/frames/29")
    assert still.status_code == 200 and still.mimetype == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(still.data, np.uint8), cv2.IMREAD_COLOR).shape == (240, 320, 3)
    download = signed_in.get(f"{page}/evidence/2")
    assert download.status_code == 200 and "attachment" in download.headers["Content-Disposition"]
    for route in (f"{page}/evidence/2/frames/30", f"{page}/evidence/0/frames/0"):
        assert signed_in.get(route).status_code == 404, route  # past the clip's end; a picture has no frames


def test_a_clip_larger_than_a_lane_writes_is_not_served(signed_in, settings, monkeypatch):
    from retail_reid.pipeline.console import clip_frames

    monkeypatch.setattr(clip_frames, "MAX_CLIP_BYTES", 100)
    assert signed_in.get(f"{LANE_ALERT}/evidence/3").status_code == 404
    assert "1 clips cannot be read" in signed_in.get(LANE_ALERT).get_data(as_text=True)


def test_a_real_replay_output_folder_is_shown_whole(tmp_path, gallery_dir, monkeypatch):
    """`reid simulate` + `reid replay` as an investigator runs them, then every alert page of the output."""
    lane = tmp_path / "lane"
    simulate(
        folder_set(SAMPLE_VAL), lane, SimConfig(passes=8, transactions=1, non_scan_rate=0.25, switch_rate=0.25, seed=5)
    )
    truth = json.loads((lane / "truth.json").read_text())
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)  # --pos relative, as an operator would type it
    zone = ",".join(map(str, truth["zone"]))
    args = [
        "replay",
        str(lane / truth["video"]),
        "--pos",
        "lane/pos.jsonl",
        "--gallery",
        str(gallery_dir),
        "--zone",
        zone,
        "--store",
        "store-7",
        "--lane",
        "lane-3",
        "--start",
        "2026-11-30T09:00:00+01:00",
    ]
    assert reid_main([*args, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pos"] == str(tmp_path / "lane" / "pos.jsonl")  # kept absolute: found from anywhere
    assert summary["recording"] == {"store": "store-7", "lane": "lane-3", "start": "2026-11-30T09:00:00+01:00"}
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the console starts from another folder
    lines = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    alerts = [x for x in lines if x["type"] != "basket"]
    assert alerts, "the scenario should raise alerts"
    for i, line in enumerate(lines, start=1):  # every line carries the recording, as the schema allows
        assert line["recording"] == summary["recording"], i
        assert_valid(SchemaName.EVENT, line, what=f"events.jsonl:{i}")
    settings = make_settings(tmp_path / "console", gallery_dir)
    client = create_app(settings.__class__(**{**settings.__dict__, "replays": (out,)})).test_client()
    _sign_in(client)
    assert f"{len(alerts) + 4} shown" in client.get("/alerts").get_data(as_text=True)  # + the lane's 4
    for i, line in enumerate(lines, start=1):
        if line["type"] == "basket":
            continue
        html = client.get(f"/alerts/out/{i}").get_data(as_text=True)
        assert label(line["type"]) in html and "store-7 · lane-3" in html
        # dated by the recording: 08:00 UTC plus the alert's time into the video
        assert utc(1_796_025_600.0 + line["t_start"]) in html
        for j in range(len(line["evidence"])):
            assert client.get(f"/alerts/out/{i}/evidence/{j}").status_code == 200
        if line["track_id"] is not None:  # the replay keeps the lane mid-pass with the crops
            [lane_frame] = [p for p in line["evidence"] if p.endswith("_lane.jpg")]
            j = line["evidence"].index(lane_frame)
            assert f'src="/alerts/out/{i}/evidence/{j}" alt="the lane, mid-pass"' in html
            assert cv2.imread(str(out / lane_frame)).shape == (480, 640, 3)
        if line["scan_ts"] is not None:
            assert 'class="hit"' in html  # its scan found in the POS log


def test_a_replay_is_listed_by_its_recordings_store_lane_and_time(tmp_path, gallery_dir):
    settings = make_settings(tmp_path, gallery_dir)
    summary_file = settings.replays[0] / "summary.json"
    recording = {"store": "store-7", "lane": "lane-3", "start": "2026-11-30T08:00:00Z"}
    summary_file.write_text(json.dumps({**json.loads(summary_file.read_text()), "recording": recording}))
    client = create_app(settings).test_client()
    _sign_in(client)
    assert "2 shown" in client.get("/alerts?lane=lane-3&from=2026-11-30&to=2026-11-30").get_data(as_text=True)
    assert "0 shown" in client.get("/alerts?folder=replay-a&to=2026-11-29").get_data(as_text=True)
    html = client.get(REPLAY_ALERT).get_data(as_text=True)  # t_start 10.1 s into the recording
    assert "store-7 · lane-3" in html and "2026-11-30 08:00:10 UTC" in html and "replay of" not in html


def test_a_relative_pos_path_is_taken_from_the_replay_folder_and_a_missing_one_is_named(
    tmp_path, gallery_dir, monkeypatch, caplog
):
    settings = make_settings(tmp_path, gallery_dir)
    replay = settings.replays[0]
    summary = json.loads((replay / "summary.json").read_text())
    (replay / "summary.json").write_text(json.dumps({**summary, "pos": "../replay-a-pos.jsonl"}))
    monkeypatch.chdir(gallery_dir)  # not where the replay ran
    client = create_app(settings).test_client()
    _sign_in(client)
    assert 'class="hit"' in client.get(REPLAY_ALERT).get_data(as_text=True)
    (replay / "summary.json").write_text(json.dumps({**summary, "pos": "gone/pos.jsonl"}))
    with caplog.at_level("WARNING", logger="reid.console"):
        client = create_app(settings).test_client()
    missing = f"{replay / 'summary.json'}: the POS log it names, {replay / 'gone' / 'pos.jsonl'}, is missing"
    assert missing in caplog.text  # said once, when the console starts
    _sign_in(client)
    assert "cannot be read" in client.get(REPLAY_ALERT).get_data(as_text=True)


def test_a_replays_pos_log_is_the_one_its_summary_named_and_is_never_shown_raw(tmp_path, gallery_dir):
    settings = make_settings(tmp_path, gallery_dir)
    replay = settings.replays[0]
    summary = json.loads((replay / "summary.json").read_text())
    secret = tmp_path / "secret.txt"
    secret.write_text('{"ts": 1, "type": "top-secret-value"}\n')
    (replay / "summary.json").write_text(json.dumps({**summary, "pos": str(secret)}))
    client = create_app(settings).test_client()
    _sign_in(client)
    html = client.get(REPLAY_ALERT).get_data(as_text=True)
    assert "holds no valid POS event" in html and "top-secret-value" not in html
    secret.unlink()
    assert "cannot be read (No such file or directory)" in client.get(REPLAY_ALERT).get_data(as_text=True)
    (replay / "summary.json").write_text(json.dumps({"pos": str(PHOTO)}))  # changed after the start: not followed
    assert "cannot be read" in client.get(REPLAY_ALERT).get_data(as_text=True)


def test_unknown_folders_alerts_and_evidence_are_404(signed_in):
    for route in (
        "/alerts/nowhere/1",
        "/alerts/replay-a/99",
        "/alerts/replay-a/1/evidence/7",
        f"{LANE_ALERT}/evidence/-1",
    ):
        assert signed_in.get(route).status_code == 404, route


def test_a_running_lanes_new_alerts_are_read_as_they_are_appended(tmp_path):
    lane = make_lane(tmp_path / "lane")
    folder = open_folders((lane,), ())["lane"]
    assert [a.key for a in folder.alerts()] == [f"lane-1-9f3a1c2e-{i}" for i in (1, 2, 3, 4)]
    stamp = {"seq": 6, "id": "lane-1-x-6", "lane": "lane-1", "written_at": 1.0e9 + 2, "gallery_version": 2}
    line = {**stamp, "type": "non_scan", "t_start": 1.0e9, "t_end": 1.0e9 + 1}
    text = json.dumps(line) + "\n"
    with open(lane / "events.jsonl", "a") as f:
        f.write(text + text.replace("x-6", "x-7")[:30])  # one whole line, one being written
    assert [a.key for a in folder.alerts()][4:] == ["lane-1-x-6"]
    with open(lane / "events.jsonl", "a") as f:
        f.write(text.replace("x-6", "x-7")[30:] + "not json\n")
    assert [a.key for a in folder.alerts()][4:] == ["lane-1-x-6", "lane-1-x-7"] and folder.bad_lines == 1
    replaced = lane / "events.new"
    replaced.write_text(text)
    replaced.replace(lane / "events.jsonl")  # a new file (as after a torn line was moved aside): read afresh
    assert [a.key for a in folder.alerts()] == ["lane-1-x-6"] and folder.bad_lines == 0


def test_no_route_reads_a_file_outside_the_folders(signed_in, settings, tmp_path):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(PHOTO.read_bytes())
    lane = settings.lanes[0]
    (lane / "evidence" / "link.jpg").symlink_to(secret)
    (lane / "evidence" / "inner.jpg").symlink_to(lane / "evidence" / "20251229T092000Z-9f3a1c2e" / "track00003_0.jpg")
    crafted = {
        "seq": 9,
        "id": "lane-1-x-9",
        "lane": "lane-1",
        "written_at": 1_767_000_502.0,
        "gallery_version": 2,
        "type": "non_scan",
        "t_start": 1_767_000_500.0,
        "t_end": 1_767_000_501.0,
        "evidence": [
            "../secret.jpg",
            str(secret),
            "evidence/link.jpg",
            "evidence/../../secret.jpg",
            "evidence/inner.jpg",
        ],
    }
    with open(lane / "events.jsonl", "a") as f:
        f.write(json.dumps(crafted) + "\n")
    for i in range(4):
        assert signed_in.get(f"/alerts/lane-1/lane-1-x-9/evidence/{i}").status_code == 404
    assert signed_in.get("/alerts/lane-1/lane-1-x-9/evidence/4").status_code == 200  # a link that stays inside
    assert "4 evidence files are missing or lie outside the folder" in signed_in.get(
        "/alerts/lane-1/lane-1-x-9"
    ).get_data(as_text=True)
    for route in ("/alerts/lane-1/..%2F..%2Fsecret.jpg", "/alerts/../../secret.jpg", "/static/../../secret.jpg"):
        assert signed_in.get(route).status_code == 404, route


def test_inside_refuses_every_way_out(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.jpg").write_bytes(b"x")
    (tmp_path / "out.jpg").write_bytes(b"x")
    (root / "a" / "up.jpg").symlink_to(tmp_path / "out.jpg")
    (root / "a" / "note.txt").write_bytes(b"x")
    assert inside(root, "a/x.jpg") == (root / "a" / "x.jpg").resolve()
    for bad in (
        "../out.jpg",
        "a/../../out.jpg",
        str(tmp_path / "out.jpg"),
        "a/up.jpg",
        "a/note.txt",
        "",
        "a\\x.jpg",
        "a/none.jpg",
    ):
        assert inside(root, bad) is None, bad


def test_a_verdict_is_stored_attributed_and_exported(signed_in, settings):
    r = signed_in.post(
        f"{LANE_ALERT}/verdict",
        data={
            "csrf_token": _token(signed_in, LANE_ALERT),
            "decision": "dismissed",
            "reason": "wrong_product",
            "note": "it was a Kiwi",
        },
    )
    assert r.status_code == 303
    html = signed_in.get(LANE_ALERT).get_data(as_text=True)
    assert "dismissed" in html and "wrong product recognised" in html and "by alice" in html
    r = signed_in.post(
        f"{REPLAY_ALERT}/verdict",
        data={"csrf_token": _token(signed_in, REPLAY_ALERT), "decision": "confirmed", "note": "=cmd"},
    )
    assert r.status_code == 303
    rows = list(csv.DictReader(io.StringIO(signed_in.get("/verdicts.csv").get_data(as_text=True))))
    assert [(r["source"], r["alert_key"], r["decision"], r["reason"], r["reviewer"]) for r in rows] == [
        ("lane-1", "lane-1-9f3a1c2e-2", "dismissed", "wrong_product", "alice"),
        ("replay-a", "1", "confirmed", "", "alice"),
    ]
    assert rows[1]["note"] == "'=cmd"  # not a formula in a spreadsheet
    lines = [json.loads(x) for x in signed_in.get("/verdicts.jsonl").get_data(as_text=True).splitlines()]
    assert lines[0]["alert_type"] == "product_switch" and lines[0]["note"] == "it was a Kiwi"
    assert "dismissed" in signed_in.get("/alerts?verdict=dismissed").get_data(as_text=True)
    assert "1 shown" in signed_in.get("/alerts?verdict=confirmed").get_data(as_text=True)
    assert "4 shown" in signed_in.get("/alerts?verdict=unreviewed").get_data(as_text=True)


@pytest.mark.parametrize(
    "form, message",
    [
        ({"decision": "maybe"}, "decision: expected one of confirmed, dismissed"),
        ({"decision": "dismissed"}, "reason: a dismissed alert needs a reason"),
        ({"decision": "dismissed", "reason": "bored"}, "reason: expected one of"),
        ({"decision": "dismissed", "reason": "other"}, "the reason &#39;other&#39; needs a note"),
        ({"decision": "confirmed", "reason": "other", "note": "x"}, "only a dismissed alert takes a reason"),
        ({"decision": "confirmed", "note": "x" * 2001}, "note: at most 2000 characters"),
    ],
)
def test_a_bad_verdict_is_refused_and_nothing_is_stored(signed_in, settings, form, message):
    r = signed_in.post(f"{LANE_ALERT}/verdict", data={"csrf_token": _token(signed_in, LANE_ALERT), **form})
    assert r.status_code == 400 and message in r.get_data(as_text=True)
    assert VerdictStore(settings.data / DB_NAME).all() == []


def test_precision_per_lane_type_and_week_uses_each_alerts_latest_verdict(signed_in, settings):
    def judge(path, decision, reason=""):
        signed_in.post(
            f"{path}/verdict", data={"csrf_token": _token(signed_in, path), "decision": decision, "reason": reason}
        )

    judge(LANE_ALERT, "dismissed", "not_a_product")
    judge(LANE_ALERT, "confirmed")  # changed its mind: the latest verdict counts
    judge("/alerts/lane-1/lane-1-9f3a1c2e-3", "dismissed", "scan_missed_by_pos")
    judge("/alerts/lane-1/lane-1-9f3a1c2e-1", "confirmed")
    rows = {
        (r.lane, r.alert_type, r.week): (r.confirmed, r.dismissed)
        for r in VerdictStore(settings.data / DB_NAME).precision()
    }
    assert rows == {("lane-1", "product_switch", "2026-W01"): (1, 1), ("lane-1", "non_scan", "2026-W01"): (1, 0)}
    html = signed_in.get("/precision").get_data(as_text=True)
    assert "0.50" in html and "1.00" in html and "2026-W01" in html


def test_a_verdict_survives_the_process_being_killed_right_after_it(settings, tmp_path):
    """The writer records a verdict and is killed with SIGKILL at once: the verdict is on disk."""
    db = settings.data / DB_NAME
    code = (
        "import os, signal, sys\n"
        "from retail_reid.pipeline.console.verdicts import VerdictStore, Verdict, Decision\n"
        f"s = VerdictStore(__import__('pathlib').Path({str(db)!r}))\n"
        "s.record(Verdict(source='lane-1', alert_key='k', lane='lane-1', alert_type='non_scan', alert_time=1.0,"
        " decision=Decision.CONFIRMED, reason=None, note='', reviewer='alice', decided_at=2.0))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=writer_env(), capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    verdicts = VerdictStore(db).all()
    assert [(v.alert_key, v.reviewer) for v in verdicts] == [("k", "alice")]


# ---- gallery --------------------------------------------------------------------------------------


def _upload(client, route: str, files: list[tuple[bytes, str]], **fields):
    data = {"csrf_token": _token(client, "/gallery"), **fields, "photos": [(io.BytesIO(b), n) for b, n in files]}
    return client.post(route, data=data, content_type="multipart/form-data")


def test_an_uploaded_photo_is_a_new_version_by_the_operator_and_can_be_removed_and_rolled_back(signed_in, settings):
    before = _version(settings.gallery)
    r = _upload(signed_in, "/gallery/products/Lime/photos", [(PHOTO.read_bytes(), "lime side.jpg")])
    assert r.status_code == 303
    assert _version(settings.gallery) == before + 1
    with GalleryStore.open(settings.gallery, readonly=True) as store:
        last = store.history()[-1]
        _, refs = store.product("Lime")
    assert last.operator == "alice" and last.action == "add"
    new = refs[-1]
    assert new.source.endswith("lime_side.jpg")
    html = signed_in.get("/gallery/products/Lime").get_data(as_text=True)
    assert f"version {before + 1}" in html and f"/gallery/products/Lime/photos/{new.id}" in html
    assert signed_in.get(f"/gallery/products/Lime/photos/{new.id}").data == PHOTO.read_bytes()
    assert signed_in.get(f"/gallery/products/Kiwi/photos/{new.id}").status_code == 404  # not Kiwi's photo
    remove = f"/gallery/products/Lime/photos/{new.id}/remove"
    r = signed_in.post(remove, data=confirmation(signed_in, remove)[1])
    assert r.status_code == 303 and _version(settings.gallery) == before + 2
    r = signed_in.post(
        f"/gallery/rollback/{before + 1}", data=confirmation(signed_in, f"/gallery/rollback/{before + 1}")[1]
    )
    assert r.status_code == 303 and _version(settings.gallery) == before + 3
    history = signed_in.get("/gallery/history").get_data(as_text=True)
    assert f"rolled back to the contents of version {before + 1}" in history and "alice" in history
    with GalleryStore.open(settings.gallery, readonly=True) as store:
        assert new.id in [r.id for r in store.product("Lime")[1]]


def test_the_gallery_lists_and_finds_products(signed_in):
    html = signed_in.get("/gallery").get_data(as_text=True)
    assert "12 products" in html and html.count('class="product"') == 12
    html = signed_in.get("/gallery?q=LEM&page=7").get_data(as_text=True)  # a page past the end shows the last
    assert "1 product matching" in html and html.count('class="product"') == 1 and "/gallery/products/Lemon" in html


def test_a_new_product_is_added_with_its_photos(signed_in, settings):
    photo = SAMPLE_VAL / "Kiwi" / "Kiwi_004.jpg"
    r = _upload(signed_in, "/gallery/products", [(photo.read_bytes(), "k.jpg")], sku="Gold-Kiwi", name="Gold kiwi")
    assert r.status_code == 303 and r.headers["Location"] == "/gallery/products/Gold-Kiwi"
    with GalleryStore.open(settings.gallery, readonly=True) as store:
        row, refs = store.product("Gold-Kiwi")
    assert row.product.name == "Gold kiwi" and len(refs) == 1


@pytest.mark.parametrize("sku", ["Juice/1L", "..", "a/../../b", "50% off"])
def test_a_sku_with_slashes_dots_or_percent_opens_from_the_gallery_pages(signed_in, settings, sku):
    photo = SAMPLE_VAL / "Kiwi" / "Kiwi_004.jpg"
    r = _upload(signed_in, "/gallery/products", [(photo.read_bytes(), "k.jpg")], sku=sku)
    assert r.status_code == 303
    page = r.headers["Location"]
    assert page.count("/") == 3 and ".." not in page  # one path segment, no dot segment a browser would resolve
    html = signed_in.get(page).get_data(as_text=True)
    assert f"› {escape(sku)}</p>" in html
    [photo_url] = re.findall(r'<img src="(/gallery/products/[^"]+/photos/\d+)"', html)
    assert signed_in.get(photo_url).data == photo.read_bytes()
    suggestions = re.search(r'href="(/lane-references/products/[^"]+)"', html).group(1)
    assert f"{escape(sku)} <small>0 suggested" in signed_in.get(suggestions).get_data(as_text=True)
    r = _upload(signed_in, f"{page}/photos", [((SAMPLE_VAL / "Kiwi" / "Kiwi_005.jpg").read_bytes(), "k5.jpg")])
    assert r.status_code == 303 and r.headers["Location"] == page
    with GalleryStore.open(settings.gallery, readonly=True) as store:
        assert len(store.product(sku)[1]) == 2


def test_a_product_address_is_only_ever_a_sku_to_look_up(signed_in):
    for route in (
        "/gallery/products/..%2F..%2Fsecret.jpg",  # decoded by the server: not one segment, no route
        "/gallery/products/%252E%252E%252Fsecret.jpg",  # the SKU "../secret.jpg": no such product
        "/gallery/products/%2E%2E",  # the SKU "..": no such product
        "/gallery/products/%252E%252E/photos/1",
    ):
        assert signed_in.get(route).status_code == 404, route


@pytest.mark.parametrize(
    "files, fields, message",
    [
        ([(b"GIF89a not really", "a.jpg")], {}, "a.jpg: not a readable image"),
        ([(b"", "empty.png")], {}, "empty.png: file is empty"),
        ([(PHOTO.read_bytes()[:5000], "cut.jpg")], {}, "cut.jpg: image file is truncated"),
        ([], {}, "photos: choose at least one photo"),
        ([(TINY_PNG, "p.png")] * 21, {}, "at most 20 photos"),
        ([(TINY_PNG, "p.png")], {"sku": ""}, "SKU id is empty"),
        ([(TINY_PNG, "p.png")], {"sku": "x" * 300}, "SKU id is 300 characters long"),
    ],
)
def test_a_bad_upload_is_refused_and_the_gallery_is_unchanged(signed_in, settings, files, fields, message):
    before = _version(settings.gallery)
    route = "/gallery/products" if fields else "/gallery/products/Lime/photos"
    r = _upload(signed_in, route, files, **fields)
    assert r.status_code == 400 and message in r.get_data(as_text=True)
    assert _version(settings.gallery) == before
    assert not any((settings.data / "uploads").iterdir()) if (settings.data / "uploads").exists() else True


def test_a_huge_upload_is_refused_before_its_body_is_read(signed_in, settings):
    before = _version(settings.gallery)

    class Endless(io.RawIOBase):
        """A body that would never end: the server must answer from Content-Length alone."""

        reads = 0

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:
            Endless.reads += 1
            b[:] = b"x" * len(b)
            return len(b)

    environ = EnvironBuilder(
        path="/gallery/products/Lime/photos",
        method="POST",
        headers={
            "Content-Type": "multipart/form-data; boundary=x",
            "X-CSRFToken": _token(signed_in, "/gallery"),
            "Cookie": f"reid_console={signed_in.get_cookie('reid_console').value}",
        },
    ).get_environ()
    environ["wsgi.input"], environ["CONTENT_LENGTH"] = Endless(), str(UPLOAD_CAP * 40)
    body, status, _ = run_wsgi_app(signed_in.application, environ, buffered=True)
    assert status.startswith("413") and "over the 0.25 MiB limit" in b"".join(body).decode()
    assert Endless.reads == 0
    r = _upload(signed_in, "/gallery/products/Lime/photos", [(os.urandom(UPLOAD_CAP), "big.jpg")])
    assert r.status_code == 413
    assert _version(settings.gallery) == before


def test_the_server_refuses_a_huge_body_from_its_length_alone(settings):
    """Through waitress on a socket, as `reid console` serves: 413 after the headers, no body sent."""
    server = make_server(create_app(settings), settings, Bind("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", int(server.effective_port)), timeout=30) as conn:
            conn.sendall(
                b"POST /gallery/products/Lime/photos HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: multipart/form-data; boundary=x\r\n"
                + f"Content-Length: {UPLOAD_CAP * 1000}\r\n\r\n".encode()
            )
            answer = conn.recv(4096)
    finally:
        server.close()
        thread.join()
    assert answer.startswith(b"HTTP/1.1 413")


def test_gallery_errors_are_one_line_with_nothing_changed(signed_in, settings):
    before = _version(settings.gallery)
    token = _token(signed_in, "/gallery")
    for version, message in (
        ("999", "there is no version 999"),
        (str(before), f"version {before} is the current version already"),
    ):
        r = signed_in.post(f"/gallery/rollback/{version}", data={"csrf_token": token})
        assert r.status_code == 400 and message in r.get_data(as_text=True)
    assert signed_in.post("/gallery/rollback/abc", data={"csrf_token": token}).status_code == 404
    assert signed_in.get("/gallery/products/No-Such-Thing").status_code == 404
    assert signed_in.post("/gallery/products/Lime/photos/99999/remove", data={"csrf_token": token}).status_code == 404
    assert _version(settings.gallery) == before


# ---- settings and the command line ----------------------------------------------------------------


def test_bind_refuses_anything_but_loopback_without_allow_remote(tmp_path, gallery_dir):
    assert (
        Bind.parse("127.0.0.1:8600").loopback
        and Bind.parse("[::1]:8600").loopback
        and Bind.parse("localhost:1").loopback
    )
    assert not Bind.parse("0.0.0.0:8600").loopback and not Bind.parse("192.168.1.5:8600").loopback
    for bad in ("8600", "host:", "host:99999", ":80"):
        with pytest.raises(ConsoleError, match="expected HOST:PORT"):
            Bind.parse(bad)
    users = tmp_path / "users.toml"
    add_operator(users, "alice", PASSWORDS["alice"])
    p = run_reid(
        "console",
        "--state",
        str(tmp_path),
        "--gallery",
        str(gallery_dir),
        "--users",
        str(users),
        "--bind",
        "0.0.0.0:8600",
    )
    assert (
        p.returncode == 2
        and "localhost only unless you add --allow-remote" in p.stderr
        and len(p.stderr.splitlines()) == 1
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = run_reid(
            "console", "--state", str(tmp_path), "--gallery", str(gallery_dir), "--users", str(users),
            "--data", str(tmp_path / "data"), "--bind", f"127.0.0.1:{port}",
        )  # fmt: skip
    assert p.returncode == 2 and f"--bind 127.0.0.1:{port}: cannot listen there" in p.stderr


def test_operators_file_add_user_and_its_mistakes(tmp_path):
    users = tmp_path / "users.toml"
    p = run_reid("console", "--users", str(users), "--add-user", "carol", input="carol-password-3\n")
    assert p.returncode == 0, p.stderr
    ops = Operators.load(users)
    assert ops.names == ["carol"] and ops.check("carol", "carol-password-3") and not ops.check("carol", "nope")
    assert "carol-password-3" not in users.read_text()
    p = run_reid("console", "--users", str(users), "--add-user", "dave", input="short\n")
    assert p.returncode == 2 and "at least 10 characters" in p.stderr and Operators.load(users).names == ["carol"]
    for text, message in (
        ("[operators]\nalice = 'plain-text-password'\n", "operators.alice: not a password hash"),
        ("[operators\n", "not a valid TOML file"),
        ("[people]\nalice = 'x'\n", "no [operators] table"),
        ("[operators]\n'bad name' = 'x'\n", "operators.bad name: expected NAME"),
    ):
        users.write_text(text)
        with pytest.raises(ConsoleError, match=re.escape(message)):
            Operators.load(users)


def test_missing_folders_are_named(tmp_path, gallery_dir):
    settings = make_settings(tmp_path, gallery_dir)
    for change, message in (
        ({"lanes": (tmp_path / "nope",)}, "--state"),
        ({"replays": (settings.lanes[0].parent / "users.toml",)}, "--replay"),
        ({"gallery": tmp_path / "nogallery"}, "--gallery"),
        ({"lanes": (), "replays": ()}, "at least one --state"),
        ({"data": settings.users / "data"}, "--data"),
    ):
        with pytest.raises(ConsoleError, match=re.escape(message)):
            create_app(settings.__class__(**{**settings.__dict__, **change}))


def test_the_console_runs_without_torch():
    """The console is part of the runtime: it serves and adds photos on a box without torch."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import retail_reid.pipeline.console.app, retail_reid.pipeline.console.server, retail_reid.cli\n"
        "retail_reid.cli.build_parser()\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=writer_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
