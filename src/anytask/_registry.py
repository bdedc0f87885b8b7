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


def task_name(fn: Callable[..., Any], *, explicit: bool = True) -> str:
    """The default name of a task function: its qualified name."""
    name = getattr(_unwrap(fn), "__qualname__", None) or getattr(fn, "__name__", None)
    if not isinstance(name, str) or not name:
        # add_task has no name= (a name= given to it goes to the function)
        how = "pass name=" if explicit else "register it first with tm.task(name=...)(obj)"
        raise ConfigurationError(f"cannot derive a task name from {fn!r}; {how}")
    return name


def not_found_again(fn: Callable[..., Any]) -> str | None:
    """Why a callable given to add_task could not be found again by its task name in
    another process, or after a restart (None when it can).

    A task is stored as a name plus its arguments; another process runs whatever is
    registered under that name *there*. For these callables that is another object
    made by the same code (another closure, another partial with other arguments,
    another lambda that happens to share the qualified name), or nothing at all, so a
    task of theirs left pending would run with the state of whichever one is used
    first. Methods of objects are not judged here: a second object's method is refused
    as a name already in use, and a long-lived object's is the same task again."""
    if isinstance(fn, functools.partial):
        return "a functools.partial (its bound arguments are not stored with the task)"
    inner = getattr(fn, "__func__", fn) if inspect.ismethod(fn) else fn
    if not inspect.isfunction(inner):
        return None
    if inner.__name__ == "<lambda>":
        return "a lambda (every lambda of a scope shares one name)"
    if "<locals>" in inner.__qualname__:
        return (
            "defined inside another function (a new object, with its own captured state, "
            "each time that function runs)"
        )
    return None


def _wraps(fn: Any, target: Any) -> bool:
    """``fn`` is ``target`` behind functools.wraps decorators or in a functools.partial."""
    seen = 0
    while fn is not None and seen < 100:
        if fn is target:
            return True
        fn = fn.func if isinstance(fn, functools.partial) else getattr(fn, "__wrapped__", None)
        seen += 1
    return False


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
    def __init__(self, *, durable: bool = False) -> None:
        # the store outlives this process (shared with others, or kept across restarts):
        # add_task refuses a callable that could not be found again by its name there
        self.durable = durable
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
        if isinstance(fn, staticmethod):
            # @tm.task above @staticmethod: Cls.fn (what add_task is given) is the function
            fn = fn.__func__
        if not callable(fn):
            hint = (
                ": register the class's bound method once the class is defined, tm.task(Cls.method)"
                if isinstance(fn, classmethod)
                else ""
            )
            raise ConfigurationError(f"a task must be callable, got {fn!r}{hint}")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigurationError(f"name must be a non-empty str, got {name!r}")
        final = name if name is not None else task_name(fn, explicit=explicit)
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
                raise ConfigurationError(_collision(final, fn, existing.fn, explicit))
            if not explicit:
                return existing  # a plain add_task never changes a definition
            # the definition is replaced: forget the functions that found the old one
            # (an equal bound method of another access would keep its old options)
            for key in [k for k, v in self._by_fn.items() if v is existing]:
                del self._by_fn[key]
        elif not explicit and self.durable:
            why = not_found_again(fn)
            if why is not None:
                raise ConfigurationError(
                    f"add_task({final}): it is {why}. A task is stored as its name and "
                    "arguments, and a process that runs it later (after a restart, or "
                    "another one sharing the store) finds the function again by that name: "
                    "for this callable it would find another object or none, and run the "
                    "task with the wrong captured values. Define the function at module "
                    "level and pass its data as arguments, or register it on purpose with "
                    "tm.task(...) (its name then means whatever is registered under it)"
                )
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


def _collision(name: str, fn: Any, existing: Any, explicit: bool) -> str:
    head = f"task name {name!r} is already used by {existing!r}"
    if _wraps(fn, existing):
        if isinstance(fn, functools.partial):
            return (
                f"{head}, and this is a functools.partial of it: pass its arguments to "
                "add_task instead (a partial's bound arguments are not stored)"
            )
        return (
            f"{head}, and this is a decorated version of it (functools.wraps): put @tm.task "
            "above the other decorators, so that the task is the decorated function"
        )
    if explicit:
        return f"{head}; pass name= to tell the two apart"
    return (
        f"{head}; give one of them another name with @tm.task(name=...), or pass the "
        "registered one (a second object made by the same code, such as another closure or "
        "another object's method, cannot share its name)"
    )
