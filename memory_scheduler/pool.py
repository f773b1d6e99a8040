"""RunPool: one ``start()``'s worker threads, and how runs reach them.

Runs handed over wait in ``ready``. Pool tasks called *drainers* take them one after
the other until ``ready`` is empty, so a burst of ten thousand runs costs a handful of
pool tasks, not ten thousand futures (measured in bench/RESULTS.md: a future per run,
each taking the lock twice, started the last of 10,000 runs ~940 ms after the instant;
drainers, ~240 ms). A drainer finishing a run records it and takes the next in one
lock round.

Drainers are started one at a time: a drainer that takes a run while more are waiting
starts the next (a woken worker needs the GIL; waking ten at once only adds
contention). Under the lock a drainer is either *starting* (submitted, not yet holding
a run) or busy in a job, so "a ready run and no drainer starting" is exactly "a run no
drainer will take": that is when another is started, up to ``max_workers``.

Each ``start()`` makes its own RunPool. A job stuck past a timed-out shutdown keeps
its drainer, counted in the old pool only: the next start's pool has all its workers,
and the stuck drainer, when its job returns, finds its own (closed, empty) queue.

Invariants (caller holds the lock): ``0 <= starting <= drainers <= max_workers``;
``ready`` is empty once ``closed``.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Deque, List, Optional

from .events import Outbox
from .job import call_job, describe_error
from .runs import Run, RunBook

__all__ = ["RunPool"]


class RunPool:
    def __init__(self, cond: threading.Condition, book: RunBook, max_workers: int,
                 thread_name_prefix: str) -> None:
        self._cond = cond
        self._book = book
        self._max_workers = max_workers
        self._executor = ThreadPoolExecutor(max_workers=max_workers,
                                            thread_name_prefix=thread_name_prefix)
        # Guarded by the service lock:
        self.ready: Deque[Run] = deque()
        self.drainers = 0  # pool tasks submitted and not ended
        self.starting = 0  # drainers that have not taken the lock yet
        self.closed = False
        self._drain_target = 0  # close(): set _drained once drainers <= this
        self._drained = threading.Event()
        # Per thread: set inside this pool's drainers, so that shutdown() called from a
        # job does not wait for its own thread.
        self._local = threading.local()

    # -- handing runs over (no lock held) ------------------------------------------

    def submit(self, runs: List[Run], outbox: Outbox) -> None:
        """Queue runs for the workers. On a closed pool they are dropped (counted as
        missed in ``outbox``)."""
        if not runs:
            return
        with self._cond:
            if self.closed:
                for run in runs:
                    self._book.drop(run, outbox, "the scheduler is shutting down")
                return
            self.ready.extend(runs)
            spawn = self._want_drainer()
        if spawn:
            self._spawn()

    # -- shutdown ------------------------------------------------------------------

    def close(self, outbox: Outbox) -> None:
        """Caller holds the lock: accept nothing more and drop the runs still waiting."""
        self.closed = True
        while self.ready:
            self._book.drop(self.ready.popleft(), outbox, "the scheduler is shutting down")
        # Called from a job (or a listener) of one of this pool's drainers: do not wait
        # for that drainer, if it is still counted.
        self._drain_target = 1 if getattr(self._local, "counted", False) else 0
        if self.drainers <= self._drain_target:
            self._drained.set()

    def wait(self, timeout: float) -> bool:
        """No lock held: wait for the drainers (but the caller's own) to end; then let
        the worker threads go. False if a job was still running at the timeout."""
        finished = self._drained.wait(timeout)
        if finished:
            # Every other task has returned, so the workers are just exiting; a job
            # (or listener) that shuts down its own service cannot join its own thread.
            self._executor.shutdown(wait=not getattr(self._local, "worker", False))
        else:
            self._executor.shutdown(wait=False)
        return finished

    # -- drainers ------------------------------------------------------------------

    def _want_drainer(self) -> bool:
        """Caller holds the lock: count one more drainer if a ready run would otherwise
        wait and the pool has room; the caller then calls _spawn (without the lock)."""
        if (self.closed or self.starting or not self.ready
                or self.drainers >= self._max_workers):
            return False
        self.drainers += 1
        self.starting += 1
        return True

    def _spawn(self) -> None:
        try:
            self._executor.submit(self._drain)
        except RuntimeError:  # the pool was shut down meanwhile: this drainer never runs
            with self._cond:
                self.starting -= 1
                self._drainer_ends()

    def _drainer_ends(self) -> None:
        """Caller holds the lock."""
        self.drainers -= 1
        if self.closed and self.drainers <= self._drain_target:
            self._drained.set()

    def _next(self, first: bool) -> Optional[Run]:
        """Caller holds the lock: the next ready run that may start (others are
        released), starting a helper drainer if more wait; None ends this drainer."""
        if first:
            self.starting -= 1
        while self.ready:
            run = self.ready.popleft()
            if self._book.may_start(run):
                return run
            # Paused or removed since it was handed over: counted, not reported (a
            # worker has no outbox; pause_job and remove_job reported the change).
            self._book.drop(run, None, "its job was paused or removed")
        self._drainer_ends()
        self._local.counted = False
        return None

    def _drain(self) -> None:
        """A pool task: run ready runs (and their catch-up runs) until none is left.

        An error outside the job itself (a logging filter that raises, a zone that
        fails) must not lose the books: the run in hand is released and the drainer
        counted out, whatever happens."""
        book = self._book
        local = self._local
        local.worker = local.counted = True
        run: Optional[Run] = None
        try:
            with self._cond:
                run = self._next(first=True)
                if run is not None:
                    cancel = threading.Event()
                    book.start(run, cancel)
                    ctx = book.context(run, cancel)
                    spawn = self._want_drainer()
            while run is not None:
                if spawn:
                    self._spawn()
                book.announce_start(run, ctx)
                exc = call_job(run.entry.func, ctx)
                error = None if exc is None else describe_error(exc)  # user code: no lock
                # Recording this run and starting the next share one lock round. The
                # next run's cancel token and context are made under the lock too: made
                # just before taking it, the Event halved a 10-worker burst's rate
                # (bench/RESULTS.md).
                with self._cond:
                    status, duration, following = book.finish(run, error,
                                                              go_on=not self.closed)
                    done = run
                    run = following if following is not None else self._next(first=False)
                    if run is not None:
                        cancel = threading.Event()
                        book.start(run, cancel)
                        ctx = book.context(run, cancel)
                        spawn = self._want_drainer()
                book.announce_finish(done, exc, status, duration)
        finally:
            if run is not None or local.counted:  # left by an exception
                with self._cond:
                    if run is not None:
                        book.release(run)
                    if local.counted:
                        local.counted = False
                        self._drainer_ends()
