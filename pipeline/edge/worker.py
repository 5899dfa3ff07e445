"""`Worker`: the start/stop shape that the service's threads share (camera, lane, webhook, POS
file, gallery watcher, HTTP), so the service starts, stops and (`supervisor.Supervisor`) restarts
each the same way."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod

log = logging.getLogger("reid.edge")


class Worker(ABC):
    """One named daemon thread running `run` until it returns. `stop` asks it to end (the
    `stopping` flag, which `wait` wakes on) and joins it; an exception that ends `run` is logged
    and kept in `failure` for the supervisor, health and the exit status; `restart` runs `run`
    again on a new thread (the object's state carries over: a sender resumes at its cursor)."""

    def __init__(self, name: str):
        self.name = name
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    @abstractmethod
    def run(self) -> None:
        """The thread's work; return once `stopping` is set (after any final work)."""

    def start(self) -> None:
        self._thread.start()

    def restart(self) -> None:
        """Run `run` again after it died (`failure` is cleared)."""
        self.failure = None
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the thread to end and wait up to `timeout` seconds (None: until it does). True if it ended."""
        self._stop.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking early when asked to stop; True if asked to stop."""
        return self._stop.wait(seconds)

    def _main(self) -> None:
        try:
            self.run()
        except BaseException as e:
            log.exception("%s: the thread stopped", self.name)
            self.failure = e
