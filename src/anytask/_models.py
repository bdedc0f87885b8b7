"""Plain data: task status, task records, options and queries. No I/O here."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from ._errors import ConfigurationError

__all__ = [
    "DurationStats",
    "Metrics",
    "MetricsBucket",
    "Outcome",
    "Page",
    "ScheduleState",
    "TaskOptions",
    "TaskQuery",
    "TaskRecord",
    "TaskStatus",
]


# An empty list's stand-in in records the runtime builds and the memory store keeps: the
# empty tuple, which the garbage collector does not track (a list is tracked for as long as
# the record lives, and every collection of the older generations walks it again) and
# which nothing can change in place. A task's default tags are put in the same way, as the
# tuple of its options. Code that reads such a record's ``args``, ``tags`` or ``logs``
# only iterates, tests and measures them; stores hand out real lists.
NO_ITEMS = cast(list[Any], ())


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def terminal(self) -> bool:
        return self not in (TaskStatus.PENDING, TaskStatus.RUNNING)

    @property
    def dead(self) -> bool:
        """Dead letters: failed or interrupted tasks, which can be replayed."""
        return self in (TaskStatus.FAILED, TaskStatus.INTERRUPTED)


TERMINAL = frozenset(s for s in TaskStatus if s.terminal)
DEAD = frozenset(s for s in TaskStatus if s.dead)


@dataclass(eq=False, slots=True)
class TaskRecord:
    """The durable record of one task. Stores hand out snapshots: mutating one, nested
    lists and dicts included, changes nothing in the store."""

    id: str
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    created_at: datetime
    run_after: datetime
    status: TaskStatus = TaskStatus.PENDING
    priority: int = 0
    tags: list[str] = field(default_factory=list)
    idempotency_key: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    attempts: int = 0
    max_attempts: int = 1
    timeout: float | None = None
    requeue_on_interrupt: bool = False
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    result: Any = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    schedule_id: str | None = None
    fire_at: datetime | None = None
    owner: str | None = None
    lease_expires_at: datetime | None = None
    token: int = 0
    cancel_requested: bool = False
    replay_of: str | None = None
    seq: int = 0

    @property
    def duration(self) -> float | None:
        """Seconds between the start of the last attempt and the end, once ended."""
        if self.started_at is None or self.ended_at is None:
            return None
        return max((self.ended_at - self.started_at).total_seconds(), 0.0)

    @property
    def retries_used(self) -> int:
        return max(self.attempts - 1, 0)

    def copy(self) -> TaskRecord:
        """A shallow copy (every field, positionally: the fastest way to make one)."""
        return TaskRecord(
            self.id,
            self.name,
            self.args,
            self.kwargs,
            self.created_at,
            self.run_after,
            self.status,
            self.priority,
            self.tags,
            self.idempotency_key,
            self.started_at,
            self.ended_at,
            self.attempts,
            self.max_attempts,
            self.timeout,
            self.requeue_on_interrupt,
            self.error,
            self.error_type,
            self.traceback,
            self.result,
            self.logs,
            self.schedule_id,
            self.fire_at,
            self.owner,
            self.lease_expires_at,
            self.token,
            self.cancel_requested,
            self.replay_of,
            self.seq,
        )

    def __repr__(self) -> str:
        return (
            f"TaskRecord(id={self.id!r}, name={self.name!r}, status={self.status.value!r}, "
            f"attempts={self.attempts}, priority={self.priority})"
        )


@dataclass(eq=False)
class Outcome:
    """What the runtime writes when an attempt ends. Applied only while the record is
    still ``running`` with the same fencing ``token``."""

    id: str
    token: int
    status: TaskStatus
    ended_at: datetime | None = None
    result: Any = None
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    logs: list[dict[str, Any]] | None = None  # the full log list, replacing the stored one
    run_after: datetime | None = None  # set when status is PENDING (retry or requeue)
    seq: int | None = None  # the record's seq when known: lets a store find it faster
    # with status PENDING: the record's attempts become this (a task handed back without
    # being run does not use up an attempt); None leaves them as the claim set them
    attempts: int | None = None


def _statuses(value: Any) -> frozenset[TaskStatus]:
    """``TaskQuery.statuses`` as TaskStatus members (names or members accepted)."""
    if isinstance(value, str | TaskStatus):  # one status, not a collection of them
        value = (value,)
    try:
        items = list(value)
    except TypeError:
        raise ConfigurationError(
            f"statuses must be a collection of statuses, got {value!r}"
        ) from None
    result = set()
    for item in items:
        try:
            result.add(TaskStatus(item))
        except ValueError:
            known = ", ".join(s.value for s in TaskStatus)
            raise ConfigurationError(
                f"unknown status {item!r} in statuses (known: {known})"
            ) from None
    return frozenset(result)


@dataclass(frozen=True)
class TaskQuery:
    """A filter for listing tasks, newest first, paged by ``cursor``."""

    statuses: frozenset[TaskStatus] | None = None
    name: str | None = None
    tag: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    search: str | None = None  # substring of name or error, case-insensitive
    schedule_id: str | None = None
    replay_of: str | None = None  # replays of this task
    limit: int = 50
    cursor: int | None = None  # seq of the last item of the previous page

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int):
            raise ConfigurationError(f"limit must be an int, got {self.limit!r}")
        if not 1 <= self.limit <= 1000:
            raise ConfigurationError(f"limit must be between 1 and 1000, got {self.limit}")
        if self.statuses is not None:
            object.__setattr__(self, "statuses", _statuses(self.statuses))
        check_aware("created_after", self.created_after)
        check_aware("created_before", self.created_before)

    def matches(self, rec: TaskRecord) -> bool:
        """Reference semantics of the filter (used by the memory store and tests)."""
        if self.cursor is not None and rec.seq >= self.cursor:
            return False
        if self.statuses is not None and rec.status not in self.statuses:
            return False
        if self.name is not None and rec.name != self.name:
            return False
        if self.tag is not None and self.tag not in rec.tags:
            return False
        if self.schedule_id is not None and rec.schedule_id != self.schedule_id:
            return False
        if self.replay_of is not None and rec.replay_of != self.replay_of:
            return False
        if self.created_after is not None and rec.created_at < self.created_after:
            return False
        if self.created_before is not None and rec.created_at >= self.created_before:
            return False
        if self.search:
            needle = self.search.lower()
            if needle not in rec.name.lower() and needle not in (rec.error or "").lower():
                return False
        return True


@dataclass
class Page:
    items: list[TaskRecord]
    next_cursor: int | None


@dataclass
class MetricsBucket:
    """Tasks that ended within ``[start, start + width)``: success, dead (failed or
    interrupted) and other (cancelled)."""

    start: datetime
    success: int = 0
    failed: int = 0
    other: int = 0


@dataclass
class DurationStats:
    """Run time percentiles (seconds, nearest rank) of one task name's ended attempts."""

    name: str
    count: int
    p50: float
    p95: float
    p99: float


@dataclass
class Metrics:
    """What :meth:`Store.metrics` computes for ``[since, until)``: counts of every status
    (all time), a series of ended tasks per bucket, and durations per task name."""

    since: datetime
    until: datetime
    counts: dict[TaskStatus, int]
    series: list[MetricsBucket]
    durations: list[DurationStats]


@dataclass
class ScheduleState:
    """What a store persists per schedule, shared by every instance."""

    schedule_id: str
    last_fire_at: datetime | None = None
    paused: bool = False


MAX_WAIT = 366 * 86400.0  # no computed retry wait exceeds a year


def check_aware(name: str, value: Any) -> None:
    """``value`` (an option called ``name``) is None or a timezone-aware datetime."""
    if value is None:
        return
    if not isinstance(value, datetime):
        raise ConfigurationError(f"{name} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigurationError(
            f"{name} must be timezone-aware (e.g. datetime.now(UTC)), got {value!r}"
        )


def _number(
    option: str,
    value: Any,
    *,
    allow_none: bool = False,
    positive: bool = False,
    minimum: float = 0.0,
) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{option} must be a number, got {value!r}")
    try:
        as_float = float(value)
    except OverflowError:  # an int past the float range
        raise ConfigurationError(
            f"{option} must be finite, got an int of {int(value).bit_length()} bits"
        ) from None
    if math.isnan(as_float) or math.isinf(as_float):
        raise ConfigurationError(f"{option} must be finite, got {value!r}")
    if value < minimum or (positive and value == 0):
        bound = "> 0" if positive else f">= {minimum:g}"
        raise ConfigurationError(f"{option} must be {bound}, got {value!r}")


def check_priority(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"priority must be an int, got {value!r}")
    if not -(2**62) <= value <= 2**62:
        raise ConfigurationError(f"priority {value} is out of range")
    return value


def check_tags(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence | set | frozenset):
        raise ConfigurationError(f"tags must be a list of str, got {value!r}")
    tags = list(value)
    for tag in tags:
        if not isinstance(tag, str) or not tag:
            raise ConfigurationError(f"tags: each tag must be a non-empty str, got {tag!r}")
        try:
            tag.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigurationError(f"tags: {tag!r} holds a lone surrogate") from None
    return tags


@dataclass(frozen=True)
class TaskOptions:
    """How a task runs. ``retries`` extra attempts after the first failure; the n-th retry
    waits ``min(delay * backoff ** (n - 1), max_delay)``, reduced by up to ``jitter`` of
    itself at random (``jitter=0.2``: between 80% and 100% of the computed wait)."""

    retries: int = 0
    delay: float = 0.0
    backoff: float = 1.0
    max_delay: float | None = None
    jitter: float = 0.0
    timeout: float | None = None
    priority: int = 0
    requeue_on_interrupt: bool = False
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int):
            raise ConfigurationError(f"retries must be an int, got {self.retries!r}")
        if self.retries < 0:
            raise ConfigurationError(f"retries must be >= 0, got {self.retries}")
        if self.retries >= 2**62:  # max_attempts is a 64-bit INTEGER in SQLite
            raise ConfigurationError(f"retries must be below 2**62, got {self.retries}")
        _number("delay", self.delay)
        _number("backoff", self.backoff, minimum=1)
        _number("max_delay", self.max_delay, allow_none=True)
        _number("jitter", self.jitter)
        if self.jitter > 1:
            raise ConfigurationError(f"jitter must be between 0 and 1, got {self.jitter!r}")
        _number("timeout", self.timeout, allow_none=True, positive=True)
        if self.timeout is not None:
            # seconds as a float, as every store reads them back (SQLite cannot write an
            # int past 64 bits at all: one such record failed the whole group commit)
            object.__setattr__(self, "timeout", float(self.timeout))
        check_priority(self.priority)
        if not isinstance(self.requeue_on_interrupt, bool):
            raise ConfigurationError(
                f"requeue_on_interrupt must be a bool, got {self.requeue_on_interrupt!r}"
            )
        object.__setattr__(self, "tags", tuple(check_tags(self.tags)))

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    def retry_wait(self, attempt: int, rand: float) -> float:
        """Seconds to wait before the attempt after ``attempt`` (1-based), given a uniform
        random number ``rand`` in [0, 1)."""
        try:
            wait = self.delay * self.backoff ** min(max(attempt - 1, 0), 10_000)
        except OverflowError:
            wait = math.inf if self.delay else 0.0  # (no delay stays none, however many)
        wait = min(wait, MAX_WAIT)
        if self.max_delay is not None:
            wait = min(wait, self.max_delay)
        return wait * (1.0 - self.jitter * rand)
