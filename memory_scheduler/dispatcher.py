"""The dispatcher thread: observe the clock, collect due work, hand it over, sleep.

It never runs foreign code: runs go to the pool through the service's hand-over step,
and the events and log records it makes go to the notifier thread. It never dies: an
error in one job's handling ends that job (see ``Firing.collect_due``), and an error
anywhere else is reported and the loop goes on.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Callable, List, Optional

from .clock import utc_now
from .events import Listeners, Notifier, Outbox
from .firing import SLICE, SLICE_PAUSE, Firing
from .registry import Registry
from .runs import Run

__all__ = ["Dispatcher"]
# Wake a little early and finish with a short wait: after a long sleep the thread wakes
# up to ~0.7 ms late, after a short one ~0.1 ms (bench/RESULTS.md, latency).
_FINAL_WAIT = 0.002  # seconds
_AFTER_ERROR = 0.05  # seconds; keeps an unexpected, repeating error from spinning


class Dispatcher:
    """One per ``start()``; its thread ends once ``token`` is set."""

    def __init__(self, cond: threading.Condition, registry: Registry, firing: Firing,
                 listeners: Listeners, notifier: Notifier,
                 hand_over: Callable[[List[Run], Outbox], None], max_sleep: float,
                 token: threading.Event, name: str) -> None:
        self._cond = cond
        self._registry = registry
        self._firing = firing
        self._listeners = listeners
        self._notifier = notifier
        self._hand_over = hand_over
        self._max_sleep = max_sleep
        self._token = token
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def _loop(self) -> None:
        while not self._token.is_set():
            outbox = Outbox(self._listeners)
            try:
                self._step(outbox)
            except Exception:  # noqa: BLE001 - reported; the loop must go on
                outbox.log(logging.CRITICAL, "scheduler dispatcher error; continuing",
                           exc_info=True)
                self._token.wait(_AFTER_ERROR)
            finally:
                self._notifier.put(outbox)

    def _step(self, outbox: Outbox) -> None:
        """One pass: hand over what is due now, or sleep until something is.

        A big instant is collected a slice at a time, the lock released in between so
        that public calls and shutdown() get it within milliseconds, and handed over
        once: handing each slice over as it comes made the workers compete with the
        rest of the collection for the GIL (10,000 jobs: ~80 ms later, bench/RESULTS.md).
        """
        runs: List[Run] = []
        now: Optional[datetime] = None  # read once, under the lock, for the whole instant
        while True:
            with self._cond:
                if self._token.is_set():
                    break  # shutting down: the pool drops what was collected
                if now is None:
                    now = utc_now()
                    self._firing.observe(now, outbox)
                collected = self._firing.collect_due(now, outbox, sync=False, budget=SLICE,
                                                     runs=runs)
                more = collected.more
                if not more and not runs and not outbox:
                    wait, final = self._sleep_for(now)
                    if final:
                        self._prepare_next()
                    self._cond.wait(wait)
                    return
            if not more:
                break
            # Python's Lock is not fair: re-taking it at once would keep a waiting
            # caller (or shutdown) out for the whole instant. Step aside briefly.
            self._token.wait(SLICE_PAUSE)
        # Outside the lock; the clock is read again before the next wait.
        self._hand_over(runs, outbox)

    def _sleep_for(self, now: datetime) -> tuple[float, bool]:
        """Caller holds the lock: how long to wait, and whether this is the final wait
        before a due instant."""
        wait = self._max_sleep
        final = False
        when = self._registry.peek_time()
        if when is not None:
            remaining = max(0.0, when - now.timestamp())
            if remaining > _FINAL_WAIT:
                remaining -= _FINAL_WAIT
            else:
                final = True
            wait = min(wait, remaining)
        return min(wait, threading.TIMEOUT_MAX), final

    def _prepare_next(self) -> None:
        """Caller holds the lock, before the final wait: compute the next runs of the
        coming instant's schedules now, so that firing finds them memoised (the first
        computation after a sleep runs on cold caches, ~0.1 ms)."""
        for schedule, instant in self._registry.coming_schedules():
            try:
                schedule.next_utc(instant)
            except ValueError:  # no run after it: firing reports that
                pass
