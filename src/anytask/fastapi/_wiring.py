"""How anytask plugs into an ASGI app: the per-request middleware, managed
``BackgroundTasks`` and the lifespan.

FastAPI builds the ``BackgroundTasks`` it injects by calling the name ``BackgroundTasks``
in ``fastapi.dependencies.utils`` (0.100 to 0.165 at least). :func:`install` points that
name at :class:`ManagedBackgroundTasks`, a subclass whose ``add_task`` looks up the task
manager of the *current request* in a context variable set by :class:`TaskMiddleware`.
Requests of apps without a ``TaskAdmin`` see no manager and get the stock behaviour
(Starlette runs the function after the response and ``add_task`` returns None). With a
manager, the task goes to anytask only: it is never also in Starlette's list, so it
cannot run twice, unless anytask could not find the callable again by name (a lambda, a
closure, a method of a per-request object...): see :func:`why_not_durable`.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from contextvars import ContextVar
from types import FunctionType, MethodType, ModuleType
from typing import Any, ParamSpec

import anyio
from fastapi import BackgroundTasks
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._errors import ConfigurationError
from .._manager import QueuedHere, RunState, TaskManager, _queued_here
from .._registry import not_found_again, task_name

__all__ = [
    "ManagedBackgroundTasks",
    "TaskMiddleware",
    "install",
    "lifespan",
    "split_root",
    "why_not_durable",
]

P = ParamSpec("P")

_current: ContextVar[TaskManager | None] = ContextVar("anytask_request_manager", default=None)

log = logging.getLogger("anytask")
_warned: set[str] = set()  # names already warned about: once per name, not per request

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_COMMON_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


class ManagedBackgroundTasks(BackgroundTasks):
    """``BackgroundTasks`` whose ``add_task`` returns a task id inside a TaskAdmin app.

    Callables anytask could not run by name (see :func:`why_not_durable`) keep Starlette's
    behaviour instead: they run in this process after the response, and ``add_task``
    returns None. A warning on the ``anytask`` logger says so, once per name.
    """

    def add_task(  # type: ignore[override]
        self, func: Callable[P, Any], *args: P.args, **kwargs: P.kwargs
    ) -> str | None:
        manager = _current.get()
        if manager is not None:
            # the caller's globals: where a module-level object it uses is found
            reason = why_not_durable(manager, func, sys._getframe(1).f_globals)
            if reason is None:
                return manager.add_task(func, *args, **kwargs)
            _warn_once(func, reason)
        super().add_task(func, *args, **kwargs)
        return None


def why_not_durable(
    manager: TaskManager, func: Any, caller_globals: Mapping[str, Any] | None = None
) -> str | None:
    """Why anytask could not find ``func`` again by its task name, or None when it can.

    anytask stores a task as a name plus JSON arguments and runs it later, possibly after a
    restart or in another process sharing the store, by looking the name up in the
    registry. That works for a callable that is the same object every time the code runs:
    a module-level function, a static or class method of a module-level class, a method of
    a module-level object, or anything registered with ``@tm.task``. A lambda, a closure
    or a method of a per-request object is a new object on every request: the first
    request would register it, the next could not (another object under the same name),
    and its captured state lives only in this request anyway.
    """
    if isinstance(func, str):
        return None  # a registered name
    reason = _reason(func, caller_globals)
    if reason is None:
        reason = _name_taken(manager, func)
    if reason is None and manager.registry.durable:
        # what a durable store's add_task refuses (a lambda stored as a method of a
        # module-level object, say) must not get there: a 500 instead of Starlette
        reason = not_found_again(func)
    if reason is not None and _registered(manager, func):
        return None  # @tm.task(...) on it: the user made it a task on purpose
    return reason


def _name_taken(manager: TaskManager, func: Any) -> str | None:
    """Why ``func`` cannot be registered under its task name: another callable has it
    (two modules' ``notify``), so the name would find that one, not this one."""
    try:
        name = task_name(func)
    except ConfigurationError:
        return None
    defn = manager.registry.get(name)
    if defn is None or defn.fn is func or defn.fn == func:
        return None
    other = f"{getattr(defn.fn, '__module__', None)}.{getattr(defn.fn, '__qualname__', name)}"
    return f"named {name!r} like another task registered first ({other})"


_BUILTIN = type(print)  # builtin functions, and methods of builtin objects ([].append)
_BOUND = (MethodType, _BUILTIN)


def _reason(func: Any, caller_globals: Mapping[str, Any] | None) -> str | None:
    if type(func) is FunctionType:  # the common case first, and cheap
        if func.__name__ == "<lambda>":
            return "a lambda"
        if "<locals>" in func.__qualname__:
            return "a function defined inside another function (a closure)"
        # defined at module or class level: created once, at import
        return None
    if isinstance(func, functools.partial):
        return "a functools.partial (a new object each time)"
    if isinstance(func, type):
        return None if "<locals>" not in func.__qualname__ else "a class defined in a function"
    owner = getattr(func, "__self__", None) if isinstance(func, _BOUND) else None
    if owner is None and isinstance(func, _BUILTIN):
        return None  # a builtin function
    if owner is not None:
        if isinstance(owner, ModuleType):
            return None  # a builtin function such as print (bound to its module)
        inner = getattr(func, "__func__", None)
        if "<locals>" in getattr(inner, "__qualname__", ""):
            return "a method of a class defined in a function"
        if isinstance(owner, type):  # a classmethod: its class is module-level, or not
            if "<locals>" in owner.__qualname__:
                return "a method of a class defined in a function"
            return None
        # A bound method is "Class.method" plus the object it is bound to; it is the same
        # task every time only if that object is. An instance has no name to look up, so
        # test the two places a module-level object is found: the globals of the module
        # that defines the method's class, and those of the code calling add_task (which
        # imported it). Three identity scans of module dicts: cheap, and never a false
        # "durable". A long-lived object kept elsewhere (app.state...) is reported as not
        # durable; registering its method with tm.task(obj.method) makes it a task.
        spaces = [getattr(inner, "__globals__", None), caller_globals]
        module = sys.modules.get(getattr(type(owner), "__module__", "") or "")
        if module is not None:
            spaces.append(vars(module))
        for space in spaces:
            if space is not None and any(value is owner for value in space.values()):
                return None
        return "a method of an object that is not a module-level global (e.g. a per-request one)"
    if _reachable(func):
        return None  # e.g. a module-level function wrapped by functools.lru_cache
    return "a callable object, not a function"


def _reachable(obj: Any) -> bool:
    """``obj`` is what its module's attribute path ``__qualname__`` names."""
    qualname = getattr(obj, "__qualname__", None)
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    if module is None or not isinstance(qualname, str) or "<locals>" in qualname:
        return False
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            return False
    return target is obj


def _registered(manager: TaskManager, func: Any) -> bool:
    """``func`` was registered with ``@tm.task`` (not merely seen by an ``add_task``)."""
    registry = manager.registry
    try:
        defn = registry.get(task_name(func))
    except ConfigurationError:
        defn = None
    if defn is not None and defn.explicit and (defn.fn is func or defn.fn == func):
        return True
    # @tm.task(name="...") files it under another name: look for the function itself
    for name in registry.names():
        other = registry.get(name)
        if other is not None and other.explicit and other.fn is func:
            return True
    return False


def _warn_once(func: Any, reason: str) -> None:
    try:
        name = task_name(func)
    except ConfigurationError:
        name = f"a {type(func).__qualname__} object"
    if name in _warned:
        return
    _warned.add(name)
    log.warning(
        "BackgroundTasks.add_task(%s): not a durable anytask task, because it is %s. "
        "anytask runs a task by its name, possibly after a restart or in another process, "
        "so it must find the same callable again by that name, and it cannot find this "
        "one. It runs in this process after the response instead (Starlette's "
        "behaviour; add_task returns None). To make it durable, pass a module-level "
        "function (with its data as arguments) or register the function with @tm.task.",
        name,
        reason,
    )


def install() -> None:
    """Make FastAPI inject :class:`ManagedBackgroundTasks` (idempotent)."""
    import fastapi.dependencies.utils as utils

    current = getattr(utils, "BackgroundTasks", None)
    if current is ManagedBackgroundTasks:
        return
    if current is not BackgroundTasks:
        raise RuntimeError(
            "anytask cannot manage BackgroundTasks: fastapi.dependencies.utils.BackgroundTasks "
            f"is {current!r}; use Depends(tm.get_tasks) instead"
        )
    utils.BackgroundTasks = ManagedBackgroundTasks  # type: ignore[attr-defined]


def split_root(scope: Scope) -> tuple[str, str]:
    """``(root_path, route path)`` of an HTTP scope; the path the browser sees is the two
    joined. The ASGI spec says ``path`` includes ``root_path`` (uvicorn and httpx's
    ASGITransport do that, and Starlette's ``Mount`` keeps the full path); older servers,
    and ``FastAPI(root_path=...)`` behind a prefix-stripping proxy, leave it out. Like
    Starlette's routing, strip the root only where the path starts with it."""
    root: str = (scope.get("root_path") or "").rstrip("/")
    path: str = scope.get("path", "")
    if root and (path == root or path.startswith(root + "/")):
        return root, path[len(root) :]
    return root, path


def current_manager() -> TaskManager | None:
    """The manager of the TaskAdmin app handling the current request, if any."""
    return _current.get()


class TaskMiddleware:
    """Per request: make the manager current, hold the tasks the request adds until its
    response starts, then let them go and wait until they are committed before passing
    the start on (acknowledged means durable); a request that ends without a response
    drops what it held. Adds security headers to the admin's own responses: those whose
    path below the app's root (an ASGI ``root_path``: a mount point or a server's
    ``--root-path``) is under ``prefix``."""

    def __init__(self, app: ASGIApp, manager: TaskManager, prefix: str) -> None:
        self.app = app
        self.manager = manager
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        token = _current.set(self.manager)
        # what this request queues for the group commit; over http, what it adds is held
        # until its response starts (its tasks start after the route returned)
        queued = QueuedHere(
            hold=scope["type"] == "http", manager=self.manager, outer=_queued_here.get()
        )
        queued_token = _queued_here.set(queued)
        try:
            if scope["type"] == "http":
                path = split_root(scope)[1]
                admin = path == self.prefix or path.startswith(self.prefix + "/")
                await self.app(scope, receive, self._sender(send, admin, queued))
            else:
                await self.app(scope, receive, send)
        finally:
            queued.is_open = False  # code the request started and that outlives it
            _queued_here.reset(queued_token)
            _current.reset(token)
            # no response started through here (the route raised): as with Starlette's
            # background tasks, what it added does not run
            dropped = self.manager._drop_held(queued)
            if dropped:
                log.warning(
                    "anytask: %d task(s) queued by a request to %s were dropped: it ended "
                    "without a response (an error in the route?)",
                    dropped,
                    scope.get("path", "?"),
                )

    def _sender(self, send: Send, admin: bool, queued: QueuedHere) -> Send:
        manager = self.manager
        failed = False

        async def wrapped(message: Message) -> None:
            nonlocal failed
            if failed:
                return
            if message["type"] == "http.response.start":
                # a request that queued tasks: they are let go now, and its response
                # waits for their commit
                manager._release_held(queued, last=True)
                queued.is_open = False
                error: Exception | None = None
                try:
                    if queued.records:
                        await manager._wait_committed(queued.mark)
                except Exception as exc:
                    error = exc
                # the client is told they were not accepted, so they must not run later
                # either (when a stopped manager starts again), unless a write in flight
                # committed them all after all
                if error is not None and await manager._take_back(queued.records):
                    error = None
                if error is not None:  # the tasks are not durable: do not acknowledge
                    failed = True
                    body = json.dumps({"detail": f"queued tasks were not committed: {error}"})
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 503,
                            "headers": [(b"content-type", b"application/json")],
                        }
                    )
                    await send({"type": "http.response.body", "body": body.encode()})
                    return
                if admin:
                    headers = list(message.get("headers", []))
                    headers.extend(_COMMON_HEADERS)
                    ctype = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                    if ctype.startswith(b"text/html"):
                        headers.append((b"content-security-policy", CSP.encode()))
                    elif not any(k.lower() == b"cache-control" for k, _ in headers):
                        # the event stream sets its own: one header, not "no-store, no-store"
                        headers.append((b"cache-control", b"no-store"))
                    message = {**message, "headers": headers}
            await send(message)

        return wrapped


Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


def lifespan(manager: TaskManager, inner: Lifespan | None = None) -> Lifespan:
    """A lifespan for ``FastAPI(lifespan=...)``/``Starlette(lifespan=...)`` that runs
    ``manager`` around ``inner`` (the app's own lifespan, if any).

    Two ways of running the manager both work, so the order is:

    1. ``inner``'s startup runs first. It may run the manager itself (``async with tm:``
       around its ``yield``); starting it first here would make that fail with "already
       running". It may also queue tasks with ``tm.add_task``: they wait in the manager's
       buffer and are committed as soon as it starts.
    2. If the manager is still idle then, it is started here, in a task of its own, before
       the app serves its first request.
    3. On shutdown ``inner``'s shutdown runs first, with the manager still running (it may
       queue tasks too); then the manager is stopped, and only if it was started here.

    Running the manager in its own task, rather than entering it between ``inner``'s
    startup and shutdown, keeps the cancel scopes of ``inner`` (a task group around its
    ``yield``, say) and of the manager properly nested. Startup code that needs a running
    manager (``await tm.enqueue``, ``tm.wait``, store queries) should run it itself with
    ``async with tm:``.
    """

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[Any]:
        owned = False
        error: Exception | None = None
        async with anyio.create_task_group() as tg:
            try:
                async with inner(app) if inner is not None else nullcontext() as state:
                    if manager.state is RunState.IDLE:  # else someone else runs it
                        await tg.start(manager.run)  # returns once it is running
                        owned = True
                    yield state
            except Exception as exc:
                # raised below, after the manager stopped gracefully: inside the task
                # group it would cancel the manager and come out wrapped in an ExceptionGroup
                error = exc
            finally:
                if owned:
                    manager.stop()
        if error is not None:
            raise error

    run.__anytask_manager__ = manager  # type: ignore[attr-defined]
    return run
