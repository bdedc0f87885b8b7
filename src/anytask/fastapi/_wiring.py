"""How anytask plugs into an ASGI app: the per-request middleware, managed
``BackgroundTasks`` and the lifespan.

FastAPI builds the ``BackgroundTasks`` it injects by calling the name ``BackgroundTasks``
in ``fastapi.dependencies.utils`` (0.100 to 0.165 at least). :func:`install` points that
name at :class:`ManagedBackgroundTasks`, a subclass whose ``add_task`` looks up the task
manager of the *current request* in a context variable set by :class:`TaskMiddleware`.
Requests of apps without a ``TaskAdmin`` see no manager and get the stock behaviour
(Starlette runs the function after the response and ``add_task`` returns None). With a
manager, the task goes to anytask only: it is never also in Starlette's list, so it
cannot run twice.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from typing import Any, ParamSpec

from fastapi import BackgroundTasks
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._manager import RunState, TaskManager

__all__ = ["ManagedBackgroundTasks", "TaskMiddleware", "install", "lifespan"]

P = ParamSpec("P")

_current: ContextVar[TaskManager | None] = ContextVar("anytask_request_manager", default=None)

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
    """``BackgroundTasks`` whose ``add_task`` returns a task id inside a TaskAdmin app."""

    def add_task(  # type: ignore[override]
        self, func: Callable[P, Any], *args: P.args, **kwargs: P.kwargs
    ) -> str | None:
        manager = _current.get()
        if manager is None:
            super().add_task(func, *args, **kwargs)
            return None
        return manager.add_task(func, *args, **kwargs)


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


def current_manager() -> TaskManager | None:
    """The manager of the TaskAdmin app handling the current request, if any."""
    return _current.get()


class TaskMiddleware:
    """Per request: make the manager current, and before the response starts, wait until
    every task queued so far is committed (acknowledged means durable). Adds security
    headers to the admin's own responses."""

    def __init__(self, app: ASGIApp, manager: TaskManager, prefix: str) -> None:
        self.app = app
        self.manager = manager
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        token = _current.set(self.manager)
        try:
            if scope["type"] == "http":
                path: str = scope.get("path", "")
                admin = path == self.prefix or path.startswith(self.prefix + "/")
                await self.app(scope, receive, self._sender(send, admin))
            else:
                await self.app(scope, receive, send)
        finally:
            _current.reset(token)

    def _sender(self, send: Send, admin: bool) -> Send:
        manager = self.manager
        failed = False

        async def wrapped(message: Message) -> None:
            nonlocal failed
            if failed:
                return
            if message["type"] == "http.response.start":
                try:
                    await manager.flush()
                except Exception as exc:  # the tasks are not durable: do not acknowledge
                    failed = True
                    body = json.dumps({"detail": f"queued tasks were not committed: {exc}"})
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
                    else:
                        headers.append((b"cache-control", b"no-store"))
                    message = {**message, "headers": headers}
            await send(message)

        return wrapped


Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


def lifespan(manager: TaskManager, inner: Lifespan | None = None) -> Lifespan:
    """A lifespan for ``FastAPI(lifespan=...)``/``Starlette(lifespan=...)`` that runs
    ``manager`` around ``inner`` (the app's own lifespan, if any): the manager starts
    first and stops last, so the app's startup and shutdown code can queue tasks."""

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[Any]:
        async with _running(manager):
            if inner is None:
                yield None
            else:
                async with inner(app) as state:
                    yield state

    run.__anytask_manager__ = manager  # type: ignore[attr-defined]
    return run


@asynccontextmanager
async def _running(manager: TaskManager) -> AsyncIterator[None]:
    if manager.state is not RunState.IDLE:  # started by someone else: leave it to them
        yield
        return
    async with manager:
        yield
