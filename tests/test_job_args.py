"""A job function must be callable without arguments: checked when the job is added."""

from __future__ import annotations

import functools
from typing import Any, Callable

import pytest

from memory_scheduler import InvalidValue, Job, SchedulerService


def needs_one(x: int) -> None: ...


def needs_keyword(*, key: str) -> None: ...


def fine_with_defaults(x: int = 1, *args: Any, key: str = "k", **kwargs: Any) -> None: ...


def needs_two(a: int, b: int) -> None: ...


class Worker:
    def tick(self) -> None: ...

    def tick_with(self, item: int) -> None: ...

    @classmethod
    def klass(cls) -> None: ...

    @staticmethod
    def static(x: int) -> None: ...


class CallableNeeds:
    def __call__(self, x: int) -> None: ...


class CallableFine:
    def __call__(self) -> None: ...


class NeedsInit:
    def __init__(self, x: int) -> None: ...


def wrapping(func: Callable[..., None]) -> Callable[[], None]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        func(1)
    return wrapper


REJECTED = [
    (needs_one, "needs_one needs arguments (x)"),
    (needs_keyword, "needs_keyword needs arguments (key)"),
    (needs_two, "needs_two needs arguments (a, b)"),
    (lambda item: None, "<lambda> needs arguments (item)"),
    (Worker().tick_with, "Worker.tick_with needs arguments (item)"),
    (Worker.static, "Worker.static needs arguments (x)"),
    (CallableNeeds(), "CallableNeeds object at"),
    (NeedsInit, "NeedsInit needs arguments (x)"),
    (functools.partial(needs_two, 1), "needs arguments (b)"),
]

ACCEPTED = [
    fine_with_defaults, Worker().tick, Worker.klass, CallableFine(), lambda: None,
    functools.partial(needs_one, 1), wrapping(needs_one), print, dict,
]


@pytest.mark.parametrize(("func", "message"), REJECTED)
def test_functions_that_need_arguments_are_rejected_everywhere(func: Any, message: str) -> None:
    # Defect 12: they were accepted and then failed on every run.
    svc = SchedulerService()
    with pytest.raises(InvalidValue, match="needs arguments") as caught:
        Job("j", "* * * * *", func)
    assert message in str(caught.value) and str(caught.value).startswith("job 'j': func ")
    with pytest.raises(InvalidValue, match="needs arguments"):
        svc.add_cron_job("j", "* * * * *", func)
    with pytest.raises(InvalidValue, match="needs arguments"):
        svc.cron("* * * * *", name="j")(func)
    assert svc.jobs() == []


@pytest.mark.parametrize("func", ACCEPTED)
def test_functions_callable_without_arguments_are_accepted(func: Any) -> None:
    svc = SchedulerService()
    svc.add_cron_job("j", "* * * * *", func)
    svc.add_job(Job("k", "* * * * *", func))
    assert len(svc.jobs()) == 2
