"""TaskAdmin's lifespan with both ways of running the manager: the app's own lifespan runs
it (``async with tm:``), or TaskAdmin does; on asyncio and trio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from fastapi import BackgroundTasks, FastAPI

from anytask import MemoryStore, RunState, TaskAdmin, TaskManager, TaskStatus
from anytask.fastapi import lifespan as task_lifespan
from fastapi_helpers import lifespan, serve


def _app(tm: TaskManager, own: Any) -> FastAPI:
    app = FastAPI(lifespan=own)
    TaskAdmin(app, tm)

    @tm.task
    async def work(label: str) -> str:
        return label

    @app.post("/work")
    def queue(label: str, bg: BackgroundTasks) -> dict[str, Any]:
        return {"task_id": bg.add_task(work, label)}

    app.state.work = work
    return app


async def test_the_apps_own_async_with_tm_is_left_to_run_the_manager() -> None:
    """The documented pattern: ``async with tm:`` in the app's lifespan, with TaskAdmin's
    default ``manage_lifespan=True``; it used to fail with "already running"."""
    tm = TaskManager(store=MemoryStore())
    seen: list[tuple[str, RunState]] = []

    @asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[None]:
        async with tm:
            seen.append(("startup", tm.state))
            yield
            seen.append(("shutdown", tm.state))  # TaskAdmin did not stop it
        seen.append(("after", tm.state))

    app = _app(tm, own)
    async with serve(app) as client:
        health = await client.get("/tasks/api/health")
        assert health.json()["state"] == "running"
        task_id = (await client.post("/work", params={"label": "x"})).json()["task_id"]
        assert (await tm.wait(task_id, timeout=10)).status is TaskStatus.SUCCESS
    assert seen == [
        ("startup", RunState.RUNNING),
        ("shutdown", RunState.RUNNING),
        ("after", RunState.IDLE),
    ]


async def test_taskadmin_runs_the_manager_around_a_lifespan_with_a_task_group() -> None:
    """TaskAdmin starts the manager after the app's startup and stops it after the app's
    shutdown; the app's own task group around its ``yield`` stays properly nested."""
    tm = TaskManager(store=MemoryStore())
    seen: list[tuple[str, RunState]] = []
    ids: dict[str, str] = {}

    @asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep_forever)
            seen.append(("startup", tm.state))
            ids["startup"] = tm.add_task(app.state.work, "startup")  # buffered until start
            yield
            seen.append(("shutdown", tm.state))
            ids["shutdown"] = tm.add_task(app.state.work, "shutdown")
            tg.cancel_scope.cancel()

    app = _app(tm, own)
    async with serve(app) as client:
        assert tm.state is RunState.RUNNING
        assert (await tm.wait(ids["startup"], timeout=10)).status is TaskStatus.SUCCESS
        task_id = (await client.post("/work", params={"label": "x"})).json()["task_id"]
        assert (await tm.wait(task_id, timeout=10)).status is TaskStatus.SUCCESS
    assert seen == [("startup", RunState.IDLE), ("shutdown", RunState.RUNNING)]
    assert tm.state is RunState.IDLE
    assert tm.store.get(ids["shutdown"]) is not None  # committed before the manager stopped


async def test_a_manager_running_before_the_app_starts_is_left_running() -> None:
    tm = TaskManager(store=MemoryStore())
    app = _app(tm, None)
    async with tm:
        async with lifespan(app):
            assert tm.state is RunState.RUNNING
        assert tm.state is RunState.RUNNING  # not TaskAdmin's to stop
    assert tm.state is RunState.IDLE


async def test_a_failing_startup_reports_its_own_error_and_leaves_the_manager_idle() -> None:
    tm = TaskManager(store=MemoryStore())

    @asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[None]:
        raise ValueError("no database")
        yield  # pragma: no cover

    app = _app(tm, own)
    # Starlette reports the failure to the server, then re-raises it in its lifespan task:
    # the helper's task group collects both
    with pytest.raises(BaseExceptionGroup) as info:
        async with lifespan(app):
            pass  # pragma: no cover
    reported = [str(e) for e in info.value.exceptions if isinstance(e, RuntimeError)]
    assert len(reported) == 1
    assert "startup failed" in reported[0]
    assert "ValueError: no database" in reported[0]
    assert "ExceptionGroup" not in reported[0]  # the app's own error, not wrapped by ours
    assert tm.state is RunState.IDLE


async def test_the_helper_restarts_with_the_app() -> None:
    tm = TaskManager(store=MemoryStore())
    app = FastAPI(lifespan=task_lifespan(tm))
    TaskAdmin(app, tm, manage_lifespan=False)
    for _ in range(2):
        async with lifespan(app):
            assert tm.state is RunState.RUNNING
        assert tm.state is RunState.IDLE
