"""Hypothesis: any text given as a cron expression gives a schedule or InvalidCron,
and the two entry points (validate_cron_expression, CronSchedule) agree.

Profiles (tests/conftest.py): "ci" by default; HYPOTHESIS_PROFILE=long for bug hunts.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from helpers import GUARD, VALID
from hypothesis import given
from hypothesis import strategies as st

from memory_scheduler import (
    CronSchedule,
    InvalidCron,
    validate_cron_expression,
)

UTC = timezone.utc



def check_expression(expr: str) -> None:
    """The contract: a schedule or InvalidCron, and both entry points agree."""
    try:
        validate_cron_expression(expr)
    except InvalidCron:
        valid = False
    else:
        valid = True
    try:
        schedule = CronSchedule(expr, hash_id="fuzz")
    except InvalidCron as exc:
        assert not valid or "'H' needs" in str(exc), f"validate accepted {expr!r}"
        return
    assert valid, f"validate rejected {expr!r} but CronSchedule accepted it"
    nxt = schedule.next_after(datetime(2026, 1, 1, tzinfo=UTC))
    assert nxt.tzinfo is not None


@GUARD
@given(st.text(max_size=80))
def test_arbitrary_text(expr: str) -> None:
    check_expression(expr)


@GUARD
@given(st.text(alphabet="0123456789*/-,#LlHhW?RMONmonJANjan@ \t", max_size=40))
def test_cron_alphabet_soup(expr: str) -> None:
    check_expression(expr)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    fields = draw(st.sampled_from(VALID)).split()
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["swap", "drop", "dup", "number", "step0", "space",
                                   "unicode", "huge", "long", "replace"]))
        i = draw(st.integers(0, max(0, len(fields) - 1)))
        if op == "swap" and len(fields) > 1:
            j = draw(st.integers(0, len(fields) - 1))
            fields[i], fields[j] = fields[j], fields[i]
        elif op == "drop" and fields:
            fields.pop(i)
        elif op == "dup" and fields:
            fields.insert(i, fields[i])
        elif op == "number" and fields:
            fields[i] = str(draw(st.integers(-5, 100)))
        elif op == "step0" and fields:
            fields[i] = fields[i] + "/0"
        elif op == "space" and fields:
            fields[i] = fields[i] + draw(st.sampled_from(["\u00a0", "\u2003", "\n", "\t",
                                                           "\x00", "  "]))
        elif op == "unicode" and fields:
            fields[i] = draw(st.sampled_from(["\u0663", "\uff11", "\u00b2", "\u216b"]))
        elif op == "huge" and fields:
            fields[i] = "9" * draw(st.integers(5, 5000))
        elif op == "long":
            # Capped: repeated "long" mutations would otherwise grow geometrically.
            fields = (fields * draw(st.integers(2, 400)))[:2000]
        elif op == "replace" and fields:
            fields[i] = draw(st.text(max_size=6))
    return " ".join(fields)[:20_000]


@GUARD
@given(mutated())
def test_mutated_valid_expressions(expr: str) -> None:
    check_expression(expr)


@pytest.mark.parametrize("value", [None, 1, 1.5, b"* * * * *", ["* * * * *"], object()])
def test_non_strings_are_type_errors(value: object) -> None:
    with pytest.raises(TypeError):
        validate_cron_expression(value)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CronSchedule(value)  # type: ignore[arg-type]
