"""Time zone names and SchedulerConfig validation."""

from __future__ import annotations

from datetime import timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from memory_scheduler import (
    CronSchedule,
    InvalidTimezone,
    InvalidValue,
    SchedulerConfig,
    SchedulerError,
    SchedulerService,
)


@pytest.mark.parametrize("name", ["America/New_York", "UTC", "Europe/London", "Asia/Kathmandu",
                                  "Etc/GMT+5"])
def test_valid_zone_names(name: str) -> None:
    assert SchedulerConfig(default_timezone=name).parse_timezone() == ZoneInfo(name)
    assert CronSchedule("* * * * *", name).zone_name == name


@pytest.mark.parametrize(("name", "reason"), [
    ("Mars/Olympus_Mons", "not a known IANA time zone"),
    ("", "empty"),
    ("   ", "empty"),
    ("../etc/passwd", "path-like"),
    ("/UTC", "path-like"),
    ("Europe/../UTC", "path-like"),
    ("Europe\\London", "path-like"),
    ("UTC\x00", "NUL"),
    ("x" * 300, "longer than"),
    ("Europe/Lond\u00f6n", "characters"),
    (" UTC", "path-like"),
])
def test_invalid_zone_names(name: str, reason: str) -> None:
    with pytest.raises(InvalidTimezone) as info:
        CronSchedule("* * * * *", name)
    assert reason in str(info.value)
    assert repr(name) in str(info.value)
    with pytest.raises(InvalidTimezone):
        SchedulerConfig(default_timezone=name)


def test_zone_may_be_a_tzinfo() -> None:
    assert CronSchedule("* * * * *", ZoneInfo("Asia/Tokyo")).zone_name == "Asia/Tokyo"
    assert CronSchedule("* * * * *", timezone.utc).zone_name == "UTC"
    fixed = CronSchedule("0 0 * * *", timezone(timedelta(hours=-3)))
    assert fixed.zone_name == "UTC-03:00"


def test_zone_of_a_wrong_type() -> None:
    with pytest.raises(InvalidTimezone, match="expected an IANA name or a tzinfo"):
        CronSchedule("* * * * *", 5)  # type: ignore[arg-type]


def test_pytz_style_zones_are_refused() -> None:
    class FakePytz(timezone.__base__):  # type: ignore[misc,name-defined]
        def localize(self) -> None: ...
        def utcoffset(self, dt: object) -> timedelta:
            return timedelta(0)

    with pytest.raises(InvalidTimezone, match="pytz"):
        CronSchedule("* * * * *", FakePytz())


def test_config_defaults() -> None:
    cfg = SchedulerConfig()
    assert cfg.default_timezone == "UTC"
    assert cfg.shutdown_timeout_secs == 30.0
    assert cfg.max_workers >= 5
    assert cfg.max_sleep_secs == 1.0
    with pytest.raises(AttributeError):
        cfg.max_workers = 3  # type: ignore[misc]


def test_config_from_mapping() -> None:
    cfg = SchedulerConfig.from_mapping({"default_timezone": "Europe/Paris", "max_workers": 3,
                                        "shutdown_timeout_secs": 2})
    assert (cfg.default_timezone, cfg.max_workers, cfg.shutdown_timeout_secs) == (
        "Europe/Paris", 3, 2)


@pytest.mark.parametrize(("mapping", "key", "message"), [
    ({"timezon": "UTC"}, "timezon", "unknown key"),
    ({"max_workerz": 3}, "max_workerz", "unknown key"),
    ({"max_workers": 0}, "max_workers", "must be > 0"),
    ({"max_workers": "4"}, "max_workers", "expected an int"),
    ({"max_workers": 2.5}, "max_workers", "expected an int"),
    ({"max_workers": True}, "max_workers", "expected an int"),
    ({"shutdown_timeout_secs": -1}, "shutdown_timeout_secs", ">= 0"),
    ({"shutdown_timeout_secs": float("nan")}, "shutdown_timeout_secs", "finite"),
    ({"shutdown_timeout_secs": "30"}, "shutdown_timeout_secs", "expected a number"),
    ({"max_sleep_secs": 0}, "max_sleep_secs", "> 0"),
    ({"default_timezone": 3}, "default_timezone", "expected a zone name"),
    ({"default_timezone": "Nowhere/City"}, "default_timezone", "not a known"),
    ({"random_seed": "x"}, "random_seed", "expected an int"),
    ({"thread_name_prefix": ""}, "thread_name_prefix", "non-empty"),
])
def test_config_from_mapping_names_the_bad_key(mapping: dict[str, object], key: str,
                                               message: str) -> None:
    with pytest.raises(SchedulerError) as info:
        SchedulerConfig.from_mapping(mapping)
    assert key in str(info.value)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_config_from_mapping_rejects_a_non_mapping() -> None:
    with pytest.raises(InvalidValue, match="mapping"):
        SchedulerConfig.from_mapping([("max_workers", 2)])  # type: ignore[arg-type]


def test_service_rejects_a_bad_default_zone() -> None:
    # A frozen dataclass can be bypassed with object.__setattr__; the service
    # re-checks the zone it is given.
    cfg = SchedulerConfig()
    object.__setattr__(cfg, "default_timezone", "Nowhere/City")
    with pytest.raises(InvalidTimezone, match="Nowhere/City"):
        SchedulerService(cfg)
