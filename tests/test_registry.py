"""The registry's heap of buckets against a plain model: what is due, in what order,
and that stale references never pile up."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Dict, List, Optional, Tuple

from hypothesis import given
from hypothesis import strategies as st

from memory_scheduler.cron import CronSchedule
from memory_scheduler.job import DEFAULT_POLICY, new_job_id
from memory_scheduler.registry import Entry, Registry, TimerKind

UTC = timezone.utc
BASE = datetime(2026, 3, 1, tzinfo=UTC)
SCHEDULE = CronSchedule("* * * * * *")


def added(reg: Registry, name: str, when: Optional[datetime] = None,
          schedule: CronSchedule = SCHEDULE) -> Entry:
    """An entry added to ``reg`` and, given ``when``, scheduled then."""
    entry = Entry(new_job_id(), name, lambda: None, schedule, DEFAULT_POLICY)
    reg.add(entry)
    if when is not None:
        reg.schedule(entry, when)
    return entry


def at(second: int) -> datetime:
    return BASE + timedelta(seconds=second)


def live(reg: Registry) -> int:
    return reg.check_invariants()[0]


def stored_refs(reg: Registry) -> int:
    return reg.check_invariants()[1]


# Few entries and few instants, so that buckets are shared, entries come back to the
# instant they had, and timers tie with ticks.
OPS = st.lists(st.one_of(
    st.tuples(st.just("schedule"), st.integers(0, 5), st.integers(0, 6)),
    st.tuples(st.just("unschedule"), st.integers(0, 5), st.just(0)),
    st.tuples(st.just("remove"), st.integers(0, 5), st.just(0)),
    st.tuples(st.just("timer"), st.integers(0, 5), st.integers(0, 6)),
    st.tuples(st.just("pop"), st.just(0), st.integers(-1, 7)),
), max_size=80)


@given(ops=OPS)
def test_registry_agrees_with_a_model(ops: List[Tuple[str, int, int]]) -> None:
    reg = Registry()
    entries = [added(reg, f"e{i}") for i in range(6)]
    present = set(range(6))
    ticks: Dict[int, int] = {}  # entry index -> scheduled second
    timers: List[Tuple[int, int]] = []  # (second, tag)
    for op, i, t in ops:
        entry = entries[i]
        if op == "schedule" and i in present:
            reg.schedule(entry, at(t))
            ticks[i] = t
        elif op == "unschedule" and i in present:
            reg.unschedule(entry)
            ticks.pop(i, None)
        elif op == "remove" and i in present:
            reg.remove(entry)
            present.discard(i)
            ticks.pop(i, None)
        elif op == "timer":
            kind = TimerKind.TIMEOUT if i % 2 else TimerKind.DELAYED_START
            reg.push(at(t).timestamp(), kind, None, (t, i))
            timers.append((t, i))
        elif op == "pop":
            item = reg.pop_due(at(t).timestamp())
            due = [s for s in [*ticks.values(), *(s for s, _ in timers)] if s <= t]
            if not due:
                assert item is None
                continue
            assert item is not None
            assert item.when == at(min(due)).timestamp()
            if item.kind is TimerKind.OCCURRENCE:
                assert item.entry is not None
                popped = entries.index(item.entry)
                assert ticks.pop(popped) == min(due)
                assert item.entry.bucket is None and item.entry.next_run == at(min(due))
            else:
                timers.remove(item.payload)
        assert live(reg) == len(ticks)
        earliest = min(ticks.values(), default=None)
        assert reg.next_run() == (None if earliest is None else at(earliest))
        soonest = min([*ticks.values(), *(s for s, _ in timers)], default=None)
        assert reg.peek_time() == (None if soonest is None else at(soonest).timestamp())
        for k, entry in enumerate(entries):
            if k in present:
                assert (entry.bucket is not None) == (k in ticks)


def test_a_due_instant_returns_each_of_its_entries_once() -> None:
    reg = Registry()
    entries = [added(reg, f"e{i}", at(10)) for i in range(5)]
    # Back to the instant it already had: two references, one occurrence.
    reg.unschedule(entries[1])
    reg.schedule(entries[1], at(10))
    reg.schedule(entries[3], at(20))
    popped: List[Optional[Entry]] = []
    while (item := reg.pop_due(at(10).timestamp())) is not None:
        popped.append(item.entry)
    assert sorted(e.name for e in popped if e) == ["e0", "e1", "e2", "e4"]
    assert len(popped) == 4
    assert live(reg) == 1
    assert stored_refs(reg) == 1


def test_rescheduling_one_entry_over_and_over_keeps_references_bounded() -> None:
    reg = Registry()
    for i in range(10):
        added(reg, f"still{i}", at(100))
    busy = added(reg, "busy")
    for n in range(10_000):
        reg.schedule(busy, at(n % 3))  # pause/resume churn, partly to the same instant
        if n % 2:
            reg.unschedule(busy)
    assert live(reg) == 10
    assert stored_refs(reg) <= 2 * live(reg) + 65


def test_removing_most_entries_shrinks_the_buckets() -> None:
    reg = Registry()
    entries = [added(reg, f"e{i}", at(i % 50)) for i in range(10_000)]
    for entry in entries[:-10]:
        reg.remove(entry)
    assert live(reg) == 10
    assert stored_refs(reg) <= 2 * 10 + 65
    assert len(reg) == 10


def test_an_entry_moved_while_its_instant_is_being_drained_comes_at_its_new_time() -> None:
    reg = Registry()
    first, second = added(reg, "first", at(10)), added(reg, "second", at(10))
    item = reg.pop_due(at(10).timestamp())
    assert item is not None and item.entry is first
    reg.schedule(second, at(30))
    assert reg.pop_due(at(10).timestamp()) is None
    assert reg.next_run() == at(30)
    item = reg.pop_due(at(30).timestamp())
    assert item is not None and item.entry is second and item.when == at(30).timestamp()


def test_coming_schedules_are_the_distinct_schedules_of_the_earliest_instant() -> None:
    reg = Registry()
    other = CronSchedule("*/2 * * * * *")
    entries = [added(reg, f"e{i}", schedule=other if i == 1 else SCHEDULE)
               for i in range(4)]
    assert reg.coming_schedules() == []
    for entry in entries[:3]:
        reg.schedule(entry, at(10))
    reg.schedule(entries[3], at(5))
    assert reg.coming_schedules() == [(SCHEDULE, at(5))]
    reg.unschedule(entries[3])
    assert reg.coming_schedules() == [(SCHEDULE, at(10)), (other, at(10))]


def test_a_duplicate_left_in_a_drained_instant_is_not_due() -> None:
    # Found by the model test: the same entry twice in one bucket, popped once.
    reg = Registry()
    entry = added(reg, "twice", at(0))
    reg.schedule(entry, at(0))
    item = reg.pop_due(at(0).timestamp())
    assert item is not None and item.entry is entry
    assert (reg.peek_time(), reg.next_run()) == (None, None)
    assert reg.pop_due(at(0).timestamp()) is None
    assert live(reg) == 0
