"""MQTT (the optional `mqtt` extra, paho-mqtt): alerts published from the alert log with the
webhook's delivery semantics, the lane's availability, and POS events taken from a topic.

Topics, under `[edge.mqtt] topic_prefix` (default `reid/<lane>`):

- `<prefix>/alerts`: each alert line of events.jsonl, in order, QoS 1. `outbox.OutboxSender`
  delivers them exactly as it does the webhook: the cursor (STATE/mqtt.cursor.json) moves once the
  broker's PUBACK is in, so an alert is published again only if that acknowledgement is lost or
  the process dies before the cursor is saved; subscribers drop repeats by the alert's `id`.
- `<prefix>/availability`: `online` (retained) once connected; `offline` (retained) at a clean
  stop, and as the connection's last will, which the broker publishes if the lane vanishes.
- `<prefix>/pos` (with `pos = true`): POS events, a JSON object or a list as `POST /pos` takes,
  validated the same way; a refused payload is logged and counted, never taken in part.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from pathlib import Path

from retail_reid.compat import StrEnum
from retail_reid.pipeline.edge.alert_log import AlertLog
from retail_reid.pipeline.edge.metrics import EdgeMetrics
from retail_reid.pipeline.edge.outbox import Failure, OutboxCounters, OutboxSender, Retry
from retail_reid.pipeline.edge.pos_intake import MAX_BODY_BYTES, InboxFull, PosInbox, parse_pos_body
from retail_reid.pipeline.edge.settings import EdgeError, MqttConfig
from retail_reid.pipeline.pos import PosError

log = logging.getLogger("reid.edge.mqtt")

NAME = "mqtt"
QOS = 1  # at least once, confirmed by the broker's PUBACK


class Availability(StrEnum):
    """The retained payloads of `<prefix>/availability` (Home Assistant's convention)."""

    ONLINE = "online"
    OFFLINE = "offline"


def _paho():
    """paho-mqtt, imported only when MQTT is configured (the optional `mqtt` extra)."""
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise EdgeError("edge.mqtt: MQTT needs the paho-mqtt package: pip install 'retail-reid[mqtt]'") from None
    return mqtt


class MqttLink:
    """One connection to the broker, kept up by paho's network thread (reconnecting with backoff):
    the last will, the availability messages and the POS subscription live here."""

    def __init__(
        self,
        config: MqttConfig,
        lane: str,
        inbox: PosInbox | None,
        max_events: int,
        metrics: EdgeMetrics,
        max_bytes: int = MAX_BODY_BYTES,
    ):
        """`max_events` and `max_bytes` bound a POS message as `[edge.http]` bounds a `POST /pos` body."""
        mqtt = _paho()
        self.config = config
        self.prefix = config.topic_prefix or f"reid/{lane}"
        self.inbox, self.max_events, self.max_bytes, self.metrics = inbox, max_events, max_bytes, metrics
        self._connected = threading.Event()
        self.error: str | None = None
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=config.client_id or f"reid-edge-{lane}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.will_set(self.topic("availability"), Availability.OFFLINE.value, qos=QOS, retain=True)
        if config.username:
            client.username_pw_set(config.username, config.password or None)
        if config.tls:
            client.tls_set(ca_certs=config.ca_file or None, cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(1, max(1, int(config.reconnect_max_s)))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        # An error in a callback is logged, never raised into paho's network thread: that thread is
        # paho's, outside the service's supervisor, and its death would silently end the connection.
        client.suppress_exceptions = True
        client.enable_logger(log)
        self.client = client

    def topic(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        """Connect in the background; the service starts whether or not the broker is up."""
        self.client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive_s)
        self.client.loop_start()

    def stop(self) -> None:
        """Say `offline` (retained) and disconnect: a clean stop sends no last will."""
        if self.connected:
            info = self.client.publish(self.topic("availability"), Availability.OFFLINE.value, qos=QOS, retain=True)
            info.wait_for_publish(self.config.timeout_s)
        self.client.disconnect()
        self.client.loop_stop()

    def status(self) -> dict:
        return {
            "broker": f"{self.config.host}:{self.config.port}",
            "topic_prefix": self.prefix,
            "connected": self.connected,
        }

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.error = f"broker {self.config.host}:{self.config.port} refused the connection ({reason_code})"
            log.warning("%s", self.error)
            return
        self.error = None
        self._connected.set()
        client.publish(self.topic("availability"), Availability.ONLINE.value, qos=QOS, retain=True)
        if self.config.pos:
            client.subscribe(self.topic("pos"), qos=QOS)
        log.info("mqtt: connected to %s:%d as %s", self.config.host, self.config.port, self.prefix)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connected.is_set():
            log.warning("mqtt: connection to %s:%d lost (%s)", self.config.host, self.config.port, reason_code)
        self._connected.clear()
        self.error = f"not connected to broker {self.config.host}:{self.config.port} ({reason_code})"

    def _on_message(self, client, userdata, message) -> None:
        if self.inbox is None or message.topic != self.topic("pos"):
            return
        where = f"MQTT {message.topic}"
        try:
            events = parse_pos_body(message.payload, self.max_events, self.inbox.check, where, max_bytes=self.max_bytes)
            self.inbox.put(events, NAME)
        except PosError as e:
            self.metrics.pos_rejected.inc(NAME)
            log.warning("POS message refused: %s", e)
        except InboxFull as e:
            self.metrics.pos_rejected.inc(NAME)
            log.warning("POS message on %s dropped: %s", message.topic, e)
        except Exception:  # a bug, not the message: raised out of here it would end paho's thread
            self.metrics.pos_rejected.inc(NAME)
            log.exception("POS message on %s dropped: it could not be handled", message.topic)


class MqttPublisher(OutboxSender):
    """Publishes the alert log to `<prefix>/alerts`: STATE/mqtt.cursor.json, STATE/mqtt.dead-letters.jsonl."""

    def __init__(self, alerts: AlertLog, link: MqttLink, state: Path, metrics: EdgeMetrics):
        self.link = link
        config = link.config  # dead_letter_after 1 is unused: MQTT 3.1.1 has no refusal for good
        super().__init__(
            NAME,
            alerts,
            state,
            Retry.of(config, 1),
            OutboxCounters(
                delivered=metrics.mqtt_delivered,
                failures=metrics.mqtt_failures,
                dead_lettered=None,
            ),
        )

    @property
    def target(self) -> str:
        return f"mqtt://{self.link.config.host}:{self.link.config.port}/{self.link.topic('alerts')}"

    def deliver(self, record: dict) -> Failure | None:
        if not self.link.connected:
            return Failure(
                self.link.error or f"not connected to broker {self.link.config.host}:{self.link.config.port}"
            )
        info = self.link.client.publish(self.link.topic("alerts"), json.dumps(record), qos=QOS)
        try:
            info.wait_for_publish(self.link.config.timeout_s)
        except (RuntimeError, ValueError) as e:  # not queued: the connection dropped meanwhile
            return Failure(f"{self.target}: not published ({e})")
        if not info.is_published():
            return Failure(f"{self.target}: no acknowledgement within {self.link.config.timeout_s:g} s")
        return None

    def status(self) -> dict:
        return {**self.link.status(), **super().status(), "error": self.error or self.link.error}
