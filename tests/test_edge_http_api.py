"""`retail_reid.pipeline.edge.http_api`: answers to good, garbage, oversized and unauthenticated
requests, and a bounded number of connections."""

from __future__ import annotations

import json
import socket
import time

from edge_fixtures import alert, call, wait_until


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
    code, body, _ = call(url + "/pos", b"x" * 5000)
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
            b"POST /pos HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"
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
