"""`retail_reid.pipeline.edge.mqtt` against a real Mosquitto broker that each test starts on a free
loopback port (`mosquitto -c CONF`, Debian's `mosquitto` package; scripts/test.sh installs it):
alerts in order with the webhook's cursor semantics, the retained availability and its last will,
and POS events taken from a topic."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator

import pytest
from contract_fixtures import assert_valid
from edge_fixtures import alert, free_port, metrics, wait_until
from malformed_json import MALFORMED_POS_LINES
from mqtt_fixtures import Broker, Subscriber, mqtt, needs_mqtt

from retail_reid.pipeline.contract import SchemaName
from retail_reid.pipeline.edge.alert_log import AlertLog
from retail_reid.pipeline.edge.metrics import EdgeMetrics
from retail_reid.pipeline.edge.mqtt import MqttLink, MqttPublisher
from retail_reid.pipeline.edge.pos_intake import PosInbox
from retail_reid.pipeline.edge.settings import MqttConfig

pytestmark = needs_mqtt


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path, free_port()).start()
    yield b
    b.stop()


def _config(port: int, **kw) -> MqttConfig:
    return MqttConfig(host="127.0.0.1", port=port, backoff_min_s=0.05, backoff_max_s=0.2, reconnect_max_s=1, **kw)


def test_alerts_are_published_in_order_once_each_and_a_restart_resends_nothing(broker, tmp_path):
    log = AlertLog(tmp_path / "events.jsonl", "l", "l-x")
    m = metrics()
    watcher = Subscriber(broker.port, "reid/l/alerts", "reid/l/availability")
    link = MqttLink(_config(broker.port), "l", None, 100, m)
    publisher = MqttPublisher(log, link, tmp_path, m)
    link.start()
    publisher.start()
    try:
        for i in range(1, 4):
            log.append(alert(i), 1)
        assert wait_until(lambda: len(watcher.on("reid/l/alerts")) == 3 and publisher.pending() == 0)
        assert [json.loads(p)["id"] for p in watcher.on("reid/l/alerts")] == ["l-x-1", "l-x-2", "l-x-3"]
        assert watcher.on("reid/l/availability")[-1] == b"online"
        status = publisher.status()
        assert status["connected"] and status["delivered_seq"] == 3 and status["error"] is None
        assert_valid(SchemaName.HEALTH, status, "/properties/mqtt", what="health's mqtt part")
        assert m.mqtt_delivered.value() == 3
        publisher.stop(timeout=1.0)
        link.stop()
        assert wait_until(lambda: watcher.on("reid/l/availability")[-1:] == [b"offline"])  # a clean stop says so
        log.append(alert(4), 1)  # written while nothing publishes
        link = MqttLink(_config(broker.port), "l", None, 100, m)
        restarted = MqttPublisher(log, link, tmp_path, m)
        assert restarted.delivered_seq == 3
        link.start()
        restarted.start()
        assert wait_until(lambda: restarted.pending() == 0)
        restarted.stop(timeout=1.0)
        link.stop()
        assert [json.loads(p)["id"] for p in watcher.on("reid/l/alerts")] == [f"l-x-{i}" for i in range(1, 5)]
    finally:
        watcher.close()
        log.close()


def test_broker_down_then_up_delivers_everything_and_health_says_why_meanwhile(tmp_path):
    port = free_port()
    log = AlertLog(tmp_path / "events.jsonl", "l", "l-x")
    m = metrics()
    link = MqttLink(_config(port), "l", None, 100, m)
    publisher = MqttPublisher(log, link, tmp_path, m)
    link.start()
    publisher.start()
    broker = None
    try:
        log.append(alert(1), 1)
        log.append(alert(2), 1)
        assert wait_until(lambda: m.mqtt_failures.value() >= 2)
        status = publisher.status()
        assert not status["connected"] and status["pending"] == 2 and "127.0.0.1" in status["error"]
        assert_valid(SchemaName.HEALTH, status, "/properties/mqtt", what="health's mqtt part, broker down")
        broker = Broker(tmp_path, port).start()
        watcher = Subscriber(port, "reid/l/alerts")
        assert wait_until(lambda: publisher.pending() == 0)
        assert wait_until(lambda: [json.loads(p)["id"] for p in watcher.on("reid/l/alerts")] == ["l-x-1", "l-x-2"])
        watcher.close()
    finally:
        publisher.stop(timeout=1.0)
        link.stop()
        if broker is not None:
            broker.stop()
        log.close()


def test_the_last_will_says_offline_when_the_lane_vanishes(broker):
    watcher = Subscriber(broker.port, "reid/lane-9/availability")
    link = MqttLink(_config(broker.port, keepalive_s=5), "lane-9", None, 100, metrics())
    link.start()
    try:
        assert wait_until(lambda: watcher.on("reid/lane-9/availability")[-1:] == [b"online"])
        link.client.loop_stop()  # the process "dies": no DISCONNECT is sent ...
        link.client.socket().shutdown(socket.SHUT_RDWR)  # ... and its connection drops
        assert wait_until(lambda: watcher.on("reid/lane-9/availability")[-1:] == [b"offline"])
    finally:
        watcher.close()
    late = Subscriber(broker.port, "reid/lane-9/availability")  # retained: a newcomer learns it at once
    try:
        assert wait_until(lambda: late.on("reid/lane-9/availability") == [b"offline"])
    finally:
        late.close()


@contextlib.contextmanager
def pos_lane(broker, lane: str, **config) -> Iterator[tuple[PosInbox, EdgeMetrics, mqtt.Client]]:
    """A lane taking POS events from its topic, once subscribed: its inbox, its metrics, and a sender."""
    m = metrics()
    inbox = PosInbox(100, m, 0.0, 300.0)
    link = MqttLink(_config(broker.port, pos=True, **config), lane, inbox, 10, m)
    link.start()
    sender = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
    sender.connect("127.0.0.1", broker.port)
    sender.loop_start()
    try:
        assert wait_until(lambda: link.connected)
        time.sleep(0.3)  # the subscription is in place
        yield inbox, m, sender
        assert link.connected
    finally:
        sender.disconnect()
        sender.loop_stop()
        link.stop()


def test_pos_events_are_taken_from_the_topic_and_bad_ones_refused(broker):
    with pos_lane(broker, "lane-2", topic_prefix="store/7/lane-2") as (inbox, m, sender):
        now = time.time()
        good = [{"ts": now, "type": "txn_start", "txn": "T1"}, {"ts": now, "type": "scan", "sku": "Kiwi", "txn": "T1"}]
        sender.publish("store/7/lane-2/pos", json.dumps(good), qos=1).wait_for_publish(5)
        sender.publish("store/7/lane-2/pos", b'{"ts": 1, "type": "scan"}', qos=1).wait_for_publish(5)
        assert wait_until(lambda: len(inbox) == 2 and m.pos_rejected.value("mqtt") == 1)
        assert m.pos_received.value("mqtt") == 2 and inbox.last()["source"] == "mqtt"


def test_malformed_pos_messages_are_refused_and_the_client_goes_on(broker):
    """A 5000-digit integer used to raise a ValueError in paho's thread: the client died, POS
    messages were lost and alerts stopped while health said connected. Each malformed message is
    now counted and logged, and the next one is taken."""
    with pos_lane(broker, "lane-3") as (inbox, m, sender):
        for n, (data, _) in enumerate(MALFORMED_POS_LINES.values(), start=1):
            sender.publish("reid/lane-3/pos", data, qos=1).wait_for_publish(5)
            good = {"ts": time.time(), "type": "scan", "sku": f"After{n}"}
            sender.publish("reid/lane-3/pos", json.dumps(good), qos=1).wait_for_publish(5)
            assert wait_until(lambda n=n: len(inbox) == n and m.pos_rejected.value("mqtt") == n)
    assert [e.sku for e in inbox.take()] == [f"After{n}" for n in range(1, 6)]


def test_a_message_that_raises_an_unexpected_error_is_counted_and_the_client_goes_on(broker):
    """Whatever goes wrong with one message, paho's network thread must not die with it."""
    with pos_lane(broker, "lane-4") as (inbox, m, sender):

        def check(event, where):
            if event.sku == "Boom":
                raise RuntimeError("a bug in a check")

        inbox.check = check
        for sku in ("Boom", "After"):
            sender.publish("reid/lane-4/pos", json.dumps({"ts": time.time(), "type": "scan", "sku": sku}), qos=1)
        assert wait_until(lambda: len(inbox) == 1 and m.pos_rejected.value("mqtt") == 1)
    assert [e.sku for e in inbox.take()] == ["After"]
