"""`OutboxSender`: delivers the alert log (the outbox) to one receiver, in order, one alert at a
time, with a cursor on disk; the webhook and the MQTT publisher are its two kinds.

A delivery counts once the receiver confirms it (a 2xx; the broker's PUBACK); the sequence number
delivered up to is then saved (STATE/<name>.cursor.json) before the next is sent, so an alert is
sent again only if the process dies between the confirmation and that save, or the confirmation
is lost on the way; the alert's `id` (the idempotency key) lets the receiver drop such a repeat.
Failures are retried with exponential backoff and jitter. A failure the receiver says is for good
(`Failure.permanent`: a 3xx, a 4xx other than 408 and 429) is tried `dead_letter_after` times and
the alert then goes to the dead letters (STATE/<name>.dead-letters.jsonl) so the later ones go on;
`reid edge dead-letters` re-sends them. Nothing else is given up.
"""

from __future__ import annotations

import json
import logging
import random
import time
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path

from retail_reid.durable import replace_atomically
from retail_reid.pipeline.edge.alert_log import AlertLog
from retail_reid.pipeline.edge.dead_letters import DeadLetter, DeadLetters
from retail_reid.pipeline.edge.metrics import LaneCounter
from retail_reid.pipeline.edge.settings import EdgeError, MqttConfig, WebhookConfig
from retail_reid.pipeline.edge.worker import Worker


def dead_letters_path(state: Path, sender: str) -> Path:
    """Where a sender ("webhook", "mqtt") sets aside what its receiver refused for good."""
    return state / f"{sender}.dead-letters.jsonl"


@dataclass(frozen=True)
class Failure:
    """Why a delivery failed, and whether trying the same alert again can help."""

    reason: str
    permanent: bool = False


@dataclass(frozen=True, kw_only=True)
class OutboxCounters:
    """The sender's counters: delivered, failed attempts, alerts set aside as dead letters (None:
    a sender whose failures are never for good)."""

    delivered: LaneCounter
    failures: LaneCounter
    dead_lettered: LaneCounter | None


@dataclass(frozen=True, kw_only=True)
class Retry:
    """How a sender waits between attempts and when it gives an alert up."""

    backoff_min_s: float
    backoff_max_s: float
    dead_letter_after: int  # attempts refused for good before the alert is set aside
    attempt_timeout_s: float  # one attempt's longest wait (the shutdown waits this much more)

    @classmethod
    def of(cls, config: WebhookConfig | MqttConfig, dead_letter_after: int) -> Retry:
        """A sender's settings: its backoff and timeout keys are named alike."""
        return cls(
            backoff_min_s=config.backoff_min_s,
            backoff_max_s=config.backoff_max_s,
            dead_letter_after=dead_letter_after,
            attempt_timeout_s=config.timeout_s,
        )


class OutboxSender(Worker):
    """The delivery loop; a subclass says where to (`target`) and how (`deliver`)."""

    def __init__(
        self,
        name: str,
        alerts: AlertLog,
        state: Path,
        retry: Retry,
        counters: OutboxCounters,
    ):
        """`state`: the folder of STATE/<name>.cursor.json and STATE/<name>.dead-letters.jsonl."""
        super().__init__(name)
        self.log = logging.getLogger(f"reid.edge.{name}")
        self.alerts = alerts
        self.cursor_path = state / f"{name}.cursor.json"
        self.dead_letters = DeadLetters(dead_letters_path(state, name))
        self.retry = retry
        self.counters = counters
        self._deadline = float("inf")
        self.delivered_seq = self._load_cursor()
        self.error: str | None = None
        self.failures_in_row = 0
        self.last_delivered_at: float | None = None

    @property
    @abstractmethod
    def target(self) -> str:
        """Where alerts go (a URL, a broker and topic): in logs and the cursor file."""

    @abstractmethod
    def deliver(self, record: dict) -> Failure | None:
        """Send one alert; None once the receiver has confirmed it."""

    def stop(self, timeout: float | None = None) -> bool:
        """Deliver what is pending for up to `timeout` seconds (the shutdown grace; None: all of
        it), then stop; the rest stays on disk."""
        if timeout is None:
            return super().stop(None)
        self._deadline = time.monotonic() + timeout
        return super().stop(timeout + self.retry.attempt_timeout_s + 1.0)

    def pending(self) -> int:
        return max(0, self.alerts.last_seq - self.delivered_seq)

    def status(self) -> dict:
        return {
            "delivered_seq": self.delivered_seq,
            "pending": self.pending(),
            "failures_in_row": self.failures_in_row,
            "error": self.error,
            "last_delivered_at": self.last_delivered_at,
            "dead_letters": self.dead_letters.count(),
        }

    def _load_cursor(self) -> int:
        try:
            seq = int(json.loads(self.cursor_path.read_text(encoding="utf-8"))["seq"])
        except FileNotFoundError:
            # Newly configured: alerts written before there was a receiver are not sent (GET /events has them).
            self.log.info("%s: first start; delivering alerts after seq %d", self.target, self.alerts.last_seq)
            return self._save_cursor(self.alerts.last_seq)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise EdgeError(
                f"{self.cursor_path}: unreadable {self.name} cursor ({e}); "
                "fix or remove it (removing skips older alerts)"
            ) from None
        if seq > self.alerts.last_seq:
            self.log.warning(
                "%s: says seq %d was delivered but the alert log ends at %d (it was replaced); "
                "delivering from its start",
                self.cursor_path,
                seq,
                self.alerts.last_seq,
            )
            return self._save_cursor(0)
        return seq

    def _save_cursor(self, seq: int) -> int:
        data = json.dumps({"seq": seq, "target": self.target}) + "\n"
        replace_atomically(self.cursor_path, data.encode(), f"edge-{self.name}-cursor")
        return seq

    def _advance(self, seq: int) -> None:
        try:
            self.delivered_seq = self._save_cursor(seq)
        except OSError as e:  # done, but not noted: it may be sent once more (same id)
            self.delivered_seq = seq
            self.log.error("%s: cannot save the delivery cursor (%s)", self.cursor_path, e.strerror or e)

    def run(self) -> None:
        backoff = self.retry.backoff_min_s
        refused = 0  # attempts of the current alert refused for good
        while not (self.stopping and time.monotonic() >= self._deadline):
            try:
                batch = self.alerts.read_after(self.delivered_seq, 1)
            except OSError as e:  # the log unreadable for a moment: the alerts are still there, try again
                self.error = f"{self.alerts.path}: cannot read ({e.strerror or e})"
                self.wait(self.retry.backoff_max_s if self.failures_in_row else self.retry.backoff_min_s)
                self.failures_in_row += 1
                continue
            if not batch:
                if self.stopping:
                    return
                self.alerts.wait(self.delivered_seq, 0.5)
                continue
            record = batch[0]
            failure = self.deliver(record)
            if failure is None:
                self._advance(record["seq"])
                self.counters.delivered.inc()
                self.error, self.failures_in_row, self.last_delivered_at = None, 0, round(time.time(), 3)
                backoff, refused = self.retry.backoff_min_s, 0
                continue
            self.counters.failures.inc()
            self.failures_in_row += 1
            refused = refused + 1 if failure.permanent else 0
            if refused >= self.retry.dead_letter_after:
                if self._set_aside(record, failure.reason, refused):
                    backoff, refused = self.retry.backoff_min_s, 0
                    continue
            elif self.error is None or self.failures_in_row in (1, 10, 100) or self.failures_in_row % 1000 == 0:
                self.log.warning(
                    "%s: alert %s not delivered (%s); %d attempts failed in a row, retrying",
                    self.target,
                    record["id"],
                    failure.reason,
                    self.failures_in_row,
                )
            self.error = failure.reason
            wait = backoff * random.uniform(0.8, 1.2)
            if self.stopping:
                time.sleep(min(wait, max(0.0, self._deadline - time.monotonic())))
            else:
                self.wait(wait)
            backoff = min(backoff * 2, self.retry.backoff_max_s)

    def _set_aside(self, record: dict, reason: str, attempts: int) -> bool:
        """Move an alert the receiver refuses for good to the dead letters, and go on; False if it
        cannot be written there (it is then retried, never skipped unrecorded)."""
        try:
            self.dead_letters.add(DeadLetter(record=record, error=reason, attempts=attempts, at=round(time.time(), 3)))
        except OSError as e:
            self.log.error("%s: cannot write the dead letters (%s)", self.dead_letters.path, e.strerror or e)
            return False
        self._advance(record["seq"])
        if self.counters.dead_lettered is not None:
            self.counters.dead_lettered.inc()
        self.error = f"alert {record['id']} refused for good ({reason}); set aside in {self.dead_letters.path.name}"
        self.log.error(
            "%s: alert %s refused %d times (%s): set aside in %s; later alerts go on "
            "(re-send it with `reid edge dead-letters --resend %s`)",
            self.target,
            record["id"],
            attempts,
            reason,
            self.dead_letters.path,
            record["id"],
        )
        return True
