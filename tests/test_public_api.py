"""The public surface of the package is exactly ``anytask.__all__``."""

from __future__ import annotations

import types

import anytask

PUBLIC = [
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


def test_all_is_exactly_the_public_surface() -> None:
    assert anytask.__all__ == PUBLIC  # sorted, no duplicates, nothing missing or extra


def test_every_name_in_all_is_importable() -> None:
    for name in anytask.__all__:
        assert getattr(anytask, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from anytask import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == PUBLIC


def test_no_public_anytask_object_is_left_out_of_all() -> None:
    leaked = [
        name
        for name, value in vars(anytask).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and getattr(value, "__module__", "").startswith("anytask")
        and name not in anytask.__all__
    ]
    assert leaked == []


def test_exported_objects_come_from_private_modules() -> None:
    for name in PUBLIC:
        module = getattr(getattr(anytask, name), "__module__", "")
        assert module.startswith("anytask."), (name, module)
