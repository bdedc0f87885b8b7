"""Pydantic models of the JSON API (pydantic lives at this edge only) and converters
from anytask's plain records."""

from __future__ import annotations

import dataclasses
import enum
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from .._events import TaskEvent
from .._models import Metrics, TaskRecord

__all__ = [
    "CancelResult",
    "DurationOut",
    "HealthOut",
    "MetricsOut",
    "ReplayItem",
    "ReplayOneResult",
    "ReplayRequest",
    "ReplayResult",
    "ScheduleList",
    "SeriesPoint",
    "SessionOut",
    "TaskDetail",
    "TaskPage",
    "TaskSummary",
    "iso",
]


def iso(value: datetime | None) -> str | None:
    """ISO-8601 UTC with a ``Z`` suffix and microseconds, or None."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


#: The characters of a task's error a list shows (the detail shows all of it).
SUMMARY_ERROR = 1000


class TaskSummary(BaseModel):
    task_id: str
    func_name: str
    status: str
    priority: int
    tags: list[str]
    created_at: str | None
    run_after: str | None
    started_at: str | None
    ended_at: str | None
    duration: float | None
    retries_used: int
    attempts: int
    max_attempts: int
    error: str | None
    error_type: str | None
    schedule_id: str | None
    fire_at: str | None
    replay_of: str | None
    # the replay of this (dead) task, when it has been replayed; filled in by the dead
    # letters list
    replayed_as: str | None = None

    @classmethod
    def of(cls, rec: TaskRecord) -> TaskSummary:
        fields = _summary(rec)
        error = rec.error
        if error is not None and len(error) > SUMMARY_ERROR:
            # a page of a list holds up to 500 rows: an error of megabytes (a huge str()
            # of an exception) would make it that many times bigger; the detail has it
            fields["error"] = error[:SUMMARY_ERROR] + "…"
        return cls.model_construct(**fields)


class TaskDetail(TaskSummary):
    args: list[Any]
    kwargs: dict[str, Any]
    result: Any = None
    traceback: str | None = None
    logs: list[dict[str, Any]] = Field(default_factory=list)
    idempotency_key: str | None = None
    replays: list[str] = Field(default_factory=list)  # ids of the replays of this task

    @classmethod
    def of(cls, rec: TaskRecord, replays: list[str] | None = None) -> TaskDetail:
        return cls.model_construct(
            **_summary(rec),
            args=rec.args,
            kwargs=rec.kwargs,
            result=rec.result,
            traceback=rec.traceback,
            logs=rec.logs,
            idempotency_key=rec.idempotency_key,
            replays=replays or [],
        )


def _summary(rec: TaskRecord) -> dict[str, Any]:
    return {
        "task_id": rec.id,
        "func_name": rec.name,
        "status": rec.status.value,
        "priority": rec.priority,
        "tags": list(rec.tags),
        "created_at": iso(rec.created_at),
        "run_after": iso(rec.run_after),
        "started_at": iso(rec.started_at),
        "ended_at": iso(rec.ended_at),
        "duration": rec.duration,
        "retries_used": rec.retries_used,
        "attempts": rec.attempts,
        "max_attempts": rec.max_attempts,
        "error": rec.error,
        "error_type": rec.error_type,
        "schedule_id": rec.schedule_id,
        "fire_at": iso(rec.fire_at),
        "replay_of": rec.replay_of,
    }


class TaskPage(BaseModel):
    items: list[TaskSummary]
    next_cursor: int | None
    total: int


class CancelResult(BaseModel):
    task_id: str
    status: str


class ReplayOneResult(BaseModel):
    task_id: str
    new_task_id: str


class ReplayRequest(BaseModel):
    """Select dead tasks by ``ids``, by a ``window`` back from now, or by ``since``/
    ``until`` (creation time); ``dry_run`` returns what would be dispatched."""

    ids: list[str] | None = Field(default=None, max_length=10_000)
    window: Literal["1h", "24h", "7d"] | None = None
    since: datetime | None = None
    until: datetime | None = None
    dry_run: bool = False

    @field_validator("ids")
    @classmethod
    def _ids_are_text(cls, ids: list[str] | None) -> list[str] | None:
        """A JSON ``"\\ud800"`` escape decodes to a lone surrogate, which no store can
        look up (SQLite cannot even encode it): refused here, naming the item."""
        for i, task_id in enumerate(ids or ()):
            try:
                task_id.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(
                    f"ids[{i}] is not valid Unicode text (a lone surrogate): {task_id!r}"
                ) from None
        return ids


class ReplayItem(BaseModel):
    task_id: str
    func_name: str
    status: str
    created_at: str | None
    error: str | None
    new_task_id: str | None


class ReplayResult(BaseModel):
    dry_run: bool
    count: int
    items: list[ReplayItem]


class SeriesPoint(BaseModel):
    start: str | None
    success: int
    failed: int
    other: int


class DurationOut(BaseModel):
    func_name: str
    count: int
    p50: float
    p95: float
    p99: float


class MetricsOut(BaseModel):
    counts: dict[str, int]
    total: int
    series: list[SeriesPoint]
    durations: list[DurationOut]
    generated_at: str | None

    @classmethod
    def of(cls, m: Metrics, now: datetime) -> MetricsOut:
        counts = {s.value: n for s, n in m.counts.items()}
        return cls(
            counts=counts,
            total=sum(counts.values()),
            series=[
                SeriesPoint(start=iso(b.start), success=b.success, failed=b.failed, other=b.other)
                for b in m.series
            ],
            durations=[
                DurationOut(func_name=d.name, count=d.count, p50=d.p50, p95=d.p95, p99=d.p99)
                for d in m.durations
            ],
            generated_at=iso(now),
        )


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    state: str
    instance_id: str
    counts: dict[str, int]


class SessionOut(BaseModel):
    user: str | None
    csrf_token: str | None
    auth: bool


class ScheduleList(BaseModel):
    items: list[dict[str, Any]]


def event_json(ev: TaskEvent) -> dict[str, Any]:
    return {
        "kind": ev.kind,
        "task_id": ev.task_id,
        "func_name": ev.name,
        "status": ev.status,
        "at": iso(ev.at),
        "attempts": ev.attempts,
        "priority": ev.priority,
        "error": ev.error,
    }


def schedule_json(info: Any) -> dict[str, Any]:
    """One ``tm.schedules()`` entry as flat JSON (``ScheduleInfo``; anything else via
    :func:`plain`)."""
    schedule = getattr(info, "schedule", None)
    if schedule is None:
        value = plain(info)
        return value if isinstance(value, dict) else {"id": str(value)}
    return {
        "id": schedule.id,
        "func_name": getattr(schedule, "task_name", None),
        "every": getattr(schedule, "every", None),
        "cron": getattr(schedule, "cron", None),
        "timezone": getattr(schedule, "timezone", None),
        "paused": bool(getattr(info, "paused", False)),
        "last_fire_at": plain(getattr(info, "last_fire_at", None)),
        "last_task_id": getattr(info, "last_task_id", None),
        "last_status": plain(getattr(info, "last_status", None)),
        "next_fire_at": plain(getattr(info, "next_fire_at", None)),
    }


def plain(value: Any) -> Any:
    """Dataclasses, enums and datetimes (e.g. schedule info) as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
