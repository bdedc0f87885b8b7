"""anytask: durable background tasks for Python web apps and anyio programs.

Runs inside the app's own event loop, on asyncio and on trio, with no broker and no
separate worker. See the README for a quick start.
"""

from typing import TYPE_CHECKING

from ._clock import Clock as Clock
from ._clock import LoopClock as LoopClock
from ._clock import SystemClock as SystemClock
from ._context import TaskContext as TaskContext
from ._context import get_task_context as get_task_context
from ._context import task_log as task_log
from ._errors import AnytaskError as AnytaskError
from ._errors import ConfigurationError as ConfigurationError
from ._errors import ManagerStateError as ManagerStateError
from ._errors import PayloadError as PayloadError
from ._errors import ScheduleNotFound as ScheduleNotFound
from ._errors import SchemaVersionError as SchemaVersionError
from ._errors import StoreCorruptError as StoreCorruptError
from ._errors import StoreError as StoreError
from ._errors import StoreLockedError as StoreLockedError
from ._errors import StoreReadOnlyError as StoreReadOnlyError
from ._errors import TaskNotFound as TaskNotFound
from ._errors import TaskNotRegistered as TaskNotRegistered
from ._errors import TaskStateError as TaskStateError
from ._events import TaskEvent as TaskEvent
from ._manager import RunState as RunState
from ._manager import TaskAdder as TaskAdder
from ._manager import TaskManager as TaskManager
from ._models import Page as Page
from ._models import TaskOptions as TaskOptions
from ._models import TaskQuery as TaskQuery
from ._models import TaskRecord as TaskRecord
from ._models import TaskStatus as TaskStatus
from .schedule import MisfirePolicy as MisfirePolicy
from .schedule import OverlapPolicy as OverlapPolicy
from .schedule import Schedule as Schedule
from .schedule import ScheduleInfo as ScheduleInfo
from .stores.memory import MemoryStore as MemoryStore
from .stores.sqlite import SQLiteStore as SQLiteStore

if TYPE_CHECKING:
    from .fastapi import TaskAdmin as TaskAdmin

__version__ = "0.1.0.dev0"


def __getattr__(name: str) -> object:
    # TaskAdmin needs the optional fastapi extra: import it only when asked for
    if name == "TaskAdmin":
        from .fastapi import TaskAdmin

        return TaskAdmin
    raise AttributeError(f"module 'anytask' has no attribute {name!r}")


__all__ = [
    "AnytaskError",
    "Clock",
    "ConfigurationError",
    "LoopClock",
    "ManagerStateError",
    "MemoryStore",
    "MisfirePolicy",
    "OverlapPolicy",
    "Page",
    "PayloadError",
    "RunState",
    "SQLiteStore",
    "Schedule",
    "ScheduleInfo",
    "ScheduleNotFound",
    "SchemaVersionError",
    "StoreCorruptError",
    "StoreError",
    "StoreLockedError",
    "StoreReadOnlyError",
    "SystemClock",
    "TaskAdder",
    "TaskAdmin",
    "TaskContext",
    "TaskEvent",
    "TaskManager",
    "TaskNotFound",
    "TaskNotRegistered",
    "TaskOptions",
    "TaskQuery",
    "TaskRecord",
    "TaskStateError",
    "TaskStatus",
    "get_task_context",
    "task_log",
]
