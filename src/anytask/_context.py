"""What a running task can learn about itself, and its structured log."""

from __future__ import annotations

import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._codec import check_json, clean_text, detached
from ._errors import PayloadError

if TYPE_CHECKING:
    from ._models import TaskRecord

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


class _Active:
    """The running attempt of one task, as its code sees it. Built once per attempt on
    the hot path, so the context object and the log list are made only when asked for."""

    __slots__ = (
        "_context",
        "_logs",
        "clock",
        "dropped",
        "loop_thread",
        "offset",
        "record",
        "started_at",
        "token",
    )

    def __init__(self, record: TaskRecord) -> None:
        self.record = record
        # the fencing token of this attempt, kept apart: with an in-process store the
        # record is the stored one, which a later claim elsewhere may change
        self.token = record.token
        self.started_at = record.started_at
        self._context: TaskContext | None = None
        self._logs: list[dict[str, Any]] | None = None
        self.dropped = 0
        # the manager's clock minus the system's, at the start of the attempt (0.0 for
        # the system clock): log lines are stamped in the clock the record's times use
        # (a virtual one in tests), also from a worker thread, where it cannot be read
        self.offset = 0.0
        # a clock other than the system's, and the event loop's thread: lines logged from
        # that thread read the clock itself (a virtual one advances during the attempt:
        # the offset taken at its start would stamp a line after an hour's virtual sleep
        # an hour early); other threads cannot read it and go by the offset
        self.clock: Any = None
        self.loop_thread: int | None = None

    @property
    def limit(self) -> int:
        """Lines this attempt may still add: earlier attempts used some (per task). Worked
        out when a line comes: the record's lines stay as the claim found them until the
        attempt's outcome is written."""
        return max(LOG_LIMIT - len(self.record.logs), 0)

    @property
    def context(self) -> TaskContext:
        ctx = self._context
        if ctx is None:
            rec = self.record
            ctx = self._context = TaskContext(
                rec.id,
                rec.name,
                rec.attempts,
                rec.max_attempts,
                tuple(rec.tags),
                rec.schedule_id,
                rec.fire_at,
            )
        return ctx

    @property
    def logs(self) -> list[dict[str, Any]]:
        logs = self._logs
        if logs is None:
            logs = self._logs = []
        return logs

    @property
    def has_logs(self) -> bool:
        return bool(self._logs)


_current: ContextVar[_Active | None] = ContextVar("anytask_current", default=None)


def get_task_context() -> TaskContext:
    """The context of the task running in the caller (also inside its worker thread).

    Raises :class:`LookupError` outside a task.
    """
    active = _current.get()
    if active is None:
        raise LookupError("get_task_context() was called outside a running anytask task")
    return active.context


def _stamp(active: _Active) -> float:
    clock = active.clock
    if clock is None:
        return time.time()
    if threading.get_ident() == active.loop_thread:
        return float(clock.time())
    return time.time() + active.offset


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
        "ts": _stamp(active),
        "level": clean_text(str(level)),
        "msg": clean_text(message),
        "attempt": active.record.attempts,
    }
    # copied where the fields nest: the line is stored when the attempt ends, and the
    # task may change its lists and dicts meanwhile
    line.update(detached(fields))
    active.logs.append(line)
