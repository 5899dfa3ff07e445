"""The lane service's parts, each on its own: settings, metrics text, the frame queue and the paced
camera feed, POS intake (HTTP bodies, the appended file), the alert log (restart, torn line, a
write refused by the kernel), webhook delivery (receiver down then up, restart), evidence crops,
and the HTTP API's answers to good, garbage, oversized and unauthenticated requests."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
from retail_reid.pipeline.config import ConfigError, LaneConfig
from retail_reid.pipeline.edge.alert_log import AlertLog
from retail_reid.pipeline.edge.camera import CameraFeed, FrameQueue
from retail_reid.pipeline.edge.evidence import EvidenceWriter
from retail_reid.pipeline.edge.http_api import ApiContext, ApiServer
from retail_reid.pipeline.edge.metrics import EdgeMetrics
from retail_reid.pipeline.edge.pos_intake import InboxFull, PosFileTailer, PosInbox, parse_pos_body
from retail_reid.pipeline.edge.settings import CameraConfig, HttpConfig, WebhookConfig, load_edge_config
from retail_reid.pipeline.edge.webhook import WebhookSender
from retail_reid.pipeline.pos import PosError, PosEvent
from retail_reid.pipeline.types import BasketEvent, Crop, Event, Frame, ItemPass

REPO = Path(__file__).resolve().parents[1]


def metrics() -> EdgeMetrics:
    return EdgeMetrics(lambda: 7, lambda: 1.0, lambda: 0)


def alert(i: int) -> Event:
    return Event("non_scan", 100.0 + i, 101.0 + i, track_id=i, seen_sku="Banana", seen_score=0.8, txn="T1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 30.0, step: float = 0.05) -> bool:
    """Poll `predicate` until true; a generous bound so a loaded machine only makes it slower."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


class Receiver:
    """A webhook receiver on loopback that records every delivery; `fail` answers 500 that many times."""

    def __init__(self, port: int = 0, fail: int = 0):
        self.port, self.fail = port, fail
        self.received: list[dict] = []
        self.headers: list[dict] = []
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if owner.fail > 0:
                    owner.fail -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                owner.received.append(json.loads(body))
                owner.headers.append(dict(self.headers))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    def ids(self) -> list[str]:
        return [r["id"] for r in self.received]


# --- settings --------------------------------------------------------------------------------------


def test_the_example_lane_toml_loads_and_relative_paths_follow_the_file(tmp_path):
    edge, lane = load_edge_config(REPO / "deploy" / "lane.toml")
    assert edge.lane == "lane-1" and edge.camera.is_stream and edge.http.host == "127.0.0.1"
    assert lane.zone is not None and lane.events.window_after_s == 0.5
    assert dataclasses.replace(lane, zone=None) == LaneConfig()  # "the default is the value shown"
    (tmp_path / "secret").write_text("tok-123\n")
    (tmp_path / "lane.toml").write_text(
        'zone = [0, 0, 10, 10]\n[edge]\ngallery = "g"\nstate_dir = "s"\n'
        '[edge.camera]\nsource = "video.mp4"\n[edge.http]\nhost = "0.0.0.0"\ntoken_file = "secret"\n'
    )
    edge, _ = load_edge_config(tmp_path / "lane.toml")
    assert edge.gallery == str(tmp_path / "g") and edge.state_dir == str(tmp_path / "s")
    assert edge.camera.source == str(tmp_path / "video.mp4") and not edge.camera.is_stream
    assert edge.http.token == "tok-123"


def test_the_compose_lane_config_is_complete_but_for_its_secret():
    with pytest.raises(ConfigError, match="edge.http.token_file: cannot read /run/secrets/lane_token"):
        load_edge_config(REPO / "deploy" / "lane-compose.toml")  # every other key parsed and checked first


@pytest.mark.parametrize(
    "text, needle",
    [
        ("zone = [0, 0, 10, 10]\n", "no [edge] table"),
        ('[edge]\ngallery = "g"\nstate_dir = "s"\n[edge.camera]\nsource = "0"\n', "zone: is required"),
        (
            'zone = [0, 0, 10, 10]\n[edge]\ngallery = "g"\nstate_dir = "s"\n[edge.camera]\nsource = "0"\n[edge.http]\nprot = 1\n',
            "unknown key 'edge.http.prot'",
        ),
        (
            'zone = [0, 0, 10, 10]\n[edge]\ngallery = "g"\nstate_dir = "s"\n[edge.camera]\nsource = "0"\n[edge.http]\nport = "80"\n',
            "edge.http.port: must be int",
        ),
        ('zone = [0, 0, 10, 10]\n[edge]\ngallery = "g"\nstate_dir = "s"\n', "edge.camera.source: is required"),
        (
            'zone = [0, 0, 10, 10]\n[edge]\ngallery = "g"\nstate_dir = "s"\n[edge.camera]\nsource = "0"\n[edge.http]\nhost = "0.0.0.0"\n',
            "set edge.http.token",
        ),
        (
            'zone = [0, 0, 10, 10]\n[edge]\ngallery = "g"\nstate_dir = "s"\n[edge.camera]\nsource = "0"\n[edge.webhook]\nurl = "ftp://x"\n',
            "edge.webhook.url",
        ),
        (
            'zone = [0, 0, 10, 10]\n[edge]\ngallery = "g"\nstate_dir = "s"\n[edge.camera]\nsource = "0"\n[edge.http]\ntoken_file = "nope"\n',
            "edge.http.token_file: cannot read",
        ),
        ('zone = [0, 0, 10, 10]\n[edge]\nstate_dir = "s"\n[edge.camera]\nsource = "0"\n', "edge.gallery: is required"),
    ],
)
def test_config_mistakes_name_the_file_and_the_key(tmp_path, text, needle):
    path = tmp_path / "lane.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_edge_config(path)
    assert str(path) in str(e.value) and needle in str(e.value), str(e.value)


# --- metrics ---------------------------------------------------------------------------------------


def test_metrics_are_valid_prometheus_text():
    m = metrics()
    m.frames_read.inc(amount=3)
    m.events.inc("non_scan")
    m.frames_dropped.inc("queue_full")
    for v in (0.001, 0.03, 0.03, 7.0):
        m.processing.observe(v)
    text = m.render()
    assert "# TYPE reid_frames_read_total counter\nreid_frames_read_total 3\n" in text
    assert 'reid_events_total{type="non_scan"} 1\n' in text and 'reid_events_total{type="basket"} 0\n' in text
    assert 'reid_frames_dropped_total{reason="queue_full"} 1\n' in text
    assert 'reid_frame_processing_seconds_bucket{le="0.002"} 1\n' in text
    assert 'reid_frame_processing_seconds_bucket{le="0.05"} 3\n' in text
    assert (
        'reid_frame_processing_seconds_bucket{le="+Inf"} 4\n' in text
        and "reid_frame_processing_seconds_count 4\n" in text
    )
    assert "reid_gallery_version 7\n" in text and "process_resident_memory_bytes " in text
    for line in text.splitlines():  # every sample line is NAME{labels} NUMBER
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            float(value.replace("+Inf", "inf"))
            assert name.split("{")[0].replace("_", "").isalnum()
    with pytest.raises(KeyError):
        m.events.inc("no_such_type")  # label sets are fixed: series cannot pile up


# --- frames ----------------------------------------------------------------------------------------


def test_frame_queue_drops_the_oldest_and_counts():
    dropped = []
    q = FrameQueue(3, lambda: dropped.append(1))
    for i in range(5):
        q.put(Frame(i, float(i), np.zeros((2, 2, 3), np.uint8)))
    assert len(dropped) == 2 and len(q) == 3
    assert [q.get(0.01).index for _ in range(3)] == [2, 3, 4]
    assert q.get(0.01) is None


def _write_video(path: Path, n: int, fps: float) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    for i in range(n):
        writer.write(np.full((48, 64, 3), 10 * i, np.uint8))
    writer.release()
    return path


def test_a_video_file_is_played_in_real_time_stamped_from_the_start_and_loops(tmp_path):
    video = _write_video(tmp_path / "v.avi", 6, 10.0)
    m = metrics()
    q = FrameQueue(256, lambda: None)
    feed = CameraFeed(CameraConfig(source=str(video), loop=True), q, m)
    feed.start()
    got: list[tuple[Frame, float]] = []
    deadline = time.monotonic() + 60
    while len(got) < 14 and time.monotonic() < deadline:
        frame = q.get(0.05)
        if frame is not None:
            got.append((frame, time.time()))
    feed.stop()
    assert len(got) == 14
    origin = got[0][0].ts
    stamps = [f.ts - origin for f, _ in got]
    assert stamps == pytest.approx([i / 10 for i in range(len(got))], abs=0.02)  # on through the loop, no jump
    assert all(arrived >= f.ts - 0.02 for f, arrived in got)  # never released before its time
    assert feed.status()["loops"] >= 2 and feed.status()["clock_origin"] is not None
    assert feed.status()["state"] == "stopped" and m.frames_read.value() >= 14


def test_a_video_file_that_ends_leaves_the_camera_blind_from_its_last_frame(tmp_path):
    video = _write_video(tmp_path / "v.avi", 4, 20.0)
    q = FrameQueue(256, lambda: None)
    feed = CameraFeed(CameraConfig(source=str(video)), q, metrics())
    feed.start()
    assert wait_until(lambda: feed.status()["state"] == "ended")
    frames = [q.get(0.01) for _ in range(4)]
    assert feed.status()["state"] == "ended" and not feed.connected
    assert feed.blind_since() == pytest.approx(frames[-1].ts)
    assert feed.was_blind(frames[-1].ts + 0.01) and not feed.was_blind(frames[1].ts)
    feed.stop()


def test_an_unreachable_stream_is_retried_and_health_says_why():
    port = free_port()
    m = metrics()
    feed = CameraFeed(
        CameraConfig(
            source=f"http://127.0.0.1:{port}/cam.mjpg", open_timeout_s=0.5, reconnect_min_s=0.05, reconnect_max_s=0.1
        ),
        FrameQueue(4, lambda: None),
        m,
    )
    feed.start()
    assert wait_until(lambda: feed.status()["error"] is not None)
    status = feed.status()
    assert status["state"] == "connecting" and not status["connected"] and "cannot be opened" in status["error"]
    assert feed.was_blind(time.time())
    feed.stop()


# --- POS intake ------------------------------------------------------------------------------------


def inbox(capacity: int = 100) -> PosInbox:
    return PosInbox(capacity, metrics(), clock_offset_s=0.0, max_skew_s=300.0)


def test_pos_bodies_one_event_or_a_list():
    now = time.time()
    [one] = parse_pos_body(json.dumps({"ts": now, "type": "scan", "sku": "Banana", "txn": "T1"}).encode(), 10)
    assert one == PosEvent(now, "scan", "Banana", None, "T1")
    many = parse_pos_body(
        json.dumps(
            [{"ts": now, "type": "txn_start", "txn": "T2"}, {"ts": now + 1, "type": "scan", "barcode": "0123"}]
        ).encode(),
        10,
    )
    assert [e.type for e in many] == ["txn_start", "scan"] and many[1].barcode == "0123"


@pytest.mark.parametrize(
    "body, needle",
    [
        (b"", "HTTP body: empty"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"ts": 1,', "not valid JSON"),
        (b"42", "expected a JSON object or a list of them, got int"),
        (b"[]", "an empty list"),
        (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
        (b'{"type": "scan", "sku": "A"}', "HTTP body: missing field 'ts'"),
        (
            b'[{"ts": 1.0, "type": "scan", "sku": "A"}, {"ts": 2.0, "type": "refund", "sku": "A"}]',
            "HTTP body[1]: field 'type' is 'refund'",
        ),
        (b'{"ts": 1.0, "type": "scan", "barcode": 123}', "field 'barcode' must be a string"),
        (
            json.dumps([{"ts": 1.0, "type": "txn_start", "txn": "T"}] * 11).encode(),
            "11 events in one request, at most 10",
        ),
    ],
)
def test_garbage_pos_bodies_are_refused_naming_the_event_and_field(body, needle):
    with pytest.raises(PosError) as e:
        parse_pos_body(body, 10)
    assert needle in str(e.value), str(e.value)


def test_events_with_a_wrong_clock_are_refused_and_a_full_inbox_takes_nothing():
    box = inbox(capacity=3)
    stale = json.dumps(
        [{"ts": time.time(), "type": "txn_start", "txn": "T"}, {"ts": 12.5, "type": "scan", "sku": "A"}]
    ).encode()
    with pytest.raises(PosError, match=r"HTTP body\[1\]: field 'ts' is 12.500, .* check the POS clock"):
        parse_pos_body(stale, 10, box.check)
    events = [PosEvent(time.time(), "scan", "A") for _ in range(2)]
    box.put(events, "http")
    with pytest.raises(InboxFull):
        box.put(events, "http")
    assert len(box) == 2 and box.last()["source"] == "http" and box.take() == events and len(box) == 0


def _line(ts: float, sku: str) -> str:
    return json.dumps({"ts": ts, "type": "scan", "sku": sku}) + "\n"


def test_pos_file_new_lines_are_read_bad_ones_skipped_and_a_restart_resumes(tmp_path):
    pos, state = tmp_path / "pos.jsonl", tmp_path / "offset.json"
    now = time.time()
    pos.write_text(_line(now, "Old"))  # there before the service: not read (from_start is off)
    m = metrics()
    box = PosInbox(100, m, 0.0, 300.0)
    tailer = PosFileTailer(pos, box, state, poll_s=0.02, from_start=False, metrics=m)
    tailer.start()
    with open(pos, "a") as f:
        f.write(_line(now + 1, "A") + "not json\n" + _line(now + 2, "B")[:20])
        f.flush()
        assert wait_until(lambda: len(box) == 1)
        f.write(_line(now + 2, "B")[20:] + '{"ts": 1, "type": "scan", "sku": "Skewed"}\n')
    assert wait_until(lambda: len(box) == 2 and m.pos_rejected.value("file") == 2)
    tailer.stop()
    got = box.take()
    assert [(e.sku, e.line) for e in got] == [("A", 2), ("B", 4)]
    with open(pos, "a") as f:
        f.write(_line(now + 3, "C"))
    again = PosFileTailer(pos, box, state, poll_s=0.02, from_start=False, metrics=m)
    again.start()
    again.stop()  # stopping reads what was appended first
    assert [(e.sku, e.line) for e in box.take()] == [("C", 6)]


def test_pos_file_replaced_is_read_from_its_start(tmp_path):
    pos, state = tmp_path / "pos.jsonl", tmp_path / "offset.json"
    now = time.time()
    pos.write_text(_line(now, "A") + _line(now, "B"))
    box = inbox()
    tailer = PosFileTailer(pos, box, state, poll_s=0.02, from_start=True, metrics=metrics())
    tailer.start()
    assert wait_until(lambda: len(box) == 2)
    rotated = tmp_path / "pos.new"
    rotated.write_text(_line(now, "C"))
    os.replace(rotated, pos)
    assert wait_until(lambda: len(box) == 3)
    tailer.stop()
    assert [e.sku for e in box.take()] == ["A", "B", "C"]


# --- alert log -------------------------------------------------------------------------------------


def test_alert_log_numbers_continue_across_restarts_and_since_reads_any_point(tmp_path):
    path = tmp_path / "events.jsonl"
    log = AlertLog(path, "lane-1", "lane-1-aaaa")
    for i in range(300):
        log.append(alert(i) if i % 7 else BasketEvent("T1", {"A": 1}, {"A": 1}, 1, 1, 1, 1), gallery_version=3)
    log.close()
    log = AlertLog(path, "lane-1", "lane-1-bbbb")  # a restart: a new id prefix, the numbers go on
    assert log.last_seq == 300
    assert log.append(alert(9999), 4) == 301
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["seq"] for r in records] == list(range(1, 302))
    assert records[0]["id"] == "lane-1-aaaa-1" and records[-1]["id"] == "lane-1-bbbb-301"
    assert records[1]["type"] == "non_scan" and records[1]["gallery_version"] == 3 and records[1]["track_id"] == 1
    assert {k: records[1][k] for k in alert(1).to_dict()} == alert(
        1
    ).to_dict()  # the replay's format, plus the envelope
    for since in (0, 1, 2, 150, 227, 299, 300, 301, 5000):
        assert [r["seq"] for r in log.read_after(since, 50)] == list(range(since + 1, min(since + 51, 302)))
    log.close()


def test_a_torn_last_line_is_moved_aside_not_read_as_an_alert(tmp_path):
    path = tmp_path / "events.jsonl"
    log = AlertLog(path, "l", "l-x")
    log.append(alert(1), 1)
    log.close()
    with open(path, "ab") as f:
        f.write(b'{"seq": 2, "id": "l-x-2", "type": "non_')
    log = AlertLog(path, "l", "l-y")
    assert log.last_seq == 1 and path.read_bytes().endswith(b"\n")
    [aside] = tmp_path.glob("events.jsonl.torn-*")
    assert aside.read_bytes() == b'{"seq": 2, "id": "l-x-2", "type": "non_'
    assert log.append(alert(2), 1) == 2
    log.close()


# A child process with a file-size limit (RLIMIT_FSIZE): the kernel refuses the writes, part way
# through a line, exactly as a full disk does, and the limit can be lifted again ("disk freed").
DISK_FULL_SCRIPT = r"""
import json, resource, signal, sys
from pathlib import Path
import numpy as np
from retail_reid.pipeline.edge.alert_log import AlertLog
from retail_reid.pipeline.edge.evidence import EvidenceWriter
from retail_reid.pipeline.edge.metrics import EdgeMetrics
from retail_reid.pipeline.types import Crop, Event, ItemPass
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
root = Path(sys.argv[1])
log = AlertLog(root / "events.jsonl", "l", "l-x")
ev = lambda i: Event("non_scan", float(i), float(i) + 1, track_id=i)
log.append(ev(1), 1)
size = (root / "events.jsonl").stat().st_size
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, hard))
log.append(ev(2), 1); log.append(ev(3), 1)
full = {"size_kept": (root / "events.jsonl").stat().st_size == size, "unwritten": log.unwritten, "error": log.error,
        "readable": [r["seq"] for r in log.read_after(0, 10)]}
m = EdgeMetrics(lambda: 1, lambda: 1, lambda: 0)
writer = EvidenceWriter(root, "evidence/run", 0, m)
crop = Crop(np.random.default_rng(0).integers(0, 255, (120, 80, 3), dtype=np.uint8), 0.0, (0, 0, 80, 120), 1.0)
paths = writer(ItemPass(5, 0.0, 1.0, 3, (crop, crop)))
full.update(evidence=list(paths), evidence_error=writer.error, evidence_failures=m.evidence_failures.value(),
            evidence_files=sorted(p.name for p in (root / "evidence" / "run").iterdir()))
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
log.retry()
freed = {"unwritten": log.unwritten, "error": log.error, "seqs": [r["seq"] for r in log.read_after(0, 10)],
         "tracks": [r["track_id"] for r in log.read_after(0, 10)], "evidence": list(writer(ItemPass(6, 0.0, 1.0, 3, (crop,))))}
print(json.dumps({"full": full, "freed": freed}))
"""


def test_a_full_disk_keeps_alerts_in_order_in_memory_and_costs_only_the_evidence(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", DISK_FULL_SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    full, freed = result["full"], result["freed"]
    assert full["size_kept"] and full["unwritten"] == 2 and full["readable"] == [1]  # no torn line on disk
    assert "cannot write" in full["error"] and "2 alerts wait in memory" in full["error"]
    assert (
        full["evidence"] == []
        and full["evidence_failures"] == 1
        and "evidence crops not saved" in full["evidence_error"]
    )
    assert full["evidence_files"] == []  # no half-written JPEG left behind
    assert freed["unwritten"] == 0 and freed["error"] is None
    assert freed["seqs"] == [1, 2, 3] and freed["tracks"] == [1, 2, 3]
    assert freed["evidence"] == ["evidence/run/track00006_0.jpg"]


# --- evidence --------------------------------------------------------------------------------------


def test_evidence_is_skipped_below_the_free_space_reserve_or_when_unwritable(tmp_path):
    m = metrics()
    crop = Crop(np.full((60, 40, 3), 128, np.uint8), 0.0, (0, 0, 40, 60), 1.0)
    item = ItemPass(3, 0.0, 1.0, 3, (crop, crop))
    ok = EvidenceWriter(tmp_path, "evidence/r1", 0, m)
    assert ok(item) == ("evidence/r1/track00003_0.jpg", "evidence/r1/track00003_1.jpg")
    assert cv2.imread(str(tmp_path / "evidence/r1/track00003_1.jpg")).shape == (60, 40, 3)
    reserve = EvidenceWriter(tmp_path, "evidence/r2", 1 << 62, m)  # more free space asked for than any disk has
    assert reserve(item) == () and "MB kept for alerts" in reserve.error
    (tmp_path / "blocked").write_text("a file where the folder should be")
    blocked = EvidenceWriter(tmp_path, "blocked/r3", 0, m)
    assert blocked(item) == () and "evidence crops not saved" in blocked.error
    assert m.evidence_failures.value() == 2


# --- webhook ---------------------------------------------------------------------------------------


def test_webhook_receiver_down_then_up_gets_every_alert_once_in_order_and_a_restart_resends_nothing(tmp_path):
    log = AlertLog(tmp_path / "events.jsonl", "l", "l-x")
    port = free_port()
    config = WebhookConfig(
        url=f"http://127.0.0.1:{port}/alerts", token="hook-token", timeout_s=2.0, backoff_min_s=0.05, backoff_max_s=0.2
    )
    m = metrics()
    sender = WebhookSender(log, config, tmp_path / "cursor.json", m)
    sender.start()
    for i in range(1, 4):
        log.append(alert(i), 1)
    assert wait_until(lambda: m.webhook_failures.value() >= 3)  # nobody listening: retried with backoff
    assert sender.pending() == 3 and "Connection refused" in sender.status()["error"]
    receiver = Receiver(port, fail=2).start()  # up, but answers 500 twice first
    try:
        assert wait_until(lambda: sender.pending() == 0)
        log.append(alert(4), 1)
        assert wait_until(lambda: len(receiver.received) == 4)
        sender.stop(grace_s=1.0)
        assert receiver.ids() == [f"l-x-{i}" for i in range(1, 5)]
        assert [r["track_id"] for r in receiver.received] == [1, 2, 3, 4]
        assert all(
            h["Idempotency-Key"] == r["id"] and h["Authorization"] == "Bearer hook-token"
            for h, r in zip(receiver.headers, receiver.received)
        )
        log.append(alert(5), 1)  # written while the sender is down
        restarted = WebhookSender(log, config, tmp_path / "cursor.json", m)
        assert restarted.delivered_seq == 4
        restarted.start()
        assert wait_until(lambda: restarted.pending() == 0)
        restarted.stop(grace_s=1.0)
        assert receiver.ids() == [f"l-x-{i}" for i in range(1, 6)]  # 5 delivered after the restart, 1-4 not again
        assert m.webhook_delivered.value() == 5
    finally:
        receiver.stop()
        log.close()


def test_webhook_stops_within_its_grace_and_leaves_the_rest_on_disk(tmp_path):
    log = AlertLog(tmp_path / "events.jsonl", "l", "l-x")
    config = WebhookConfig(
        url=f"http://127.0.0.1:{free_port()}/a", timeout_s=0.5, backoff_min_s=0.05, backoff_max_s=0.1
    )
    sender = WebhookSender(log, config, tmp_path / "cursor.json", metrics())
    sender.start()
    log.append(alert(1), 1)
    started = time.monotonic()
    sender.stop(grace_s=0.3)
    assert (
        not sender._thread.is_alive() and time.monotonic() - started < 10
    )  # bounded: it gives up waiting, not the alert
    assert sender.pending() == 1 and json.loads((tmp_path / "cursor.json").read_text())["seq"] == 0
    log.close()


# --- HTTP API --------------------------------------------------------------------------------------


@pytest.fixture
def api(tmp_path):
    m = metrics()
    box = PosInbox(5, m, 0.0, 300.0)
    log = AlertLog(tmp_path / "events.jsonl", "l", "l-x")
    refreshed = []
    ctx = ApiContext(
        box, log, m, lambda: (200, {"status": "ok"}), lambda: refreshed.append(1) or {"switched": False, "version": 7}
    )
    server = ApiServer(
        HttpConfig(
            port=0,
            token="s3cret",
            max_body_bytes=2048,
            max_events_per_post=50,
            max_connections=3,
            request_timeout_s=20.0,
        ),
        ctx,
    )
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.port}", box, log, m, refreshed
    server.shutdown()
    server.server_close()
    log.close()


def call(
    url: str,
    data: bytes | None = None,
    token: str | None = "s3cret",
    method: str | None = None,
    headers: dict | None = None,
):
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers=h, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def test_api_pos_accepts_good_events_and_refuses_the_rest_with_the_reason(api):
    url, box, _, m, _ = api
    now = time.time()
    code, body, _ = call(
        url + "/pos",
        json.dumps(
            [{"ts": now, "type": "txn_start", "txn": "T1"}, {"ts": now, "type": "scan", "sku": "Banana", "txn": "T1"}]
        ).encode(),
    )
    assert code == 202 and json.loads(body) == {"accepted": 2} and len(box) == 2
    code, body, _ = call(url + "/pos", b'[{"ts": 1e9, "type": "scan"}]')
    assert code == 400 and "HTTP body[0]" in json.loads(body)["error"]
    code, body, _ = call(url + "/pos", b"\x00\x01garbage")
    assert code == 400 and "not valid JSON" in json.loads(body)["error"]
    code, body, _ = call(url + "/pos", json.dumps([{"ts": now, "type": "scan", "sku": "A"}] * 4).encode())
    assert code == 503 and "waiting for the lane" in json.loads(body)["error"]  # the inbox holds 5
    code, body, headers = call(url + "/pos", b"x" * 5000)
    assert code == 413 and "at most 2048" in json.loads(body)["error"]
    assert len(box) == 2 and m.pos_rejected.value("http") == 3 and m.pos_received.value("http") == 2


def test_api_asks_for_the_token_and_a_length(api):
    url, box, _, _, refreshed = api
    event = json.dumps({"ts": time.time(), "type": "scan", "sku": "A"}).encode()
    for token in (None, "wrong"):
        code, body, headers = call(url + "/pos", event, token=token)
        assert (
            code == 401
            and "bearer token" in json.loads(body)["error"]
            and headers["WWW-Authenticate"].startswith("Bearer")
        )
        code, _, _ = call(url + "/admin/gallery/refresh", b"", token=token)
        assert code == 401
    assert len(box) == 0 and refreshed == []
    code, body, _ = call(url + "/admin/gallery/refresh", b"")
    assert code == 200 and json.loads(body)["version"] == 7 and refreshed == [1]
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as s:
        s.sendall(
            b"POST /pos HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        assert s.recv(100).startswith(b"HTTP/1.0 411")
    code, _, _ = call(url + "/nowhere")
    assert code == 404


def test_api_events_since_and_limits(api):
    url, _, log, _, _ = api
    for i in range(1, 6):
        log.append(alert(i), 2)
    code, body, _ = call(url + "/events?since=2&limit=2", token=None)
    page = json.loads(body)
    assert (
        code == 200
        and [e["seq"] for e in page["events"]] == [3, 4]
        and page["next_since"] == 4
        and page["last_seq"] == 5
    )
    page = json.loads(call(url + "/events?since=4", token=None)[1])
    assert [e["seq"] for e in page["events"]] == [5] and page["events"][0]["type"] == "non_scan"
    for query in ("since=abc", "since=-1", "limit=0", "limit=100000"):
        code, body, _ = call(url + "/events?" + query, token=None)
        assert code == 400 and "query parameter" in json.loads(body)["error"]
    code, body, headers = call(url + "/metrics", token=None)
    assert (
        code == 200
        and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        and b"reid_frames_read_total" in body
    )
    assert json.loads(call(url + "/health", token=None)[1]) == {"status": "ok"}


def test_api_serves_a_bounded_number_of_connections_at_once(api):
    url, *_ = api
    port = int(url.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]  # hold every slot, sending nothing
    try:

        def refused() -> bool:
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.settimeout(1.0)
                try:
                    return s.recv(100).startswith(b"HTTP/1.0 503")
                except TimeoutError:
                    return False  # it got a slot: the idle ones were not all taken in yet

        assert wait_until(refused)
    finally:
        for s in idle:
            s.close()
    assert wait_until(lambda: call(url + "/health", token=None)[0] == 200)  # slots come back once those close


def test_the_service_modules_never_import_torch():
    code = (
        "import sys, retail_reid.pipeline.edge.service, retail_reid.cli; "
        "retail_reid.cli.build_parser(); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr
