"""Hypothesis: bad zone names, config mappings, job options and job keys only ever
raise the library's documented errors.

Profiles (tests/conftest.py): "ci" by default; HYPOTHESIS_PROFILE=long for bug hunts.
"""

from __future__ import annotations

import dataclasses
import string
import uuid
import zoneinfo
from datetime import timezone, tzinfo
from typing import Callable

import pytest
from helpers import GUARD, VALID
from hypothesis import given
from hypothesis import strategies as st

from memory_scheduler import (
    CronSchedule,
    InvalidTimezone,
    InvalidValue,
    Job,
    JobNotFound,
    SchedulerConfig,
    SchedulerError,
    SchedulerService,
)

UTC = timezone.utc

ZONES = sorted(zoneinfo.available_timezones())


@GUARD
@given(st.one_of(
    st.text(max_size=40),
    st.sampled_from(ZONES),
    st.builds(lambda a, b: a + b, st.sampled_from(["../", "/", "./", "..\\", "~/", "//"]),
              st.sampled_from([*ZONES, "etc/passwd", "", "UTC"])),
    st.builds(lambda z, n: z[:n] + "\x00" + z[n:], st.sampled_from(ZONES),
              st.integers(0, 10)),
    st.text(alphabet=string.ascii_letters + "/_-+", min_size=200, max_size=400),
))
def test_zone_names(name: str) -> None:
    try:
        schedule = CronSchedule("0 0 * * *", name)
    except InvalidTimezone as exc:
        assert repr(name)[:40] in str(exc) or len(name) > 40
        return
    assert isinstance(schedule.timezone, tzinfo)


CONFIG_KEYS = ["default_timezone", "shutdown_timeout_secs", "max_workers", "max_sleep_secs",
               "thread_name_prefix", "random_seed"]
ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                      st.lists(st.integers(), max_size=3), st.sampled_from(ZONES))


@GUARD
@given(st.dictionaries(st.one_of(st.sampled_from(CONFIG_KEYS), st.text(max_size=12)),
                       ANY_VALUE, max_size=5))
def test_config_from_arbitrary_mappings(mapping: dict[str, object]) -> None:
    try:
        config = SchedulerConfig.from_mapping(mapping)
    except SchedulerError as exc:
        assert any(repr(key) in str(exc) or str(key) in str(exc) for key in mapping), exc
        return
    assert isinstance(config, SchedulerConfig)


JOB_OPTIONS = ["overlap", "max_instances", "misfire_grace_secs", "coalesce", "jitter_secs",
               "timeout_secs", "replace_existing", "timezone"]


# Python itself rejects a keyword that repeats a positional parameter, before any
# library code runs; those keys are left out.
OPTION_KEYS = st.one_of(st.sampled_from(JOB_OPTIONS), st.text(max_size=8)).filter(
    lambda k: k not in ("name", "cron_expr", "job_fn"))


@GUARD
@given(options=st.dictionaries(OPTION_KEYS, ANY_VALUE, max_size=4),
       name=st.one_of(st.text(max_size=10), st.integers(), st.none()),
       expr=st.one_of(st.sampled_from(VALID), st.text(max_size=10)),
       key=st.one_of(st.text(max_size=10), st.uuids(), st.integers(), st.none()))
def test_job_options_and_keys_get_library_errors(options: dict[str, object], name: object,
                                                 expr: str, key: object) -> None:
    svc = SchedulerService()
    try:
        svc.add_cron_job(name, expr, lambda: None, **options)  # type: ignore[arg-type]
    except SchedulerError:
        pass
    for call in (svc.get_job, svc.pause_job, svc.resume_job, svc.remove_job):
        try:
            call(key)  # type: ignore[arg-type]
        except (JobNotFound, InvalidValue):
            pass
    svc.jobs()  # the registry is still usable


def _added(add: Callable[[SchedulerService], object]) -> object:
    """What adding a job leads to: the error, or the job's snapshot minus its id."""
    svc = SchedulerService()
    try:
        add(svc)
    except Exception as exc:  # noqa: BLE001 - compared below
        return (type(exc), str(exc))
    (info,) = svc.jobs()
    return dataclasses.replace(info, id=uuid.UUID(int=0), next_run_time=None)


JOB_FIELDS = [k for k in JOB_OPTIONS if k != "replace_existing"]


@GUARD
@given(options=st.dictionaries(st.sampled_from(JOB_FIELDS), ANY_VALUE, max_size=4),
       name=st.one_of(st.text(max_size=10), st.integers(), st.none()),
       expr=st.one_of(st.sampled_from(VALID), st.text(max_size=10), st.integers()))
def test_add_cron_job_checks_exactly_what_job_checks(options: dict[str, object],
                                                     name: object, expr: object) -> None:
    # add_cron_job validates without building a Job; it must agree with Job() anyway.
    def func() -> None:
        pass

    direct = _added(lambda svc: svc.add_cron_job(name, expr, func, **options))  # type: ignore[arg-type]
    via_job = _added(lambda svc: svc.add_job(Job(name, expr, func, **options)))  # type: ignore[arg-type]
    assert direct == via_job




def test_uuid_strings_are_looked_up_as_ids() -> None:
    svc = SchedulerService()
    job_id = svc.add_cron_job("x", "* * * * *", lambda: None)
    assert svc.get_job(str(job_id)).id == job_id
    with pytest.raises(JobNotFound):
        svc.get_job(str(uuid.uuid4()))
