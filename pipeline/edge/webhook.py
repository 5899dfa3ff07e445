"""Alerts POSTed to a webhook as they are written, from the alert log (the outbox).

One alert per request, in order, as the JSON line of events.jsonl; the header `Idempotency-Key`
carries the alert's `id`. A delivery counts once the receiver answers 2xx; the sequence number
delivered up to is then saved (STATE/webhook.cursor.json) before the next is sent, so an alert
is sent again only if the process dies between the receiver's answer and that save, or the
answer is lost on the way; the key lets the receiver drop such a repeat. Failures are retried
with exponential backoff and jitter, for as long as it takes: nothing is given up.
"""

from __future__ import annotations

import json
import logging
import random
import time
import urllib.error
import urllib.request
from pathlib import Path

from retail_reid.pipeline.edge.alert_log import AlertLog
from retail_reid.pipeline.edge.metrics import EdgeMetrics
from retail_reid.pipeline.edge.settings import EdgeError, WebhookConfig
from retail_reid.pipeline.edge.worker import Worker

from retail_reid.durable import replace_atomically

log = logging.getLogger("reid.edge.webhook")

MAX_RESPONSE_BYTES = 65536  # what is read of a receiver's answer


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Turns every redirect into an HTTPError (a failed delivery) instead of a request elsewhere."""

    def redirect_request(self, req, fp, code, msg, headers, newurl) -> None:
        return None


class WebhookSender(Worker):
    def __init__(self, alerts: AlertLog, config: WebhookConfig, cursor_path: Path, metrics: EdgeMetrics):
        super().__init__("webhook")
        self.alerts = alerts
        self.config = config
        self.cursor_path = cursor_path
        self.metrics = metrics
        # Environment proxies are ignored: the receiver is named in the config, and a proxy picked
        # up from the environment would silently reroute (or break) loopback deliveries.
        # Redirects are not followed: urllib would turn a 301/302/303 into a body-less GET to any
        # host, with the token and the key, and count that GET's 200 as the delivery.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())
        self._deadline = float("inf")
        self.delivered_seq = self._load_cursor()
        self.error: str | None = None
        self.failures_in_row = 0
        self.last_delivered_at: float | None = None

    def stop(self, timeout: float | None = None) -> bool:
        """Deliver what is pending for up to `timeout` seconds (the shutdown grace; None: all of
        it), then stop; the rest stays on disk."""
        if timeout is None:
            return super().stop(None)
        self._deadline = time.monotonic() + timeout
        return super().stop(timeout + self.config.timeout_s + 1.0)

    def pending(self) -> int:
        return max(0, self.alerts.last_seq - self.delivered_seq)

    def status(self) -> dict:
        return {
            "url": self.config.url,
            "delivered_seq": self.delivered_seq,
            "pending": self.pending(),
            "failures_in_row": self.failures_in_row,
            "error": self.error,
            "last_delivered_at": self.last_delivered_at,
        }

    def _load_cursor(self) -> int:
        try:
            seq = int(json.loads(self.cursor_path.read_text(encoding="utf-8"))["seq"])
        except FileNotFoundError:
            # Newly configured: alerts written before there was a webhook are not sent (GET /events has them).
            log.info("webhook %s: first start; delivering alerts after seq %d", self.config.url, self.alerts.last_seq)
            return self._save_cursor(self.alerts.last_seq)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise EdgeError(
                f"{self.cursor_path}: unreadable webhook cursor ({e}); fix or remove it (removing skips older alerts)"
            ) from None
        if seq > self.alerts.last_seq:
            log.warning(
                "%s: says seq %d was delivered but the alert log ends at %d (it was replaced); "
                "delivering from its start",
                self.cursor_path,
                seq,
                self.alerts.last_seq,
            )
            return self._save_cursor(0)
        return seq

    def _save_cursor(self, seq: int) -> int:
        data = json.dumps({"seq": seq, "url": self.config.url}) + "\n"
        replace_atomically(self.cursor_path, data.encode(), "edge-webhook-cursor")
        return seq

    def run(self) -> None:
        backoff = self.config.backoff_min_s
        while not (self.stopping and time.monotonic() >= self._deadline):
            try:
                batch = self.alerts.read_after(self.delivered_seq, 1)
            except OSError as e:  # the log unreadable for a moment: the alerts are still there, try again
                self.error = f"{self.alerts.path}: cannot read ({e.strerror or e})"
                self.wait(self.config.backoff_max_s if self.failures_in_row else self.config.backoff_min_s)
                self.failures_in_row += 1
                continue
            if not batch:
                if self.stopping:
                    return
                self.alerts.wait(self.delivered_seq, 0.5)
                continue
            record = batch[0]
            error = self._post(record)
            if error is None:
                try:
                    self.delivered_seq = self._save_cursor(record["seq"])
                except OSError as e:  # delivered, but not noted: it may be sent once more (same id)
                    self.delivered_seq = record["seq"]
                    log.error("%s: cannot save the delivery cursor (%s)", self.cursor_path, e.strerror or e)
                self.metrics.webhook_delivered.inc()
                self.error, self.failures_in_row, self.last_delivered_at = None, 0, round(time.time(), 3)
                backoff = self.config.backoff_min_s
                continue
            self.metrics.webhook_failures.inc()
            self.failures_in_row += 1
            if self.error is None or self.failures_in_row in (1, 10, 100) or self.failures_in_row % 1000 == 0:
                log.warning(
                    "webhook: alert %s not delivered (%s); %d attempts failed in a row, retrying",
                    record["id"],
                    error,
                    self.failures_in_row,
                )
            self.error = error
            wait = backoff * random.uniform(0.8, 1.2)
            if self.stopping:
                time.sleep(min(wait, max(0.0, self._deadline - time.monotonic())))
            else:
                self.wait(wait)
            backoff = min(backoff * 2, self.config.backoff_max_s)

    def _post(self, record: dict) -> str | None:
        """None if the receiver took the alert, else why not."""
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": record["id"],
            "User-Agent": "retail-reid-edge",
        }
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token}"
        request = urllib.request.Request(
            self.config.url, data=json.dumps(record).encode(), headers=headers, method="POST"
        )
        try:
            with self._opener.open(request, timeout=self.config.timeout_s) as response:
                response.read(MAX_RESPONSE_BYTES)
                return None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except urllib.error.HTTPError as e:
            if 300 <= e.code < 400:
                return f"HTTP {e.code} {e.reason} to {e.headers.get('Location', '?')}: redirects are not followed"
            return f"HTTP {e.code} {e.reason}"
        except urllib.error.URLError as e:
            return f"{self.config.url}: {e.reason}"
        except (OSError, ValueError) as e:  # timeouts, resets, malformed answers
            return f"{self.config.url}: {type(e).__name__}: {e}"
