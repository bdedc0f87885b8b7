"""Task definitions: which function runs under which name, with which options."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from ._errors import ConfigurationError, TaskNotRegistered
from ._models import TaskOptions

__all__ = ["Registry", "TaskDefinition", "task_name"]


@dataclass(frozen=True)
class TaskDefinition:
    name: str
    fn: Callable[..., Any]
    options: TaskOptions
    is_async: bool
    explicit: bool  # defined with @tm.task (False: a plain function given to add_task)
    # what each new record of this task starts with (priority, tags, max_attempts,
    # timeout, requeue_on_interrupt), read once per enqueue
    # (the tags are the options' tuple, shared by every record: see NO_ITEMS)
    record_defaults: tuple[int, list[str], int, float | None, bool] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        o = self.options
        tags = cast(list[str], o.tags)
        defaults = (o.priority, tags, o.max_attempts, o.timeout, o.requeue_on_interrupt)
        object.__setattr__(self, "record_defaults", defaults)


def _unwrap(fn: Callable[..., Any]) -> Callable[..., Any]:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def task_name(fn: Callable[..., Any]) -> str:
    """The default name of a task function: its qualified name."""
    name = getattr(_unwrap(fn), "__qualname__", None) or getattr(fn, "__name__", None)
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"cannot derive a task name from {fn!r}; pass name=")
    return name


def _is_generator(fn: Callable[..., Any]) -> bool:
    """A generator or async generator function (or a callable object whose ``__call__``
    is one): calling it runs none of its body."""
    target = _unwrap(fn)
    call = target if inspect.isfunction(target) or inspect.ismethod(target) else None
    if call is None:
        call = getattr(target, "__call__", None)  # noqa: B004 - callable objects
    return inspect.isgeneratorfunction(call) or inspect.isasyncgenfunction(call)


def is_async_callable(fn: Callable[..., Any]) -> bool:
    target = _unwrap(fn)
    if inspect.iscoroutinefunction(target):
        return True
    call = getattr(target, "__call__", None)  # noqa: B004 - callable objects
    return call is not None and inspect.iscoroutinefunction(call)


class Registry:
    def __init__(self) -> None:
        self._by_name: dict[str, TaskDefinition] = {}
        self._by_fn: dict[int, TaskDefinition] = {}
        # lookups read on every enqueue and attempt, without a Python call around the
        # dict's own: the definition of a name (None if none), and the one a function was
        # given (by id(); the caller checks that ``defn.fn`` is that very function, else
        # calls resolve())
        self.get: Callable[[str], TaskDefinition | None] = self._by_name.get
        self.lookup_fn: Callable[[int], TaskDefinition | None] = self._by_fn.get

    def define(
        self, fn: Callable[..., Any], options: TaskOptions, name: str | None, *, explicit: bool
    ) -> TaskDefinition:
        if not callable(fn):
            raise ConfigurationError(f"a task must be callable, got {fn!r}")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigurationError(f"name must be a non-empty str, got {name!r}")
        final = name if name is not None else task_name(fn)
        try:
            final.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigurationError(f"task name {final!r} holds a lone surrogate") from None
        if _is_generator(fn):
            raise ConfigurationError(
                f"task {final!r} is a generator function: calling it would run none of its "
                "body, so its task would succeed without doing anything (a task returns its "
                "result: use return, not yield)"
            )
        existing = self._by_name.get(final)
        if existing is not None:
            # ``==``, not ``is``: each ``obj.method`` access makes a new bound method
            # object, equal to the others of the same object and function
            if existing.fn is not fn and existing.fn != fn:
                raise ConfigurationError(
                    f"task name {final!r} is already used by {existing.fn!r}; pass name= to "
                    "tell the two apart"
                )
            if not explicit:
                return existing  # a plain add_task never changes a definition
        defn = TaskDefinition(final, fn, options, is_async_callable(fn), explicit)
        self._by_name[final] = defn
        self._by_fn[id(fn)] = defn
        return defn

    def resolve(self, fn_or_name: Callable[..., Any] | str) -> TaskDefinition:
        """The definition for a function (defining it with default options if it is a plain
        function seen for the first time) or for a registered name."""
        if isinstance(fn_or_name, str):
            defn = self._by_name.get(fn_or_name)
            if defn is None:
                raise TaskNotRegistered(f"no task is registered under the name {fn_or_name!r}")
            return defn
        found = self._by_fn.get(id(fn_or_name))
        if found is not None and found.fn is fn_or_name:
            return found
        return self.define(fn_or_name, TaskOptions(), None, explicit=False)

    def names(self) -> list[str]:
        return sorted(self._by_name)
