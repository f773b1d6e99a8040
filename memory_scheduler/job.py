"""Job definitions, frozen snapshots handed to users, and the one function that calls a job.

Nothing here holds a lock or reads the clock.
"""

from __future__ import annotations

import enum
import inspect
import math
import os
import random
import sys
import threading
import types
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any, Callable, Dict, List, Literal, Optional, Tuple, TypedDict, Union, cast

from .cron import validate_cron_expression
from .errors import InvalidValue
from .timezones import resolve_zone

__all__ = [
    "Job",
    "JobInfo",
    "JobOptions",
    "RunContext",
    "RunResult",
    "RunStatus",
    "current_run",
]

OVERLAP_POLICIES = ("skip", "concurrent")
CLUSTER_MODES = ("once", "every")
ON_LOST = ("report", "rerun")
ON_UNAVAILABLE = ("skip", "run")

# __slots__ keep a hundred thousand jobs small; dataclasses make them from 3.10 on.
_SLOTS: Dict[str, bool] = {"slots": True} if sys.version_info >= (3, 10) else {}


class RunStatus(str, enum.Enum):
    """How a scheduled occurrence ended."""

    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"  # the previous run was still going (overlap policy)
    MISSED = "missed"  # handed over later than misfire_grace_secs
    TIMED_OUT = "timed_out"  # still running at timeout_secs; its token was set

    def __str__(self) -> str:
        return self.value


def _positive(name: str, value: object, *, allow_zero: bool = False,
              integer: bool = False) -> None:
    kind = "an int" if integer else "a number"
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok:
        raise InvalidValue(f"job option {name}={value!r}: expected {kind}")
    assert isinstance(value, (int, float))
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise InvalidValue(f"job option {name}={value!r}: must be "
                           f"{'>= 0' if allow_zero else '> 0'} and finite")
    if value > threading.TIMEOUT_MAX:
        raise InvalidValue(f"job option {name}={value!r}: must be <= {threading.TIMEOUT_MAX:g}")


@dataclass(frozen=True, **_SLOTS)
class Job:
    """A cron job: what to run, when, and under which policies.

    Args:
        name: unique within a service; also the seed of ``H`` fields.
        expression: cron expression in the library's dialect.
        func: called with no arguments in a worker thread; use :func:`current_run`
            inside it to see the scheduled time and the cancellation token.
        timezone: IANA name or tzinfo; ``None`` uses the service's default zone.
        overlap: ``"skip"`` (default) skips a run while the previous one is still
            going; ``"concurrent"`` lets runs overlap up to ``max_instances``.
        max_instances: with ``overlap="concurrent"``, the most runs at once
            (default unlimited).
        misfire_grace_secs: a run handed over later than this after its scheduled
            time is recorded as missed instead of run (default: no limit).
        coalesce: after missing several times, run once (default) instead of once
            per missed time.
        jitter_secs: start each run after a random delay in [0, jitter_secs].
        timeout_secs: set the run's cancellation token and record it as timed out
            once it has run this long.
        cluster: with a run store, ``"once"`` (the default there) runs each occurrence
            in one process of the deployment; ``"every"`` runs it in every process and
            never touches the store. Without a store every job runs locally.
        on_lost: the process running an occurrence died or froze past its lease:
            ``"report"`` (default) records it lost (at most once); ``"rerun"`` runs
            it again in another process with ``attempt`` 2 (at least once).
        on_unavailable: the store cannot be reached when an occurrence is due:
            ``"skip"`` (default) does not run it; ``"run"`` runs it unclaimed.

    Raises:
        InvalidCron, InvalidTimezone, InvalidValue (naming the option); ``TypeError``
        if ``func`` is not callable.
    """

    name: str
    expression: str
    func: Callable[[], object]
    timezone: Union[str, tzinfo, None] = None
    overlap: str = "skip"
    max_instances: Optional[int] = None
    misfire_grace_secs: Optional[float] = None
    coalesce: bool = True
    jitter_secs: float = 0.0
    timeout_secs: Optional[float] = None
    cluster: Optional[str] = None
    on_lost: str = "report"
    on_unavailable: str = "skip"

    def __post_init__(self) -> None:
        check_job(self.name, self.expression, self.func, self.timezone)
        policy_of(self)

    @property
    def instance_limit(self) -> float:
        """How many runs of this job may be active at once."""
        return policy_of(self).instance_limit


class JobOptions(TypedDict, total=False):
    """The keyword options of ``add_cron_job(...)`` and ``@svc.cron(...)``, for type
    checkers: ``**options: Unpack[JobOptions]`` makes ``misfire_grace=60`` or
    ``overlap="skp"`` a type error. At run time the options are checked by value."""

    overlap: Literal["skip", "concurrent"]
    max_instances: Optional[int]
    misfire_grace_secs: Optional[float]
    coalesce: bool
    jitter_secs: float
    timeout_secs: Optional[float]
    cluster: Literal["once", "every"]
    on_lost: Literal["report", "rerun"]
    on_unavailable: Literal["skip", "run"]
    replace_existing: bool


def check_job(name: object, expression: object, func: object, timezone: object) -> None:
    """Validate what every job has; raises as documented on :class:`Job`.

    A function that cannot be called without arguments raises InvalidValue naming it
    (where its signature can be read): otherwise every run would fail.
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidValue(f"job name {name!r}: expected a non-empty string")
    if not callable(func):
        raise TypeError(f"job {name!r}: func {func!r} is not callable")
    validate_cron_expression(expression)  # type: ignore[arg-type]  # it checks the type
    if timezone is not None:
        resolve_zone(timezone)
    # Plain functions and methods are read from their code object (a fraction of a
    # microsecond; registering 100,000 jobs stays fast); other callables through
    # inspect.signature. The callable's own parameters decide, not those of a
    # function it wraps (a decorator may supply them).
    code = getattr(func, "__code__", None)
    if code is not None and not code.co_argcount and not code.co_kwonlyargcount:
        return  # the common case, first: a function of no parameters
    owner, bound = (func.__func__, 1) if isinstance(func, types.MethodType) else (func, 0)
    required: List[str]
    if isinstance(owner, types.FunctionType) and not hasattr(owner, "__signature__"):
        code = owner.__code__
        positional = code.co_varnames[:code.co_argcount]
        keyword = code.co_varnames[code.co_argcount:code.co_argcount + code.co_kwonlyargcount]
        with_default = owner.__kwdefaults__ or {}
        required = [*positional[bound:len(positional) - len(owner.__defaults__ or ())],
                    *(k for k in keyword if k not in with_default)]
    else:
        try:
            signature = inspect.signature(func, follow_wrapped=False)
        except (TypeError, ValueError):  # builtins without a readable signature
            required = []
        else:
            required = [p.name for p in signature.parameters.values()
                        if p.default is p.empty
                        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if required:
        label = getattr(func, "__qualname__", None) or repr(func)
        raise InvalidValue(
            f"job {name!r}: func {label} needs arguments ({', '.join(required)}); a job "
            "is called with none: bind them with functools.partial or a lambda, or "
            "read the run's details with current_run()")


class Policy:
    """A job's options, validated; shared by every job with the same options (a big
    registry mostly has the defaults), so a job costs one reference for all six."""

    __slots__ = ("overlap", "max_instances", "misfire_grace_secs", "coalesce",
                 "jitter_secs", "timeout_secs", "cluster", "on_lost", "on_unavailable",
                 "instance_limit")

    def __init__(self, overlap: str, max_instances: Optional[int],
                 misfire_grace_secs: Optional[float], coalesce: bool, jitter_secs: float,
                 timeout_secs: Optional[float], cluster: Optional[str] = None,
                 on_lost: str = "report", on_unavailable: str = "skip") -> None:
        if overlap not in OVERLAP_POLICIES:
            raise InvalidValue(f"job option overlap={overlap!r}: expected one of "
                               f"{', '.join(map(repr, OVERLAP_POLICIES))}")
        if max_instances is not None:
            _positive("max_instances", max_instances, integer=True)
            if overlap == "skip" and max_instances != 1:
                raise InvalidValue(
                    f"job option max_instances={max_instances!r}: applies to "
                    "overlap='concurrent'; overlap='skip' always allows one run at a time"
                )
        if misfire_grace_secs is not None:
            _positive("misfire_grace_secs", misfire_grace_secs, allow_zero=True)
        if coalesce is not True and coalesce is not False:
            raise InvalidValue(f"job option coalesce={coalesce!r}: expected a bool")
        if jitter_secs != 0 or type(jitter_secs) not in (int, float):
            _positive("jitter_secs", jitter_secs, allow_zero=True)
        if timeout_secs is not None:
            _positive("timeout_secs", timeout_secs)
        for name, value, allowed in (("cluster", cluster, CLUSTER_MODES),
                                     ("on_lost", on_lost, ON_LOST),
                                     ("on_unavailable", on_unavailable, ON_UNAVAILABLE)):
            if value not in allowed and not (name == "cluster" and value is None):
                raise InvalidValue(f"job option {name}={value!r}: expected one of "
                                   f"{', '.join(map(repr, allowed))}")
        self.overlap = overlap
        self.max_instances = max_instances
        self.misfire_grace_secs = misfire_grace_secs
        self.coalesce = coalesce
        self.jitter_secs = jitter_secs
        self.timeout_secs = timeout_secs
        self.cluster = cluster  # None: "once" when the service has a store
        self.on_lost = on_lost
        self.on_unavailable = on_unavailable
        self.instance_limit: float = 1 if overlap == "skip" else (
            math.inf if max_instances is None else max_instances)


DEFAULT_POLICY = Policy("skip", None, None, True, 0.0, None)
_OPTIONS = ("overlap", "max_instances", "misfire_grace_secs", "coalesce", "jitter_secs",
            "timeout_secs", "cluster", "on_lost", "on_unavailable")
_POLICIES: Dict[Tuple[object, ...], Policy] = {}


def make_policy(overlap: str = "skip", max_instances: Optional[int] = None,
                misfire_grace_secs: Optional[float] = None, coalesce: bool = True,
                jitter_secs: float = 0.0, timeout_secs: Optional[float] = None,
                cluster: Optional[str] = None, on_lost: str = "report",
                on_unavailable: str = "skip") -> Policy:
    """The shared :class:`Policy` for these options; raises InvalidValue naming a bad one."""
    values = (overlap, max_instances, misfire_grace_secs, coalesce, jitter_secs, timeout_secs,
              cluster, on_lost, on_unavailable)
    # Types are part of the key: 1, 1.0 and True are equal, but JobInfo reports the
    # value a job was given.
    key = (*values, *map(type, values))
    try:
        policy = _POLICIES.get(key)
    except TypeError:  # an unhashable value: Policy() rejects it
        policy = None
    if policy is None:
        policy = Policy(*values)
        if len(_POLICIES) >= 4096:
            _POLICIES.clear()
        _POLICIES[key] = policy
    return policy


def pop_replace_existing(options: Dict[str, Any]) -> bool:
    """Check ``add_cron_job``'s keyword option names; remove and return
    ``replace_existing``. Raises InvalidValue naming an unknown option."""
    replace_existing = options.pop("replace_existing", False)
    if not isinstance(replace_existing, bool):
        raise InvalidValue(f"replace_existing={replace_existing!r}: expected a bool")
    for key in options:
        if key not in _OPTIONS:
            raise InvalidValue(f"unknown job option {key!r}; known options: "
                               f"{', '.join(_OPTIONS)}, replace_existing")
    return replace_existing


def cron_policy(name: object, expression: object, func: object, timezone: object,
                options: JobOptions) -> Tuple[Policy, bool]:
    """``add_cron_job``'s checks (those ``Job()`` makes, without building one: see
    bench/RESULTS.md, registration), by value too: a caller without a type checker may
    pass anything. Returns the policy and ``replace_existing``."""
    given = cast(Dict[str, Any], options)  # the same dict, seen as what it may hold
    replace_existing = pop_replace_existing(given)
    check_job(name, expression, func, timezone)
    return (make_policy(**given) if given else DEFAULT_POLICY), replace_existing


def policy_of(job: Job) -> Policy:
    return make_policy(job.overlap, job.max_instances, job.misfire_grace_secs, job.coalesce,
                       job.jitter_secs, job.timeout_secs, job.cluster, job.on_lost,
                       job.on_unavailable)


@dataclass(frozen=True, **_SLOTS)
class JobInfo:
    """A snapshot of one job, taken under the service's lock. Times are aware; the
    scheduled ones are in the job's zone."""

    id: uuid.UUID
    name: str
    expression: str
    timezone: str
    next_run_time: Optional[datetime]  # None while paused
    paused: bool
    running: int  # runs of this job active right now
    run_count: int  # runs that started
    failure_count: int  # runs that raised
    skip_count: int
    missed_count: int
    timeout_count: int
    last_scheduled_time: Optional[datetime]
    last_started: Optional[datetime]
    last_finished: Optional[datetime]
    last_duration: Optional[timedelta]
    last_status: Optional[RunStatus]
    last_error: Optional[str]  # "ExceptionType: message" of the last failure
    overlap: str
    max_instances: Optional[int]
    misfire_grace_secs: Optional[float]
    coalesce: bool
    jitter_secs: float
    timeout_secs: Optional[float]
    # The schedule has no further occurrence (or computing it failed): the job stays
    # registered but will not run again on its own.
    ended: bool = False
    # With a run store (see the README, "Several processes"):
    cluster: str = "every"  # "once": one process of the deployment runs each occurrence
    on_lost: str = "report"
    on_unavailable: str = "skip"
    claimed_elsewhere_count: int = 0  # occurrences another process claimed first
    lease_lost_count: int = 0  # runs here that lost their lease (cancel token set)
    lost_count: int = 0  # other processes' runs this process swept as lost
    rerun_count: int = 0  # lost runs this process took over and ran again


@dataclass(frozen=True, **_SLOTS)
class RunContext:
    """What a running job can know about its run (see :func:`current_run`).

    ``cancel_token`` is set when the service shuts down, when the run passes its
    ``timeout_secs`` or when it loses its run store lease; a long job should check it
    and return early. ``attempt`` is 1, or 2 for a run taken over after its first
    owner lost its lease (``on_lost="rerun"``); ``token`` is the claim's fencing token
    (None without a store), strictly greater than any claimed before it: a job can
    fence its side effects with it.
    """

    job_id: uuid.UUID
    job_name: str
    scheduled_time: datetime
    cancel_token: threading.Event = field(repr=False, compare=False)
    attempt: int = 1
    token: Optional[int] = None

    @property
    def cancelled(self) -> bool:
        return self.cancel_token.is_set()


@dataclass(frozen=True, **_SLOTS)
class RunResult:
    """One occurrence handled by ``run_pending()`` or a simulation."""

    job_id: uuid.UUID
    job_name: str
    scheduled_time: datetime
    status: RunStatus
    error: Optional[str] = None


_current: ContextVar[Optional[RunContext]] = ContextVar("memory_scheduler_run", default=None)


def current_run() -> RunContext:
    """The :class:`RunContext` of the job running in this thread.

    Raises:
        LookupError: called outside a job run.
    """
    ctx = _current.get()
    if ctx is None:
        raise LookupError("current_run() is only available inside a running job")
    return ctx


def call_job(func: Callable[[], object], ctx: RunContext) -> Optional[BaseException]:
    """Run user code with its context set; return what it raised, or None.

    Catches BaseException too: a job calling ``sys.exit()`` must not take a worker
    thread down with it. The caller decides whether to re-raise.
    """
    token = _current.set(ctx)
    try:
        func()
    except BaseException as exc:  # noqa: BLE001 - recorded and logged by the caller
        return exc
    finally:
        _current.reset(token)
    return None


# Job ids need to be unique, not secret: a generator seeded from os.urandom makes
# them twice as fast as uuid4()'s read of os.urandom per id. A forked child reseeds,
# or it would repeat its parent's ids.
_ids = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ids.seed)


def new_job_id() -> uuid.UUID:
    """A random (version 4) UUID."""
    return uuid.UUID(int=_ids.getrandbits(128), version=4)


def describe_error(exc: BaseException) -> str:
    """``"Type: message"``; never raises (``str(exc)`` is the user's code)."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - an exception whose __str__ fails
        text = "<str() failed>"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
