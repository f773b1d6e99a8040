from __future__ import annotations

import queue
import threading
from typing import Callable, TypeVar

from memory_scheduler.testing import library_threads

__all__ = ["get", "library_threads", "wait_until"]


def wait_until(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Poll ``predicate`` every 5 ms of real time, up to ``timeout`` seconds."""
    pause = threading.Event()
    for _ in range(int(timeout / 0.005)):
        if predicate():
            return True
        pause.wait(0.005)
    return predicate()


T = TypeVar("T")


def get(q: queue.Queue[T], timeout: float = 2.0) -> T:
    """``q.get(timeout=...)`` that also times out when time.monotonic is frozen.

    queue.Queue.get measures its timeout with time.monotonic, which time-machine 2.x
    (the last series for Python 3.9) freezes; this polls with Event.wait instead.
    """
    pause = threading.Event()
    for _ in range(int(timeout / 0.005) + 1):
        try:
            return q.get_nowait()
        except queue.Empty:
            pause.wait(0.005)
    raise queue.Empty
