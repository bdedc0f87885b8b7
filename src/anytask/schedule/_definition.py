"""Schedule definitions: plain, validated data built when ``@tm.schedule`` is written."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .._errors import ConfigurationError, ManagerStateError
from .._models import TaskOptions, TaskStatus
from .._registry import task_name
from ._triggers import CronTrigger, IntervalTrigger, Trigger

if TYPE_CHECKING:
    from .._manager import TaskManager

__all__ = ["MisfirePolicy", "OverlapPolicy", "Schedule", "ScheduleInfo", "define_schedule"]

F = TypeVar("F", bound=Callable[..., Any])

#: Suffix of the store row that holds a schedule's pause flag (see ``_runner``).
CONTROL_SUFFIX = "#control"
_ALIASES = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
_MIN_EVERY = 0.001
_MAX_CATCH_UP = 10_000
#: the longest duration any option takes (100 years): beyond it, fire times would
#: overflow the datetime range
_MAX_SECONDS = 100 * 366 * 86400.0


class MisfirePolicy(enum.StrEnum):
    """What to do with fire times that passed while no instance could fire them (more
    than ``misfire_grace`` seconds late)."""

    SKIP = "skip"  # drop them; the next on-time fire runs
    RUN_ONCE = "run_once"  # run the latest one, once
    CATCH_UP = "catch_up"  # run the latest ``max_catch_up`` of them, oldest first


class OverlapPolicy(enum.StrEnum):
    """What to do when a fire is due while an earlier run of the schedule is still
    pending or running."""

    SKIP = "skip"  # record the fire as a cancelled task (error_type "Skipped")
    ALLOW = "allow"  # run it anyway, concurrently


def _seconds(option: str, value: Any, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(
            f"{option} must be a number of seconds or a timedelta, got {value!r}"
        )
    # an int is compared exactly (math.isfinite would raise OverflowError on one too
    # large for a float)
    if (value < 0) if isinstance(value, int) else (not math.isfinite(value) or value < 0):
        raise ConfigurationError(f"{option} must be a finite number >= 0, got {value!r}")
    if value > _MAX_SECONDS:
        raise ConfigurationError(
            f"{option} must be at most 100 years ({_MAX_SECONDS:.0f} s), got {value!r}"
        )
    return float(value)


def _zone(value: Any) -> ZoneInfo:
    if isinstance(value, ZoneInfo):
        return value
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"timezone must be an IANA zone name, got {value!r}")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigurationError(
            f"unknown timezone {value!r}: use an IANA name such as 'Europe/London'"
        ) from None


def _cron(expr: Any, zone: ZoneInfo, start_at: datetime | None) -> CronTrigger:
    if not isinstance(expr, str) or not expr.strip():
        raise ConfigurationError(f"cron must be a non-empty str, got {expr!r}")
    expr = " ".join(expr.split())
    fields = expr.split(" ")
    if len(fields) == 1 and expr.startswith("@"):
        if expr.lower() not in _ALIASES:
            raise ConfigurationError(
                f"invalid cron expression {expr!r}: aliases are {', '.join(sorted(_ALIASES))}"
            )
    elif len(fields) != 5:
        raise ConfigurationError(
            f"invalid cron expression {expr!r}: expected 5 fields (minute hour day-of-month "
            f"month day-of-week), got {len(fields)}"
        )
    try:
        trigger = CronTrigger(expr, zone, start_at)
    except Exception as exc:  # croniter raises several types for bad input
        raise ConfigurationError(f"invalid cron expression {expr!r}: {exc}") from None
    if trigger.next_after(datetime(2000, 1, 1, tzinfo=zone)) is None:
        raise ConfigurationError(f"cron expression {expr!r} never fires: no date matches it")
    return trigger


@dataclass(frozen=True)
class Schedule:
    """One interval or cron schedule of a task. Built by ``@tm.schedule``; validated here,
    so a bad option fails where the decorator is written."""

    id: str
    task_name: str
    every: float | None = None  # seconds
    cron: str | None = None
    timezone: str | None = None  # cron only; "UTC" when not given
    start_at: datetime | None = None
    jitter: float = 0.0  # seconds: each run starts up to this long after its fire time
    run_on_start: bool = False
    misfire: MisfirePolicy = MisfirePolicy.RUN_ONCE
    misfire_grace: float = 1.0
    misfire_window: float | None = None
    max_catch_up: int = 100
    overlap: OverlapPolicy = OverlapPolicy.SKIP
    trigger: Trigger = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.id, str) or not self.id.strip():
            raise ConfigurationError(f"schedule id must be a non-empty str, got {self.id!r}")
        if self.id.endswith(CONTROL_SUFFIX):
            raise ConfigurationError(f"schedule id must not end with {CONTROL_SUFFIX!r}")
        if self.every is not None and self.cron is not None:
            raise ConfigurationError("pass every= or cron=, not both")
        if self.every is None and self.cron is None:
            raise ConfigurationError(
                "a schedule needs every= (seconds or a timedelta) or cron= (an expression)"
            )
        start = self.start_at
        if start is not None and (not isinstance(start, datetime) or start.tzinfo is None):
            raise ConfigurationError(f"start_at must be a timezone-aware datetime, got {start!r}")
        trigger: Trigger
        if self.every is not None:
            every = _seconds("every", self.every)
            assert every is not None
            if every < _MIN_EVERY:
                raise ConfigurationError(
                    f"every must be > 0 (at least {_MIN_EVERY} s), got {self.every!r}"
                )
            if self.timezone is not None:
                raise ConfigurationError(
                    "timezone applies to cron schedules; an interval counts elapsed time "
                    "(use start_at= to set its phase)"
                )
            set_(self, "every", every)
            trigger = IntervalTrigger(round(every * 1_000_000), self.start_at)
        else:
            zone = _zone("UTC" if self.timezone is None else self.timezone)
            set_(self, "timezone", zone.key)
            trigger = _cron(self.cron, zone, self.start_at)
            set_(self, "cron", trigger.expr)
        set_(self, "trigger", trigger)
        set_(self, "jitter", _seconds("jitter", self.jitter))
        if not isinstance(self.run_on_start, bool):
            raise ConfigurationError(f"run_on_start must be a bool, got {self.run_on_start!r}")
        try:
            set_(self, "misfire", MisfirePolicy(self.misfire))
        except ValueError:
            raise ConfigurationError(
                f"misfire must be one of {[p.value for p in MisfirePolicy]}, got {self.misfire!r}"
            ) from None
        try:
            set_(self, "overlap", OverlapPolicy(self.overlap))
        except ValueError:
            raise ConfigurationError(
                f"overlap must be one of {[p.value for p in OverlapPolicy]}, got {self.overlap!r}"
            ) from None
        set_(self, "misfire_grace", _seconds("misfire_grace", self.misfire_grace))
        window = _seconds("misfire_window", self.misfire_window, allow_none=True)
        if window is not None and window <= 0:
            raise ConfigurationError(f"misfire_window must be > 0, got {self.misfire_window!r}")
        set_(self, "misfire_window", window)
        n = self.max_catch_up
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= _MAX_CATCH_UP:
            raise ConfigurationError(
                f"max_catch_up must be an int between 1 and {_MAX_CATCH_UP}, got {n!r}"
            )
        if self.misfire is MisfirePolicy.CATCH_UP and self.overlap is OverlapPolicy.SKIP:
            raise ConfigurationError(
                "misfire='catch_up' runs several missed fires at once, which overlap='skip' "
                "would skip: pass overlap='allow' with it"
            )

    @property
    def control_key(self) -> str:
        return self.id + CONTROL_SUFFIX

    def describe(self) -> str:
        if self.every is not None:
            return f"every {self.every:g}s"
        return f"cron {self.cron!r} in {self.timezone}"

    def next_fire(self, after: datetime) -> datetime | None:
        """The first fire time strictly after ``after`` (UTC), or None."""
        return self.trigger.next_after(after)


@dataclass(frozen=True)
class ScheduleInfo:
    """A schedule as listed by ``tm.schedules()``."""

    schedule: Schedule
    paused: bool
    last_fire_at: datetime | None  # fire time of the newest run (None: never fired)
    last_task_id: str | None
    last_status: TaskStatus | None  # that run's status (cancelled + "Skipped": skipped)
    next_fire_at: datetime | None  # None while paused

    @property
    def id(self) -> str:
        return self.schedule.id


def define_schedule(
    tm: TaskManager,
    *,
    schedule_id: str | None,
    name: str | None,
    task_options: TaskOptions,
    **options: Any,
) -> Callable[[F], F]:
    """Validate now, register the function and its schedule when decorating."""
    placeholder = "?"  # the real id and task name are known once a function is decorated
    template = Schedule(
        id=placeholder if schedule_id is None else schedule_id,
        task_name=name or placeholder,
        **options,
    )

    def register(fn: F) -> F:
        from .._manager import RunState

        if tm.state is not RunState.IDLE:
            raise ManagerStateError("define schedules before the task manager starts")
        final_name = name if name is not None else task_name(fn)
        sid = schedule_id if schedule_id is not None else final_name
        if sid in tm._schedules:
            raise ConfigurationError(
                f"schedule id {sid!r} is already used; pass id= to tell the two apart"
            )
        existing = tm.registry.get(final_name)
        if existing is not None and existing.explicit and existing.options != task_options:
            raise ConfigurationError(
                f"task {final_name!r} is already defined with other options "
                f"({existing.options}); give @tm.schedule the same task options, or pass "
                "name= to define a separate task"
            )
        defn = tm.registry.define(fn, task_options, name, explicit=True)
        tm._schedules[sid] = replace(template, id=sid, task_name=defn.name)
        return fn

    return register
