"""Every exception anytask raises on purpose.

The tree::

    AnytaskError
    ├── ConfigurationError (also ValueError)    bad option when a task/schedule/manager is defined
    ├── PayloadError (also TypeError)           arguments or results that JSON cannot carry as-is
    ├── TaskNotFound (also LookupError)         no record with that id
    ├── TaskNotRegistered (also LookupError)    no task definition with that name
    ├── ScheduleNotFound (also LookupError)     no schedule with that id
    ├── TaskStateError (also ValueError)        the task is not in a state that allows the call
    ├── ManagerStateError (also RuntimeError)   the manager is not running, or already closed
    └── StoreError                              the store cannot do what was asked
        ├── StoreLockedError                    another connection holds the database lock
        ├── StoreReadOnlyError                  the database cannot be written
        ├── StoreCorruptError                   the file is not a usable anytask database
        └── SchemaVersionError                  written by a newer anytask than this one

A task function's own exceptions are never wrapped: they are recorded on the task
(type, message and traceback) and never propagate into the runtime.
"""

from __future__ import annotations

__all__ = [
    "AnytaskError",
    "ConfigurationError",
    "ManagerStateError",
    "PayloadError",
    "ScheduleNotFound",
    "SchemaVersionError",
    "StoreCorruptError",
    "StoreError",
    "StoreLockedError",
    "StoreReadOnlyError",
    "TaskNotFound",
    "TaskNotRegistered",
    "TaskStateError",
]


class AnytaskError(Exception):
    """Root of every exception anytask raises on purpose."""


class ConfigurationError(AnytaskError, ValueError):
    """An option has a value that anytask cannot use; the message names it."""


class PayloadError(AnytaskError, TypeError):
    """A task argument or result is not plain JSON; the message names which one."""


class TaskNotFound(AnytaskError, LookupError):
    """No task record has the given id."""


class TaskNotRegistered(AnytaskError, LookupError):
    """No task definition is registered under the given name."""


class ScheduleNotFound(AnytaskError, LookupError):
    """No schedule is defined under the given id."""


class TaskStateError(AnytaskError, ValueError):
    """The task's status does not allow this call (replaying a task that succeeded)."""


class ManagerStateError(AnytaskError, RuntimeError):
    """The manager is in a state where the call cannot be served."""


class StoreError(AnytaskError):
    """The store failed to do what was asked."""


class StoreLockedError(StoreError):
    """The database is locked by another connection for longer than the busy timeout."""


class StoreReadOnlyError(StoreError):
    """The database (or its directory) cannot be written."""


class StoreCorruptError(StoreError):
    """The file exists but is not a readable anytask database; it is never overwritten."""


class SchemaVersionError(StoreError):
    """The database was written by a newer schema than this version of anytask knows."""
