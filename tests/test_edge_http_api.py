"""`retail_reid.pipeline.edge.http_api`: answers to good, garbage, oversized and unauthenticated
requests, and a bounded number of connections."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from edge_fixtures import alert, call, metrics, wait_until
from malformed_json import MALFORMED_POS_LINES

from retail_reid.pipeline.edge.alert_log import AlertLog
from retail_reid.pipeline.edge.http_api import ApiContext, ApiServer
from retail_reid.pipeline.edge.pos_intake import PosInbox
from retail_reid.pipeline.edge.settings import HttpConfig


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


@pytest.mark.parametrize("api", [64 << 10], indirect=True)  # room for the deeply nested body
def test_api_answers_malformed_numbers_and_nesting_with_400_and_takes_the_next_body(api):
    """A 5000-digit integer used to raise a ValueError in the handler: the connection dropped with
    no answer. Each malformed body is now a 400 naming the reason, counted, and the next one taken."""
    url, box, _, m, _ = api
    for n, (data, reason) in enumerate(MALFORMED_POS_LINES.values(), start=1):
        code, body, _ = call(url + "/pos", data)
        error = json.loads(body)["error"]
        assert code == 400 and error.startswith("HTTP body: ") and reason in error and "\n" not in error
        assert m.pos_rejected.value("http") == n
        code, body, _ = call(url + "/pos", json.dumps({"ts": time.time(), "type": "scan", "sku": f"After{n}"}).encode())
        assert code == 202 and json.loads(body) == {"accepted": 1}
    assert [e.sku for e in box.take()] == [f"After{n}" for n in range(1, 6)]


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
    code, body, _ = call(url + "/events?since=2&limit=2")
    page = json.loads(body)
    assert (
        code == 200
        and [e["seq"] for e in page["events"]] == [3, 4]
        and page["next_since"] == 4
        and page["last_seq"] == 5
    )
    page = json.loads(call(url + "/events?since=4")[1])
    assert [e["seq"] for e in page["events"]] == [5] and page["events"][0]["type"] == "non_scan"
    for query in ("since=abc", "since=-1", "limit=0", "limit=100000"):
        code, body, _ = call(url + "/events?" + query)
        assert code == 400 and "query parameter" in json.loads(body)["error"]
    code, body, headers = call(url + "/metrics")
    assert (
        code == 200
        and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        and b"reid_frames_read_total" in body
    )
    assert json.loads(call(url + "/health", token=None)[1]) == {"status": "ok"}


def test_idle_connections_holding_every_slot_give_way_to_new_requests(api):
    url, *_ = api
    port = int(url.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]  # every slot, sending nothing
    try:
        time.sleep(0.5)
        for _ in range(3):
            assert call(url + "/health", token=None)[0] == 200  # the first took the slot of the oldest idle one
        idle[0].settimeout(10)
        assert idle[0].recv(100) == b""  # cut off: closed without an answer
    finally:
        for s in idle:
            s.close()


def _serve(tmp_path, inbox=None, **settings) -> tuple[str, ApiServer]:
    """An API server on loopback with these HttpConfig settings (and a POS inbox); stopped by the caller."""
    m = metrics()
    ctx = ApiContext(
        inbox or PosInbox(1000, m, 0.0, 300.0),
        AlertLog(tmp_path / "events.jsonl", "l", "l-x"),
        m,
        lambda: (200, {"status": "ok"}),
        lambda: {"switched": False, "version": 7},
    )
    server = ApiServer(HttpConfig(port=0, token="s3cret", **settings), ctx)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return f"http://127.0.0.1:{server.port}", server


def _stop(server: ApiServer) -> None:
    server.shutdown()
    server.server_close()
    server.context.alerts.close()


def test_slow_clients_cannot_freeze_the_api(tmp_path):
    """16 connections sending a byte every 0.3 s: /health and POST /pos still answer at once, and
    each slow one is cut off at the whole-request deadline even though it never stalls a read."""
    url, server = _serve(tmp_path, max_connections=4, request_timeout_s=2.0)
    port = server.port
    stop = threading.Event()
    cut: list[int] = []  # bytes each slow client got to send before it was cut off
    payload = b"POST /pos HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 10000  # 50 minutes at 0.3 s a byte

    def drip() -> None:
        with socket.create_connection(("127.0.0.1", port)) as s:
            sent = 0
            for byte in payload:
                if stop.is_set():
                    return
                try:
                    s.sendall(bytes([byte]))
                except OSError:
                    break
                sent += 1
                time.sleep(0.3)
            cut.append(sent)

    threads = [threading.Thread(target=drip, daemon=True) for _ in range(16)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)  # every slow client is connected and dripping
        for _ in range(5):  # answered while every slot has a slow client (`call` waits at most 10 s)
            code, body, _ = call(url + "/health", token=None)
            assert code == 200 and json.loads(body) == {"status": "ok"}
            event = json.dumps({"ts": time.time(), "type": "scan", "sku": "A"}).encode()
            assert call(url + "/pos", event)[0] == 202
        assert wait_until(lambda: len(cut) == 16, timeout=300)  # each cut off, none waited out
        assert max(cut) < len(payload) // 2  # cut off at the request deadline, long before the request was whole
    finally:
        stop.set()
        _stop(server)


class _SlowInbox(PosInbox):
    def put(self, events, source) -> None:
        time.sleep(0.05)  # keeps every request slot busy during the burst
        super().put(events, source)


def test_a_burst_beyond_the_connection_limit_gets_503_with_retry_after_never_a_reset(tmp_path):
    url, server = _serve(tmp_path, _SlowInbox(100000, metrics(), 0.0, 300.0), max_connections=2)
    event = json.dumps([{"ts": time.time(), "type": "scan", "sku": "A", "note": "x" * 900}]).encode()
    answers: list[object] = []

    def post(_) -> None:
        try:
            code, _, headers = call(url + "/pos", event)
            answers.append((code, headers.get("Retry-After")))
        except OSError as e:
            answers.append(type(e).__name__)

    try:
        with ThreadPoolExecutor(24) as pool:
            list(pool.map(post, range(300)))
    finally:
        _stop(server)
    assert len(answers) == 300
    errors = [a for a in answers if not isinstance(a, tuple)]
    assert not errors, f"{len(errors)} requests got no answer: {set(errors)}"
    assert set(answers) <= {(202, None), (503, "1")} and (503, "1") in answers


def test_a_duplicate_content_length_is_refused(api):
    url, box, _, _, _ = api
    event = json.dumps({"ts": time.time(), "type": "scan", "sku": "A"}).encode()
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as s:
        s.sendall(
            b"POST /pos HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n"
            + f"Content-Length: {len(event)}\r\nContent-Length: 5\r\n\r\n".encode()
            + event
        )
        answer = s.recv(1000)
    assert answer.startswith(b"HTTP/1.0 400") and b"Content-Length" in answer and len(box) == 0


def test_a_huge_since_is_refused_in_plain_words(api):
    url, *_ = api
    code, body, _ = call(url + "/events?since=" + "9" * 5000)
    error = json.loads(body)["error"]
    assert code == 400 and "query parameter 'since'" in error and "4300" not in error and len(error) < 200


def test_get_routes_need_the_token_when_one_is_set_but_health(api, tmp_path):
    url, *_ = api
    for path in ("/events", "/metrics"):
        for token in (None, "wrong"):
            code, body, headers = call(url + path, token=token)
            assert code == 401 and "bearer token" in json.loads(body)["error"] and "WWW-Authenticate" in headers
        assert call(url + path)[0] == 200
    assert call(url + "/health", token=None)[0] == 200  # liveness checks hold no token
    open_url, server = _serve(tmp_path, reads_need_token=False)
    try:
        assert call(open_url + "/events", token=None)[0] == 200 and call(open_url + "/metrics", token=None)[0] == 200
        assert call(open_url + "/pos", b"{}", token=None)[0] == 401  # POSTs still need it
    finally:
        _stop(server)


def test_an_evidence_clip_is_served_in_byte_ranges_as_a_video_element_asks(tmp_path):
    evidence = tmp_path / "evidence"
    (evidence / "run").mkdir(parents=True)
    data = bytes(range(256)) * 4  # 1024 bytes
    (evidence / "run" / "track00008.mp4").write_bytes(data)
    url, server = _serve(tmp_path, reads_need_token=False)
    server.context = dataclasses.replace(server.context, evidence_root=evidence)
    clip = url + "/evidence/run/track00008.mp4"
    try:
        code, body, headers = call(clip)
        assert (code, body, headers["Accept-Ranges"]) == (200, data, "bytes")
        for asked, first, last in (("bytes=10-19", 10, 19), ("bytes=1000-", 1000, 1023), ("bytes=-24", 1000, 1023),
                                   ("bytes=1020-5000", 1020, 1023), ("bytes=0-0", 0, 0)):  # fmt: skip
            code, body, headers = call(clip, headers={"Range": asked})
            assert code == 206 and body == data[first : last + 1], asked
            assert headers["Content-Range"] == f"bytes {first}-{last}/1024" and headers["Content-Length"] == str(
                last - first + 1
            )
        for asked in ("bytes=1024-", "bytes=5000-6000", "bytes=-0"):
            code, body, headers = call(clip, headers={"Range": asked})
            assert (code, body, headers["Content-Range"]) == (416, b"", "bytes */1024"), asked
        for asked in ("bytes=0-1,5-9", "items=0-9", "bytes=9-3", "bytes=-", "bytes=" + "9" * 40 + "-"):
            code, body, _ = call(clip, headers={"Range": asked})  # not one valid range: the whole file
            assert (code, body) == (200, data), asked
    finally:
        _stop(server)


def test_evidence_files_are_served_with_the_token_and_nothing_outside_their_folder(tmp_path):
    evidence = tmp_path / "evidence"
    (evidence / "20261130T090000Z-ab12").mkdir(parents=True)
    crop = evidence / "20261130T090000Z-ab12" / "track00007_0.jpg"
    crop.write_bytes(b"\xff\xd8jpeg bytes\xff\xd9")
    (evidence / "20261130T090000Z-ab12" / "track00007.avi").write_bytes(b"RIFF clip")
    (evidence / "20261130T090000Z-ab12" / "track00008.mp4").write_bytes(b"ftyp clip")
    (tmp_path / "secret.jpg").write_bytes(b"not evidence")
    (evidence / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    (evidence / "notes.txt").write_text("not a served type")
    url, server = _serve(tmp_path, reads_need_token=False)
    server.context = dataclasses.replace(server.context, evidence_root=evidence)
    try:
        code, body, headers = call(url + "/evidence/20261130T090000Z-ab12/track00007_0.jpg")
        assert code == 200 and body == crop.read_bytes() and headers["Content-Type"] == "image/jpeg"
        assert call(url + "/evidence/20261130T090000Z-ab12%2Ftrack00007_0.jpg")[1] == crop.read_bytes()  # one param
        code, body, headers = call(url + "/evidence/20261130T090000Z-ab12/track00007.avi")
        assert code == 200 and body == b"RIFF clip" and headers["Content-Type"] == "video/x-msvideo"
        code, body, headers = call(url + "/evidence/20261130T090000Z-ab12/track00008.mp4")
        assert code == 200 and body == b"ftyp clip" and headers["Content-Type"] == "video/mp4"
        code, _, _ = call(url + "/evidence/20261130T090000Z-ab12/track00007_0.jpg", token=None)
        assert code == 401  # evidence always needs the token, even with open reads
        for path in (
            "/evidence/../secret.jpg",
            "/evidence/%2e%2e/secret.jpg",
            "/evidence/20261130T090000Z-ab12/..%2f..%2fsecret.jpg",
            "/evidence//etc/passwd",
            "/evidence/link.jpg",
            "/evidence/notes.txt",
            "/evidence/20261130T090000Z-ab12",
            "/evidence/nope.jpg",
            "/evidence/a%00.jpg",
        ):
            with socket.create_connection(("127.0.0.1", server.port)) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n\r\n".encode())
                answer = b"".join(iter(lambda s=s: s.recv(4096), b""))  # to the end: the server closes
            assert answer.startswith(b"HTTP/1.0 404") and b"no such evidence file" in answer, path
            assert b"not evidence" not in answer
    finally:
        _stop(server)
