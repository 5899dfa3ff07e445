"""Several lanes in one `reid edge` ([[lane]] tables): the config (shared tables laid under each
lane, names and state folders that must differ), the per-lane HTTP routes and metrics, and end to
end two lanes from simulated video files, served as network cameras, in one process: one camera is
cut for good, and the other lane keeps deciding and alerting (webhook included) while health
names the lost camera on its own lane only."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from camera_fixtures import MjpegCamera
from contract_fixtures import assert_valid
from edge_fixtures import Receiver, call, free_port, metrics, sample, wait_until

from retail_reid.cli import main
from retail_reid.models.datasets import folder_set
from retail_reid.pipeline.config import ConfigError
from retail_reid.pipeline.contract import SchemaName
from retail_reid.pipeline.edge.alert_log import AlertLog
from retail_reid.pipeline.edge.http_api import ApiContext, ApiServer, LaneRoutes
from retail_reid.pipeline.edge.metrics import ServiceMetrics
from retail_reid.pipeline.edge.pos_intake import PosInbox
from retail_reid.pipeline.edge.settings import HttpConfig, load_edge_config, load_edge_lanes
from retail_reid.pipeline.harness.simulate import SimConfig, simulate

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample" / "grocery"
TOKEN = "lanes-token-51c2"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "REID_THREADS": "1", "PYTHONPATH": str(REPO)}
SLOW = 180.0  # bound on any wait for the service (start-up on a loaded machine included)
# The scenario of test_edge_service: 8 passes in 21 s, 2 never scanned, 2 scanned as another product.
SCENARIO = SimConfig(
    passes=8, transactions=2, non_scan_rate=0.25, switch_rate=0.25, scan_without_item_rate=0.13, seed=1
)

TWO_LANES = """
zone = [192, 86, 448, 413]

[edge]
gallery = "gallery"
state_dir = "state"
[edge.http]
port = 0
[edge.webhook]
url = "http://127.0.0.1:9/alerts"

[[lane]]
name = "north"
camera = {{ source = "{a}" }}

[[lane]]
name = "south"
exclude = [[0, 0, 50, 50]]
state_dir = "/var/lib/reid/south"
camera = {{ source = "{b}" }}
webhook = {{ url = "http://127.0.0.1:10/south" }}
[lane.events]
window_after_s = 0.8
"""


# --- the config ------------------------------------------------------------------------------------


def test_each_lane_gets_the_shared_tables_and_its_own(tmp_path):
    path = tmp_path / "lane.toml"
    path.write_text(TWO_LANES.format(a="rtsp://192.0.2.1/a", b="clip.mp4"))
    (north, north_lane), (south, south_lane) = load_edge_lanes(path)
    assert (north.lane, south.lane) == ("north", "south")
    assert north.gallery == south.gallery == str(tmp_path / "gallery") and north.http == south.http
    assert north.state_dir == str(tmp_path / "state" / "north") and south.state_dir == "/var/lib/reid/south"
    assert north.camera.source == "rtsp://192.0.2.1/a" and south.camera.source == str(tmp_path / "clip.mp4")
    assert north.webhook.url == "http://127.0.0.1:9/alerts" and south.webhook.url == "http://127.0.0.1:10/south"
    assert north_lane.zone == south_lane.zone and north_lane.exclude == () and len(south_lane.exclude) == 1
    assert north_lane.events.window_after_s == 0.5 and south_lane.events.window_after_s == 0.8
    with pytest.raises(ConfigError, match=r"lane\.toml: has 2 lanes; name one with --lane \(north, south\)"):
        load_edge_config(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('name = "south"', 'name = "north"'), r"\[\[lane\]\] name: 'north' is given to two lanes"),
        (('state_dir = "/var/lib/reid/south"', 'state_dir = "state/north"'), r"state_dir: .* is given to two lanes"),
        (('name = "south"', ""), r"\[\[lane\]\] 2: name: is required"),
        (
            ("[edge.http]", '[edge.pos]\nfile = "till.jsonl"\n[edge.http]'),
            r"pos\.file: .*till\.jsonl' is given to two lanes",
        ),
        (("[edge.http]", '[edge.mqtt]\nhost = "b"\ntopic_prefix = "t"\n[edge.http]'), r"mqtt\.topic_prefix: 't'"),
        (("window_after_s = 0.8", "window_after_s = -1"), r"\[\[lane\]\] 2 \(south\): .*window_after_s"),
        (('camera = { source = "rtsp://192.0.2.1/a" }', "http = { port = 1 }"), r"\[\[lane\]\] 1 \(north\): .*'http'"),
    ],
)
def test_a_wrong_lane_is_named_with_its_file_and_table(tmp_path, change, message):
    path = tmp_path / "lane.toml"
    path.write_text(TWO_LANES.format(a="rtsp://192.0.2.1/a", b="clip.mp4").replace(*change))
    with pytest.raises(ConfigError, match=message) as e:
        load_edge_lanes(path)
    assert str(e.value).startswith(str(path))


def test_the_shipped_single_lane_file_is_still_one_lane():
    [(edge, _)] = load_edge_lanes(REPO / "deploy" / "lane.toml")
    assert edge == load_edge_config(REPO / "deploy" / "lane.toml")[0]


# --- routes and metrics ----------------------------------------------------------------------------


def test_each_lane_has_its_routes_and_the_short_ones_are_refused(tmp_path):
    lanes = {}
    for name in ("north", "south"):
        m = metrics()
        lanes[name] = LaneRoutes(
            PosInbox(50, m, 0.0, 300.0), AlertLog(tmp_path / f"{name}.jsonl", name, f"{name}-x"), m
        )
    first = lanes["north"]
    ctx = ApiContext(first.inbox, first.alerts, first.metrics, lambda: (200, {}), lambda: {}, lanes=lanes)
    server = ApiServer(HttpConfig(port=0, token="s3cret"), ctx)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        scan = json.dumps({"ts": time.time(), "type": "scan", "sku": "Lime"}).encode()
        assert call(url + "/lanes/south/pos", scan)[0] == 202
        code, body, _ = call(url + "/pos", scan)
        assert code == 404 and b"/lanes/LANE/pos" in body and b"north, south" in body
        assert call(url + "/lanes/east/pos", scan)[0] == 404
        assert call(url + "/lanes/south/pos", scan, token=None)[0] == 401
        assert len(lanes["south"].inbox) == 1 and len(lanes["north"].inbox) == 0
        assert json.loads(call(url + "/lanes/north/events")[1])["events"] == []
        assert call(url + "/events")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
        for lane in lanes.values():
            lane.alerts.close()


def test_metrics_of_several_lanes_carry_the_lane_label_and_process_series_once():
    service = ServiceMetrics(lambda: 4, labelled=True)
    north, south = (metrics(lane=n, service=service) for n in ("north", "south"))
    north.camera_reconnects.inc()
    south.alert_latency.observe(0.4)
    text = service.render()
    assert sample(text, "reid_camera_reconnects_total", lane="north") == 1
    assert sample(text, "reid_camera_reconnects_total", lane="south") == 0
    assert sample(text, "reid_alert_latency_seconds_bucket", lane="south", le="0.5") == 1
    assert sample(text, "reid_alert_latency_seconds_count", lane="north") == 0
    assert text.count("# TYPE reid_camera_reconnects_total") == 1
    assert text.count("\nprocess_resident_memory_bytes ") == 1 and sample(text, "reid_gallery_version") == 4


# --- end to end: one camera cut, the other lane goes on -------------------------------------------


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lanes-scenario")
    simulate(folder_set(SAMPLE / "val"), out, SCENARIO)
    return out


def _request(url: str, body: bytes | None = None) -> tuple[int, object]:
    """(status, JSON body or text) with the service's token."""
    code, data, headers = call(url, body, token=TOKEN)
    return code, json.loads(data) if headers.get("Content-Type", "").startswith("application/json") else data.decode()


def test_one_camera_cut_the_other_lane_keeps_deciding_and_alerting(built_gallery, scenario, tmp_path):
    video = scenario / json.loads((scenario / "truth.json").read_text())["video"]
    pos = [json.loads(line) for line in (scenario / "pos.jsonl").read_text().splitlines()]
    shutil.copytree(built_gallery, tmp_path / "gallery")
    receiver = Receiver().start()
    cameras = {"north": MjpegCamera(video), "south": MjpegCamera(video)}
    for camera in cameras.values():
        camera.port = free_port()
    config = tmp_path / "lanes.toml"
    config.write_text(
        f"zone = {json.dumps(list(SCENARIO.zone))}\n\n"
        f'[edge]\ngallery = "gallery"\nstate_dir = "state"\ngallery_poll_s = 0.5\nshutdown_grace_s = 3.0\n'
        f'[edge.http]\nport = 0\ntoken = "{TOKEN}"\n'
        f'[edge.webhook]\nurl = "http://127.0.0.1:{receiver.port}/alerts"\n'
        + "".join(
            f'\n[[lane]]\nname = "{name}"\n[lane.camera]\nsource = "{camera.url}"\nqueue_frames = 256\n'
            "reconnect_min_s = 0.2\nreconnect_max_s = 1.0\n"
            for name, camera in cameras.items()
        )
    )
    log_path = tmp_path / "service.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "retail_reid", "edge", "--config", str(config)],
            cwd=REPO,
            env=ENV,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def ready() -> bool:
            assert proc.poll() is None, log_path.read_text()
            try:
                info = [json.loads((tmp_path / "state" / n / "service.json").read_text()) for n in cameras]
            except (OSError, ValueError):
                return False
            return all(i["pid"] == proc.pid for i in info)

        assert wait_until(ready, SLOW, 0.1), log_path.read_text()
        url = json.loads((tmp_path / "state" / "north" / "service.json").read_text())["url"]
        for camera in cameras.values():
            camera.plug()  # the scenario starts now on both lanes
        for name, camera in cameras.items():  # early is fine: each lane holds an event until its clock reaches it
            body = json.dumps([{**e, "ts": camera.origin + e["ts"]} for e in pos]).encode()
            assert _request(f"{url}/lanes/{name}/pos", body)[0] == 202
        assert wait_until(lambda: all(lane["camera"]["connected"] for lane in _request(url + "/health")[1]["lanes"]))
        north = cameras["north"]
        time.sleep(max(0.0, north.origin + 5.8 - time.time()))  # no item in the zone from 5.2 s to 8.8 s
        north.unplug()  # and never back
        cut_at = time.time()

        def south_alerted_after_the_cut() -> bool:
            events = _request(f"{url}/lanes/south/events?limit=1000")[1]["events"]
            return any(e["type"] == "non_scan" and e["t_start"] > cut_at for e in events)

        assert wait_until(south_alerted_after_the_cut, SLOW, 0.2), log_path.read_text()
        assert wait_until(lambda: any(r["lane"] == "south" and r["t_start"] > cut_at for r in receiver.received))
        code, health = _request(url + "/health")
        metrics_text = _request(url + "/metrics")[1]
        short = _request(url + "/pos", b"{}")
        north_events = _request(f"{url}/lanes/north/events?limit=1000")[1]["events"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(SLOW) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(SLOW)
        for camera in cameras.values():
            if camera._live.is_set():
                camera.unplug()
        receiver.stop()
    assert code == 200 and health["status"] == "degraded", health
    assert_valid(SchemaName.HEALTH, health, what="the health of two lanes")
    lanes = {lane["lane"]: lane for lane in health["lanes"]}
    assert not lanes["north"]["camera"]["connected"] and lanes["north"]["status"] == "degraded"
    assert lanes["south"]["camera"]["connected"] and lanes["south"]["status"] == "ok", lanes["south"]
    assert any(p.startswith("north: camera") for p in health["problems"])
    assert not any(p.startswith("south:") for p in health["problems"])
    assert any(e["type"] == "non_scan" and e["t_end"] < cut_at for e in north_events)  # north decided before
    assert {r["lane"] for r in receiver.received} == {"north", "south"}  # one shared webhook, alerts of each lane
    assert short[0] == 404
    assert sample(metrics_text, "reid_camera_connected", lane="north") == 0
    assert sample(metrics_text, "reid_camera_connected", lane="south") == 1
    for name in cameras:
        assert not (tmp_path / "state" / name / "service.json").exists()


def test_dead_letters_takes_the_lane_by_name(tmp_path, capsys):
    path = tmp_path / "lane.toml"
    path.write_text(TWO_LANES.format(a="rtsp://192.0.2.1/a", b="clip.mp4").replace("/var/lib/reid/south", "south"))
    (tmp_path / "south").mkdir()
    assert main(["edge", "dead-letters", "--config", str(path), "--lane", "south"]) == 0
    assert f"0 dead letters in {tmp_path / 'south'}" in capsys.readouterr().out
    assert main(["edge", "dead-letters", "--config", str(path)]) == 2
    assert "name one with --lane (north, south)" in capsys.readouterr().err
    assert main(["edge", "dead-letters", "--config", str(path), "--lane", "north"]) == 2  # never run: no state yet
    assert "state" in capsys.readouterr().err
