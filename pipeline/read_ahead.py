"""Work done ahead on a thread of its own: a replay decodes and detects on one core while the lane
recognises and decides on the other (`retail_reid.pipeline.replay`)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable
from typing import TypeVar

T = TypeVar("T")

_END = object()  # the producer is done


def read_ahead(items: Iterable[T], depth: int, name: str = "read-ahead") -> Generator[T, None, None]:
    """`items`, produced by a thread of their own at most `depth` ahead of the reader. Nothing is
    dropped, the order is kept, and an exception of the producer is raised here after the items
    before it. Closing the iterator early stops the thread (after the item it is producing)."""
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    ready: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as e:  # handed to the reader, which raises it
            put(e)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]  # an item of `items`
    finally:
        stop.set()
        thread.join()
