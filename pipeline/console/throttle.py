"""Slowing down password guessing: after `limit` failed sign-ins for one operator name from one
address within `window_s`, further tries for it are refused until the oldest failure ages out.
Memory is bounded: at most `max_keys` (address, name) pairs are remembered, the oldest dropped."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque

FAILURES = 10
WINDOW_S = 300.0
MAX_KEYS = 10000


class SignInThrottle:
    def __init__(self, limit: int = FAILURES, window_s: float = WINDOW_S, max_keys: int = MAX_KEYS):
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many (address, name) pairs are remembered."""
        return len(self._failures)

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._failures.get(key, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def wait_s(self, address: str, name: str) -> float:
        """Seconds before this name may be tried again from this address (0: now)."""
        now = time.monotonic()
        with self._lock:
            times = self._recent((address, name), now)
            return times[0] + self.window_s - now if len(times) >= self.limit else 0.0

    def failed(self, address: str, name: str) -> None:
        now = time.monotonic()
        key = (address, name)
        with self._lock:
            times = self._recent(key, now)
            times.append(now)
            self._failures[key] = times
            self._failures.move_to_end(key)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def succeeded(self, address: str, name: str) -> None:
        with self._lock:
            self._failures.pop((address, name), None)
