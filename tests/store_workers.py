"""Bodies of the processes that tests/test_store_processes.py and bench/store_bench.py spawn.

Kept apart from the test module so a spawned child imports only this and the store,
not pytest. Every child reports over a Pipe; none reads the clock except via the store.
"""

from __future__ import annotations

import random
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import List, Sequence, Tuple

from memory_scheduler.stores import Outcome, SQLiteStore
from memory_scheduler.stores.checks import from_us

__all__ = ["contend", "hold"]


def contend(path: str, keys: Sequence[Tuple[str, int]], seed: int, lease: float,
            go: Event, conn: Connection) -> None:
    """Claim every key (job, epoch µs) one by one in a shuffled order once ``go`` is set;
    send back (owner, won keys, attempts, unavailable count, seconds spent claiming)."""
    import time

    store = SQLiteStore(path, timeout_secs=5.0)
    order = list(keys)
    random.Random(seed).shuffle(order)
    requests = [(job, from_us(at)) for job, at in order]
    conn.send("ready")
    if not go.wait(30):
        return
    won: List[Tuple[str, int]] = []
    unavailable = 0
    start = time.perf_counter()
    for (job, at), (_, when) in zip(order, requests):
        result = store.claim(job, when, lease)
        if result.outcome is Outcome.WON:
            won.append((job, at))
        elif result.outcome is Outcome.UNAVAILABLE:
            unavailable += 1
    spent = time.perf_counter() - start
    conn.send((store.owner, won, len(requests), unavailable, spent))
    store.close()


def hold(path: str, jobs: Sequence[str], at: int, lease: float, conn: Connection) -> None:
    """Record a fingerprint "v1" for each of ``jobs``, claim them at instant ``at``, send
    (owner, claims), then serve commands: "renew_finish" answers (renew results, finish
    results); "exit" returns."""
    store = SQLiteStore(path)
    store.fingerprints({job: "v1" for job in jobs})
    claims = [store.claim(job, from_us(at), lease).claim for job in jobs]
    conn.send((store.owner, claims))
    while conn.poll(60):
        command = conn.recv()
        if command == "renew_finish":
            good = [c for c in claims if c is not None]
            conn.send((store.renew(good, lease), [store.finish(c, "success") for c in good]))
        else:
            break
    store.close()
