"""SchedulerConfig: frozen, validated on construction, loadable from a mapping."""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union
from zoneinfo import ZoneInfo

from .errors import InvalidTimezone, InvalidValue
from .timezones import resolve_zone

if TYPE_CHECKING:
    from .stores.base import RunStore

__all__ = ["SchedulerConfig", "default_max_workers"]


def default_max_workers() -> int:
    # ThreadPoolExecutor's own default (Python 3.8+): I/O-bound work is the norm for
    # scheduled jobs, so more threads than cores, capped so that big machines do not
    # start hundreds of threads.
    return min(32, (os.cpu_count() or 1) + 4)


def _number(name: str, value: object, *, minimum: float, allow_equal: bool,
            integer: bool = False, maximum: float | None = None) -> None:
    kind = "an int" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise InvalidValue(f"config {name}={value!r}: expected {kind}, "
                           f"got {type(value).__name__}")
    assert isinstance(value, (int, float))
    if not math.isfinite(value):
        raise InvalidValue(f"config {name}={value!r}: must be finite")
    too_small = value < minimum if allow_equal else value <= minimum
    if too_small:
        relation = ">=" if allow_equal else ">"
        raise InvalidValue(f"config {name}={value!r}: must be {relation} {minimum:g}")
    if maximum is not None and value > maximum:
        raise InvalidValue(f"config {name}={value!r}: must be <= {maximum:g}")


@dataclass(frozen=True)
class SchedulerConfig:
    """Settings of a :class:`SchedulerService`. Every field is checked on construction.

    Attributes:
        default_timezone: IANA zone of jobs that name none.
        shutdown_timeout_secs: how long ``shutdown()`` waits for running jobs.
        max_workers: size of the thread pool that runs jobs.
        max_sleep_secs: the longest the dispatcher sleeps without re-reading the
            clock, so that clock jumps, suspend and frozen clocks are noticed.
        thread_name_prefix: names of the dispatcher and worker threads start with it.
        random_seed: seeds the service's jitter delays (None: unpredictable).
        store: a run store shared by the processes of a deployment, so that each
            occurrence runs once and a restart catches up: ``"memory://"``,
            ``"sqlite:///relative.db"``, ``"sqlite:////abs/path.db"`` or a
            :class:`~memory_scheduler.stores.RunStore`. None (default): no store.
        namespace: keys of different namespaces never meet (several apps, one store).
        lease_secs: how long a claim holds without a renew; a process that died or
            froze loses its runs after this long (sooner on one host: see README).
        heartbeat_secs: how often running claims are renewed (default lease / 3).
        sweep_secs: how often expired leases and dead owners are swept (default the
            smaller of lease / 2 and 1 s).
        claim_timeout_secs: how long a store call may wait for the store (SQLite's
            busy timeout) before the store counts as unavailable.
        retention_secs: how long recorded occurrences are kept (default: the store's,
            seven days); the newest of each job is always kept.

    Raises:
        InvalidValue: a field has the wrong type or is out of range (names the field).
        InvalidTimezone: ``default_timezone`` is not a valid zone.
    """

    default_timezone: str = "UTC"
    shutdown_timeout_secs: float = 30.0
    max_workers: int = field(default_factory=default_max_workers)
    max_sleep_secs: float = 1.0
    thread_name_prefix: str = "memory_scheduler"
    random_seed: Optional[int] = None
    store: Union[str, RunStore, None] = None
    namespace: str = "default"
    lease_secs: float = 30.0
    heartbeat_secs: Optional[float] = None
    sweep_secs: Optional[float] = None
    claim_timeout_secs: float = 1.0
    retention_secs: Optional[float] = None

    def __post_init__(self) -> None:
        if not isinstance(self.default_timezone, str):
            raise InvalidValue(
                f"config default_timezone={self.default_timezone!r}: expected a zone name, "
                f"got {type(self.default_timezone).__name__}"
            )
        try:
            resolve_zone(self.default_timezone)
        except InvalidTimezone as exc:
            raise InvalidTimezone(f"config default_timezone: {exc}") from None
        _number("shutdown_timeout_secs", self.shutdown_timeout_secs, minimum=0,
                allow_equal=True, maximum=threading.TIMEOUT_MAX)
        _number("max_workers", self.max_workers, minimum=0, allow_equal=False, integer=True,
                maximum=10_000)
        _number("max_sleep_secs", self.max_sleep_secs, minimum=0, allow_equal=False,
                maximum=3600)
        if self.random_seed is not None and (
            isinstance(self.random_seed, bool) or not isinstance(self.random_seed, int)
        ):
            raise InvalidValue(f"config random_seed={self.random_seed!r}: expected an int or None")
        if not isinstance(self.thread_name_prefix, str) or not self.thread_name_prefix:
            raise InvalidValue(
                f"config thread_name_prefix={self.thread_name_prefix!r}: "
                "expected a non-empty string"
            )

        self._check_store()

    def _check_store(self) -> None:
        from .stores.base import RunStore  # the stores import config's siblings only

        if self.store is not None and not isinstance(self.store, (str, RunStore)):
            raise InvalidValue(f"config store={self.store!r}: expected None, a store URL "
                               "such as 'sqlite:///scheduler.db', or a RunStore")
        if not isinstance(self.namespace, str) or not self.namespace:
            raise InvalidValue(f"config namespace={self.namespace!r}: expected a non-empty "
                               "string")
        _number("lease_secs", self.lease_secs, minimum=0, allow_equal=False, maximum=86400)
        _number("claim_timeout_secs", self.claim_timeout_secs, minimum=0, allow_equal=False,
                maximum=3600)
        for name in ("heartbeat_secs", "sweep_secs"):
            value = getattr(self, name)
            if value is not None:
                _number(name, value, minimum=0, allow_equal=False, maximum=self.lease_secs)
        if self.retention_secs is not None:
            _number("retention_secs", self.retention_secs, minimum=0, allow_equal=False,
                    maximum=threading.TIMEOUT_MAX)

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between renews of running claims."""
        return self.lease_secs / 3 if self.heartbeat_secs is None else self.heartbeat_secs

    @property
    def sweep_interval(self) -> float:
        """Seconds between sweeps of expired leases and dead owners."""
        return min(self.lease_secs / 2, 1.0) if self.sweep_secs is None else self.sweep_secs

    def shutdown_timeout(self, timeout: Optional[float]) -> float:
        """``timeout``, or ``shutdown_timeout_secs`` for None; raises InvalidValue if it
        is negative or not a number."""
        if timeout is None:
            return self.shutdown_timeout_secs
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (
            0 <= timeout <= threading.TIMEOUT_MAX
        ):
            raise InvalidValue(f"shutdown timeout {timeout!r}: expected a number >= 0")
        return timeout

    def parse_timezone(self) -> ZoneInfo:
        """The ZoneInfo of ``default_timezone``. Raises :class:`InvalidTimezone`."""
        zone = resolve_zone(self.default_timezone)
        assert isinstance(zone, ZoneInfo)  # a str always resolves to a ZoneInfo
        return zone

    @classmethod
    def from_mapping(cls, m: Mapping[str, object]) -> SchedulerConfig:
        """Build a config from e.g. a parsed TOML/JSON section.

        Raises:
            InvalidValue: ``m`` is not a mapping, a key is unknown (the message names
                it and lists the known ones), or a value has the wrong type or range.
            InvalidTimezone: ``default_timezone`` is not a valid zone.
        """
        if not isinstance(m, Mapping):
            raise InvalidValue(f"config must be a mapping, got {type(m).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in m.items():
            if key not in known:
                raise InvalidValue(
                    f"config has unknown key {key!r}; known keys: {', '.join(sorted(known))}"
                )
            kwargs[key] = value
        return cls(**kwargs)

