"""Helpers for in-process FastAPI/Starlette tests: run an app's ASGI lifespan and talk
to it with httpx over the ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx

BASE = "http://testserver"
#: The admin's routes that read task data (the event stream aside), with ids that exist
#: nowhere.
DATA_READS = [
    "/tasks/api/tasks",
    "/tasks/api/tasks/some-id",
    "/tasks/some-id",
    "/tasks/api/dead-letters",
    "/tasks/api/metrics",
    "/tasks/api/schedules",
]


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Send ``lifespan.startup`` and, on exit, ``lifespan.shutdown`` as a server would."""
    to_app, app_receive = anyio.create_memory_object_stream[dict[str, Any]](4)
    app_send, from_app = anyio.create_memory_object_stream[dict[str, Any]](4)
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    with to_app, app_receive, app_send, from_app:
        async with anyio.create_task_group() as tg:
            tg.start_soon(app, scope, app_receive.receive, app_send.send)
            await to_app.send({"type": "lifespan.startup"})
            message = await from_app.receive()
            if message["type"] != "lifespan.startup.complete":
                raise RuntimeError(f"startup failed: {message}")
            try:
                yield
            finally:
                await to_app.send({"type": "lifespan.shutdown"})
                message = await from_app.receive()
                if message["type"] != "lifespan.shutdown.complete":
                    raise RuntimeError(f"shutdown failed: {message}")


@asynccontextmanager
async def serve(
    app: Any, *, root_path: str = "", **client_options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and an httpx client talking to it. With
    ``root_path``, as a server run with ``--root-path`` serves it: request paths include
    the root path (``/admin/tasks/...``) and the scope's ``root_path`` says so."""
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app, root_path=root_path)
        async with httpx.AsyncClient(
            transport=transport, base_url=BASE, **client_options
        ) as client:
            yield client


async def csrf(client: httpx.AsyncClient, prefix: str = "/tasks") -> dict[str, str]:
    """Headers that make a state-changing request acceptable (same origin + CSRF)."""
    response = await client.get(f"{prefix}/api/session")
    response.raise_for_status()
    return {"origin": BASE, "x-csrf-token": response.json()["csrf_token"]}
