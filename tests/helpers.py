from __future__ import annotations

import threading
from typing import Callable


def library_threads() -> list[threading.Thread]:
    """Live threads started by memory_scheduler (all carry its name prefix)."""
    return [t for t in threading.enumerate() if t.name.startswith("memory_scheduler")]


def wait_until(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Poll ``predicate`` every 5 ms of real time, up to ``timeout`` seconds."""
    pause = threading.Event()
    for _ in range(int(timeout / 0.005)):
        if predicate():
            return True
        pause.wait(0.005)
    return predicate()
