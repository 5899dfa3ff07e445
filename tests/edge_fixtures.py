"""Helpers shared by the edge tests: metrics, alerts, a free port, polling, a webhook receiver, and a
live HTTP API (`api` fixture) with its client (`call`)."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from retail_reid.pipeline.edge.alert_log import AlertLog
from retail_reid.pipeline.edge.http_api import ApiContext, ApiServer, LaneRoutes
from retail_reid.pipeline.edge.metrics import EdgeMetrics, ServiceMetrics
from retail_reid.pipeline.edge.pos_intake import PosInbox
from retail_reid.pipeline.edge.settings import HttpConfig
from retail_reid.pipeline.records import Event, EventType

REPO = Path(__file__).resolve().parents[1]


def metrics(gallery_version: float = 7, lane: str = "", service: ServiceMetrics | None = None) -> EdgeMetrics:
    """One lane's metrics, in a service of its own unless `service` is given."""
    return EdgeMetrics(service or ServiceMetrics(lambda: gallery_version), lambda: 1.0, lambda: 0, lane=lane)


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a /metrics text, parsed as Prometheus parses it."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    raise KeyError(f"{name}{labels} not in the metrics text")


def alert(i: int) -> Event:
    return Event(
        type=EventType.NON_SCAN,
        t_start=100.0 + i,
        t_end=101.0 + i,
        track_id=i,
        seen_sku="Banana",
        seen_score=0.8,
        txn="T1",
    )


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
    """A webhook receiver on loopback that records every delivery; `fail` answers 500 that many
    times; `refuse` answers 422 to the alerts with those ids (and records their attempts)."""

    def __init__(self, port: int = 0, fail: int = 0, refuse: set[str] | None = None):
        self.port, self.fail = port, fail
        self.refuse = set(refuse or ())
        self.refused: list[str] = []
        self.refuse_status = 422
        self.received: list[dict] = []
        self.headers: list[dict] = []
        self.bodies: list[bytes] = []  # as received, for signature checks
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
                if json.loads(body)["id"] in owner.refuse:
                    owner.refused.append(json.loads(body)["id"])
                    self.send_response(owner.refuse_status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                owner.received.append(json.loads(body))
                owner.bodies.append(body)
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


@pytest.fixture
def api(tmp_path, request):
    """An API server of one lane; `max_body_bytes` 2048 unless parametrized (indirect) with another."""
    m = metrics()
    box = PosInbox(5, m, 0.0, 300.0)
    log = AlertLog(tmp_path / "events.jsonl", "l", "l-x")
    refreshed = []
    ctx = ApiContext(
        box,
        log,
        m,
        lambda: (200, {"status": "ok"}),
        lambda: refreshed.append(1) or {"switched": False, "version": 7},
        lanes={"l": LaneRoutes(box, log, m)},  # a single lane: its routes under /lanes/l too
    )
    server = ApiServer(
        HttpConfig(
            port=0,
            token="s3cret",
            max_body_bytes=getattr(request, "param", 2048),
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
