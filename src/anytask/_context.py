"""What a running task can learn about itself, and its structured log."""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ._codec import check_json, clean_text
from ._errors import PayloadError

__all__ = ["TaskContext", "get_task_context", "task_log"]

#: Log lines kept per task; later lines are counted but dropped.
LOG_LIMIT = 1000


@dataclass(frozen=True)
class TaskContext:
    task_id: str
    name: str
    attempt: int
    max_attempts: int
    tags: tuple[str, ...]
    schedule_id: str | None = None
    fire_at: datetime | None = None


@dataclass
class _Active:
    context: TaskContext
    logs: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0
    limit: int = LOG_LIMIT  # lines this attempt may still add (earlier attempts used some)


_current: ContextVar[_Active | None] = ContextVar("anytask_current", default=None)


def get_task_context() -> TaskContext:
    """The context of the task running in the caller (also inside its worker thread).

    Raises :class:`LookupError` outside a task.
    """
    active = _current.get()
    if active is None:
        raise LookupError("get_task_context() was called outside a running anytask task")
    return active.context


def task_log(message: str, *, level: str = "info", **fields: Any) -> None:
    """Append a structured log line to the running task's record.

    ``fields`` must be plain JSON. Lines are stored with the record when the attempt ends,
    at most ``LOG_LIMIT`` per task (over all its attempts). Outside a task this raises
    :class:`LookupError`.
    """
    active = _current.get()
    if active is None:
        raise LookupError("task_log() was called outside a running anytask task")
    if not isinstance(message, str):
        raise PayloadError(f"task_log message must be a str, got {type(message).__name__}")
    for key, value in fields.items():
        if key in ("ts", "level", "msg", "attempt"):
            raise PayloadError(f"task_log field {key!r} is reserved")
        check_json(value, f"task_log field {key!r}")
    if len(active.logs) >= active.limit:
        active.dropped += 1
        return
    line: dict[str, Any] = {
        "ts": time.time(),
        "level": clean_text(str(level)),
        "msg": clean_text(message),
        "attempt": active.context.attempt,
    }
    line.update(fields)
    active.logs.append(line)
