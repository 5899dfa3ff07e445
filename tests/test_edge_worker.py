"""`retail_reid.pipeline.edge.worker`: the start/stop shape of the service's threads."""

from __future__ import annotations

import threading

import pytest

from retail_reid.pipeline.edge.worker import Worker


class Ticker(Worker):
    """Counts ticks until asked to stop, then does its final work."""

    def __init__(self, fail_at: int | None = None):
        super().__init__("ticker")
        self.ticks = 0
        self.fail_at = fail_at
        self.finished = False
        self.names: list[str] = []

    def run(self) -> None:
        self.names.append(threading.current_thread().name)
        while not self.wait(0.01):
            self.ticks += 1
            if self.ticks == self.fail_at:
                raise RuntimeError("sensor on fire")
        self.finished = True


def test_a_worker_runs_in_its_named_thread_until_stopped_and_finishes_its_work():
    w = Ticker()
    w.start()
    assert w.alive and not w.stopping
    assert w.stop(timeout=30.0)
    assert not w.alive and w.stopping and w.finished and w.failure is None
    assert w.names == ["ticker"]


def test_an_exception_that_ends_the_thread_is_kept_for_health(caplog):
    w = Ticker(fail_at=3)
    w.start()
    w._thread.join(30.0)
    assert not w.alive and isinstance(w.failure, RuntimeError) and not w.finished
    assert "ticker: the thread stopped" in caplog.text
    assert w.stop(timeout=1.0)


def test_run_is_required():
    with pytest.raises(TypeError):
        Worker("nothing")  # type: ignore[abstract]
