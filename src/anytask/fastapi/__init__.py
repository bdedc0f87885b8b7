"""FastAPI and Starlette integration: ``TaskAdmin`` mounts the JSON API and the dashboard
and wires a :class:`~anytask.TaskManager` into the app. Needs ``anytask[fastapi]``."""

from ._admin import TaskAdmin as TaskAdmin
from ._auth import AuthCallable as AuthCallable
from ._wiring import ManagedBackgroundTasks as BackgroundTasks
from ._wiring import ManagedBackgroundTasks as ManagedBackgroundTasks
from ._wiring import current_manager as current_manager
from ._wiring import lifespan as lifespan

__all__ = [
    "AuthCallable",
    "BackgroundTasks",
    "ManagedBackgroundTasks",
    "TaskAdmin",
    "current_manager",
    "lifespan",
]
