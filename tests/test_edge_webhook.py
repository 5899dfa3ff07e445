"""`retail_reid.pipeline.edge.webhook`: delivery with a receiver down then up, restarts, and the
shutdown grace."""

from __future__ import annotations

import base64
import json
import os
import time

import pytest
from edge_fixtures import REPO, Receiver, alert, free_port, metrics, sample, wait_until

from retail_reid.cli import main
from retail_reid.pipeline.config import ConfigError
from retail_reid.pipeline.edge.alert_log import AlertLog
from retail_reid.pipeline.edge.dead_letters import DeadLetter, DeadLetters
from retail_reid.pipeline.edge.settings import EdgeError, WebhookConfig
from retail_reid.pipeline.edge.webhook import WebhookClient, WebhookSender, resend_dead_letters


def test_webhook_receiver_down_then_up_gets_every_alert_once_in_order_and_a_restart_resends_nothing(tmp_path):
    log = AlertLog(tmp_path / "events.jsonl", "l", "l-x")
    port = free_port()
    config = WebhookConfig(
        url=f"http://127.0.0.1:{port}/alerts", token="hook-token", timeout_s=2.0, backoff_min_s=0.05, backoff_max_s=0.2
    )
    m = metrics()
    sender = WebhookSender(log, config, tmp_path, m)
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
        sender.stop(timeout=1.0)
        assert receiver.ids() == [f"l-x-{i}" for i in range(1, 5)]
        assert [r["track_id"] for r in receiver.received] == [1, 2, 3, 4]
        assert all(
            h["Idempotency-Key"] == r["id"] and h["Authorization"] == "Bearer hook-token"
            for h, r in zip(receiver.headers, receiver.received, strict=True)
        )
        log.append(alert(5), 1)  # written while the sender is down
        restarted = WebhookSender(log, config, tmp_path, m)
        assert restarted.delivered_seq == 4
        restarted.start()
        assert wait_until(lambda: restarted.pending() == 0)
        restarted.stop(timeout=1.0)
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
    sender = WebhookSender(log, config, tmp_path, metrics())
    sender.start()
    log.append(alert(1), 1)
    sender.stop(timeout=0.3)
    assert not sender.alive  # it gave up waiting (its join is bounded), not the alert
    assert sender.pending() == 1 and json.loads((tmp_path / "webhook.cursor.json").read_text())["seq"] == 0
    log.close()


def test_a_redirect_is_a_delivery_failure_and_is_not_followed(tmp_path):
    """A 301/302/303/307/308 answer is never followed: the Location gets nothing (no token, no key
    leaked), the alert stays pending and health says why."""
    elsewhere = Receiver().start()
    log = AlertLog(tmp_path / "events.jsonl", "l", "l-x")
    m = metrics()

    class Redirector(Receiver):
        def start(self) -> Redirector:
            super().start()
            self._server.RequestHandlerClass.do_POST = lambda h: (
                h.send_response(302),
                h.send_header("Location", elsewhere.url),
                h.send_header("Content-Length", "0"),
                h.end_headers(),
            )
            return self

    redirector = Redirector().start()
    sender = WebhookSender(
        log,
        WebhookConfig(url=redirector.url, token="t", timeout_s=2.0, backoff_min_s=0.05, backoff_max_s=0.1),
        tmp_path,
        m,
    )
    sender.start()
    try:
        log.append(alert(1), 1)
        assert wait_until(lambda: m.webhook_failures.value() >= 2)
        assert elsewhere.received == [] and sender.pending() == 1 and m.webhook_delivered.value() == 0
        assert "HTTP 302" in sender.status()["error"] and "not followed" in sender.status()["error"]
    finally:
        sender.stop(timeout=0.5)
        redirector.stop()
        elsewhere.stop()
        log.close()


def test_a_receiver_answering_garbage_is_a_retried_failure_not_a_dead_thread(tmp_path):
    """A status line that is not HTTP, or a header line beyond http.client's limit, raises
    http.client's own exceptions (not OSError): each is a failed attempt, retried; the thread lives
    on and delivers once the receiver answers properly."""
    log = AlertLog(tmp_path / "events.jsonl", "l", "l-x")
    m = metrics()
    answers = iter([b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 70000 + b"\r\n\r\n"])

    class Garbled(Receiver):
        def start(self) -> Garbled:
            super().start()
            post = self._server.RequestHandlerClass.do_POST

            def answer(h):
                raw = next(answers, None)
                if raw is None:
                    return post(h)
                h.rfile.read(int(h.headers["Content-Length"]))
                h.wfile.write(raw)
                h.close_connection = True

            self._server.RequestHandlerClass.do_POST = answer
            return self

    receiver = Garbled().start()
    sender = WebhookSender(
        log, WebhookConfig(url=receiver.url, timeout_s=2.0, backoff_min_s=0.05, backoff_max_s=0.1), tmp_path, m
    )
    sender.start()
    try:
        log.append(alert(1), 1)
        assert wait_until(lambda: sender.pending() == 0 or not sender.alive)
        assert sender.alive and sender.failure is None
        assert receiver.ids() == ["l-x-1"] and m.webhook_failures.value() == 2
    finally:
        sender.stop(timeout=0.5)
        receiver.stop()
        log.close()


def test_an_alert_refused_for_good_goes_to_the_dead_letters_and_later_alerts_go_on(tmp_path):
    """A 4xx (not 408/429) is tried `dead_letter_after` times, then set aside; the alerts after it
    are delivered; health and metrics show it; re-sending it once the receiver takes it delivers it
    and empties the list. A 429 is retried, never set aside."""
    log = AlertLog(tmp_path / "events.jsonl", "l", "l-x")
    receiver = Receiver(refuse={"l-x-1"}).start()
    m = metrics()
    config = WebhookConfig(url=receiver.url, timeout_s=2.0, backoff_min_s=0.02, backoff_max_s=0.05, dead_letter_after=3)
    sender = WebhookSender(log, config, tmp_path, m)
    sender.start()
    try:
        for i in range(1, 4):
            log.append(alert(i), 1)
        assert wait_until(lambda: receiver.ids() == ["l-x-2", "l-x-3"] and sender.pending() == 0)
        assert receiver.refused == ["l-x-1"] * 3
        status = sender.status()
        assert status["dead_letters"] == 1 and status["error"] is None  # later alerts were delivered
        assert m.webhook_dead_lettered.value() == 1
        assert sample(m.render(), "reid_webhook_dead_letters_total") == 1
        (letter,) = sender.dead_letters.read()
        assert letter.id == "l-x-1" and letter.attempts == 3 and letter.record["track_id"] == 1
        with pytest.raises(EdgeError, match="no dead letter with id nope"):
            resend_dead_letters(config, tmp_path, {"nope"})
        ((resent, error),) = resend_dead_letters(config, tmp_path, None)  # the receiver still refuses it
        assert resent == "l-x-1" and "HTTP 422" in error and sender.status()["dead_letters"] == 1
        receiver.refuse.clear()
        assert resend_dead_letters(config, tmp_path, {"l-x-1"}) == [("l-x-1", None)]
        assert receiver.ids() == ["l-x-2", "l-x-3", "l-x-1"] and sender.status()["dead_letters"] == 0
    finally:
        sender.stop(timeout=0.5)
        receiver.stop()
        log.close()


def test_only_refusals_for_good_count_towards_the_dead_letters():
    receiver = Receiver(refuse={"a"}).start()
    try:
        client = WebhookClient(WebhookConfig(url=receiver.url, timeout_s=2.0))
        for status, permanent in ((400, True), (404, True), (422, True), (408, False), (429, False), (503, False)):
            receiver.refuse_status = status
            failure = client.post({"id": "a"})
            assert failure is not None and f"HTTP {status}" in failure.reason and failure.permanent is permanent
        assert client.post({"id": "b"}) is None
    finally:
        receiver.stop()
    nobody = WebhookClient(WebhookConfig(url=f"http://127.0.0.1:{free_port()}/a", timeout_s=2.0)).post({"id": "a"})
    assert nobody is not None and not nobody.permanent


def _doc_snippet(heading: str) -> str:
    """The first python code block under `heading` in docs/edge.md."""
    text = (REPO / "docs" / "edge.md").read_text()
    section = text[text.index(heading) :]
    return section[
        section.index("```python\n") + len("```python\n") : section.index("\n```\n", section.index("```python"))
    ]


def test_signed_webhooks_verify_with_the_documented_snippet(tmp_path):
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    namespace: dict = {}
    exec(compile(_doc_snippet("### Verifying a signature"), "docs/edge.md", "exec"), namespace)
    verify = namespace["verify"]
    receiver = Receiver(fail=1).start()  # the first attempt fails: the retry is signed anew, same id
    log = AlertLog(tmp_path / "events.jsonl", "l", "l-x")
    sender = WebhookSender(
        log, WebhookConfig(url=receiver.url, secret=secret, backoff_min_s=0.02, backoff_max_s=0.05), tmp_path, metrics()
    )
    sender.start()
    try:
        log.append(alert(1), 1)
        assert wait_until(lambda: sender.pending() == 0)
    finally:
        sender.stop(timeout=0.5)
        receiver.stop()
        log.close()
    (headers,), (body,) = receiver.headers, receiver.bodies
    lower = {k.lower(): v for k, v in headers.items()}
    assert lower["webhook-id"] == "l-x-1" and lower["webhook-signature"].startswith("v1,")
    assert abs(int(lower["webhook-timestamp"]) - time.time()) < 60
    assert verify(secret, headers, body)
    assert not verify(secret, headers, body.replace(b"Banana", b"Banano"))  # altered
    assert not verify("whsec_" + base64.b64encode(os.urandom(32)).decode(), headers, body)  # another secret
    assert not verify(secret, {**headers, "webhook-timestamp": str(int(time.time()) - 3600)}, body)  # replayed


@pytest.mark.parametrize("secret", ["s3cret", "whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode()])
def test_a_webhook_secret_that_is_not_whsec_base64_is_refused(secret):
    with pytest.raises(ConfigError, match=r"edge\.webhook\.secret: must be 'whsec_'"):
        WebhookConfig(url="http://x/", secret=secret)


def test_reid_edge_dead_letters_lists_and_resends(tmp_path, capsys):
    receiver = Receiver(refuse={"l-x-2"}).start()
    config = tmp_path / "lane.toml"
    config.write_text(
        'zone = [0, 0, 10, 10]\n[edge]\ngallery = "g"\nstate_dir = "state"\n[edge.camera]\nsource = "v.mp4"\n'
        f'[edge.webhook]\nurl = "{receiver.url}"\n'
    )
    letters = DeadLetters(tmp_path / "state" / "webhook.dead-letters.jsonl")
    (tmp_path / "state").mkdir()
    for i in (1, 2):
        record = {"seq": i, "id": f"l-x-{i}", "type": "non_scan"}
        letters.add(DeadLetter(record=record, error="HTTP 422 Unprocessable Entity", attempts=5, at=time.time()))
    try:
        assert main(["edge", "dead-letters", "--config", str(config)]) == 0
        out = capsys.readouterr().out
        assert "l-x-1  non_scan  set aside" in out and "after 5 attempts: HTTP 422" in out and "2 dead letters" in out
        assert main(["edge", "dead-letters", "--config", str(config), "--resend", "nope"]) == 2
        assert "no dead letter with id nope" in capsys.readouterr().err
        assert main(["edge", "dead-letters", "--config", str(config), "--all"]) == 1  # l-x-2 is refused again
        out = capsys.readouterr().out
        assert "l-x-1: delivered" in out and "l-x-2: refused again (HTTP 422" in out and "1 of 2 delivered" in out
        assert receiver.ids() == ["l-x-1"] and [x.id for x in letters.read()] == ["l-x-2"]
        receiver.refuse.clear()
        assert main(["edge", "dead-letters", "--config", str(config), "--resend", "l-x-2"]) == 0
        assert receiver.ids() == ["l-x-1", "l-x-2"] and letters.read() == []
    finally:
        receiver.stop()
