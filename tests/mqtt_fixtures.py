"""A Mosquitto broker for the tests (Debian's `mosquitto`, started on a free loopback port by the test
with `mosquitto -c CONF`, never as a service; scripts/system-packages.sh installs it) and a plain
paho subscriber that records what arrives."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading

import pytest
from edge_fixtures import wait_until

try:
    import paho.mqtt.client as mqtt
except ImportError:  # the mqtt extra is not installed: the tests that need it skip
    mqtt = None
MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
MQTT_READY = mqtt is not None and MOSQUITTO is not None
needs_mqtt = pytest.mark.skipif(
    not MQTT_READY,
    reason="needs paho-mqtt (the mqtt extra) and mosquitto (Debian package, scripts/system-packages.sh)",
)


class Broker:
    """A Mosquitto broker on 127.0.0.1:`port`, run in the foreground by the test (never as a service)."""

    def __init__(self, folder, port: int):
        self.port = port
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> Broker:
        with open(self.conf.with_suffix(".log"), "wb") as out:  # its own log, beside its config
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT)

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False

        assert wait_until(listening), "mosquitto did not start"
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


class Subscriber:
    """A plain paho client that records what arrives on some topics (retained messages included)."""

    def __init__(self, port: int, *topics: str):
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: [c.subscribe(t, qos=1) for t in topics]
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append((message.topic, message.payload, message.retain))

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
