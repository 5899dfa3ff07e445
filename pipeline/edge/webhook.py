"""Alerts POSTed to a webhook as they are written, from the alert log (the outbox; delivery,
cursor, retries and dead letters are `outbox.OutboxSender`'s).

One alert per request, in order, as the JSON line of events.jsonl; the header `Idempotency-Key`
carries the alert's `id`. With `secret` set each request is signed the Standard Webhooks way
(`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`).

A 2xx is a delivery. Redirects are never followed; a 3xx and a 4xx other than 408 (timeout) and
429 (too many requests) are refusals for good, the rest (no answer, 5xx, 408, 429) are retried
for as long as it takes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from retail_reid.pipeline.edge.alert_log import AlertLog
from retail_reid.pipeline.edge.dead_letters import DeadLetters
from retail_reid.pipeline.edge.metrics import EdgeMetrics
from retail_reid.pipeline.edge.outbox import Failure, OutboxCounters, OutboxSender, Retry, dead_letters_path
from retail_reid.pipeline.edge.settings import EdgeError, WebhookConfig, signing_key

MAX_RESPONSE_BYTES = 65536  # what is read of a receiver's answer
RETRIED_4XX = (408, 429)  # a 4xx that may pass later: retried, never set aside
NAME = "webhook"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Turns every redirect into an HTTPError (a failed delivery) instead of a request elsewhere."""

    def redirect_request(self, req, fp, code, msg, headers, newurl) -> None:
        return None


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers: the HMAC-SHA256 of "id.timestamp.body" under the secret's key.
    The id is the alert's (the same on every attempt, so the receiver can drop repeats); the
    timestamp is the attempt's, so a receiver can refuse replays of old requests."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp), "webhook-signature": f"v1,{digest}"}


class WebhookClient:
    """One POST of one alert to the configured receiver (the sender's, and `reid edge dead-letters --resend`'s)."""

    def __init__(self, config: WebhookConfig):
        self.config = config
        # Environment proxies are ignored: the receiver is named in the config, and a proxy picked
        # up from the environment would silently reroute (or break) loopback deliveries.
        # Redirects are not followed: urllib would turn a 301/302/303 into a body-less GET to any
        # host, with the token and the key, and count that GET's 200 as the delivery.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())
        self._key = signing_key(config.secret) if config.secret else None

    def post(self, record: dict) -> Failure | None:
        """None if the receiver took the alert, else why not."""
        body = json.dumps(record).encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": record["id"],
            "User-Agent": "retail-reid-edge",
        }
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token}"
        if self._key is not None:
            headers.update(sign(self._key, record["id"], int(time.time()), body))
        request = urllib.request.Request(self.config.url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.config.timeout_s) as response:
                response.read(MAX_RESPONSE_BYTES)
                return None if 200 <= response.status < 300 else Failure(f"HTTP {response.status}")
        except urllib.error.HTTPError as e:
            if 300 <= e.code < 400:
                location = e.headers.get("Location", "?")
                return Failure(f"HTTP {e.code} {e.reason} to {location}: redirects are not followed", permanent=True)
            return Failure(f"HTTP {e.code} {e.reason}", permanent=400 <= e.code < 500 and e.code not in RETRIED_4XX)
        except urllib.error.URLError as e:
            return Failure(f"{self.config.url}: {e.reason}")
        except (OSError, ValueError, http.client.HTTPException) as e:  # timeouts, resets, malformed answers
            return Failure(f"{self.config.url}: {type(e).__name__}: {e}")


class WebhookSender(OutboxSender):
    """The webhook's delivery thread: STATE/webhook.cursor.json, STATE/webhook.dead-letters.jsonl."""

    def __init__(self, alerts: AlertLog, config: WebhookConfig, state: Path, metrics: EdgeMetrics):
        self.config = config
        self.client = WebhookClient(config)
        super().__init__(
            NAME,
            alerts,
            state,
            Retry.of(config, config.dead_letter_after),
            OutboxCounters(
                delivered=metrics.webhook_delivered,
                failures=metrics.webhook_failures,
                dead_lettered=metrics.webhook_dead_lettered,
            ),
        )

    @property
    def target(self) -> str:
        return self.config.url

    def deliver(self, record: dict) -> Failure | None:
        return self.client.post(record)

    def status(self) -> dict:
        return {"url": self.config.url, **super().status()}


def resend_dead_letters(config: WebhookConfig, state: Path, ids: set[str] | None) -> list[tuple[str, str | None]]:
    """Send the webhook's dead letters named by `ids` (None: all) again, in order; each one the
    receiver now takes leaves the list. Returns (id, None if delivered, else why not) per letter.
    Safe while the service runs: the service only appends to the list, under the same file lock."""
    if not config.url:
        raise EdgeError("edge.webhook.url: no webhook is configured; there is nothing to re-send to")
    client = WebhookClient(config)

    def send(record: dict) -> str | None:
        failure = client.post(record)
        return None if failure is None else failure.reason

    return DeadLetters(dead_letters_path(state, NAME)).resend(ids, send)
