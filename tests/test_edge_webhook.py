"""`retail_reid.pipeline.edge.webhook`: delivery with a receiver down then up, restarts, and the
shutdown grace."""

from __future__ import annotations

import json
import time

from edge_fixtures import Receiver, alert, free_port, metrics, wait_until
from retail_reid.pipeline.edge.alert_log import AlertLog
from retail_reid.pipeline.edge.settings import WebhookConfig
from retail_reid.pipeline.edge.webhook import WebhookSender


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
        sender.stop(timeout=1.0)
        assert receiver.ids() == [f"l-x-{i}" for i in range(1, 5)]
        assert [r["track_id"] for r in receiver.received] == [1, 2, 3, 4]
        assert all(
            h["Idempotency-Key"] == r["id"] and h["Authorization"] == "Bearer hook-token"
            for h, r in zip(receiver.headers, receiver.received, strict=True)
        )
        log.append(alert(5), 1)  # written while the sender is down
        restarted = WebhookSender(log, config, tmp_path / "cursor.json", m)
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
    sender = WebhookSender(log, config, tmp_path / "cursor.json", metrics())
    sender.start()
    log.append(alert(1), 1)
    started = time.monotonic()
    sender.stop(timeout=0.3)
    assert (
        not sender._thread.is_alive() and time.monotonic() - started < 10
    )  # bounded: it gives up waiting, not the alert
    assert sender.pending() == 1 and json.loads((tmp_path / "cursor.json").read_text())["seq"] == 0
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
        tmp_path / "cursor.json",
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
