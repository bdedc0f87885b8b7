"""Routes keep their signatures: BackgroundTasks and Depends(tm.get_tasks) return task
ids, sync and async routes alike; the manager runs with the app's lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import BackgroundTasks, Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from anytask import MemoryStore, RunState, TaskAdmin, TaskManager, TaskStatus
from fastapi_helpers import lifespan, serve

PLAIN_CALLS: list[str] = []


def plain_note(value: str) -> None:
    """Module-level and not decorated: still a durable task (anytask finds it by name)."""
    PLAIN_CALLS.append("plain:" + value)


def make_app() -> tuple[FastAPI, TaskManager, list[str]]:
    tm = TaskManager(store=MemoryStore())
    app = FastAPI()
    TaskAdmin(app, tm)
    calls: list[str] = []
    PLAIN_CALLS.clear()

    @tm.task(retries=1)
    async def note(value: str) -> str:
        calls.append(value)
        return value

    @app.post("/sync-bg")
    def sync_bg(value: str, background_tasks: BackgroundTasks) -> dict[str, Any]:
        return {"task_id": background_tasks.add_task(note, value)}

    @app.post("/async-bg")
    async def async_bg(value: str, background_tasks: BackgroundTasks) -> dict[str, Any]:
        return {"task_id": background_tasks.add_task(plain_note, value=value)}

    @app.post("/sync-dep")
    def sync_dep(value: str, tasks: Any = Depends(tm.get_tasks)) -> dict[str, Any]:  # noqa: B008
        return {"task_id": tasks.add_task(note, value, priority=9)}

    @app.post("/async-dep")
    async def async_dep(value: str, tasks: Any = Depends(tm.get_tasks)) -> dict[str, Any]:  # noqa: B008
        return {"task_id": tasks.add_task(note, value=value)}

    return app, tm, calls


async def test_every_injection_style_returns_a_task_id_that_runs_once() -> None:
    app, tm, calls = make_app()
    async with serve(app) as client:
        ids = []
        for path in ("/sync-bg", "/async-bg", "/sync-dep", "/async-dep"):
            response = await client.post(path, params={"value": path})
            assert response.status_code == 200
            ids.append(response.json()["task_id"])
        for task_id in ids:
            record = await tm.wait(task_id, timeout=10)
            assert record.status is TaskStatus.SUCCESS
        await anyio.sleep(0.05)  # Starlette's own background runner would run by now
    assert sorted(calls + PLAIN_CALLS) == sorted(
        ["/sync-bg", "plain:/async-bg", "/sync-dep", "/async-dep"]
    )
    assert tm.store.get(ids[2]).priority == 9


async def test_the_task_is_in_the_store_when_the_response_arrives() -> None:
    tm = TaskManager(store=MemoryStore())
    app = FastAPI()
    TaskAdmin(app, tm)

    @tm.task(delay=1)
    def slow() -> None:
        pass

    @app.post("/go")
    def go(background_tasks: BackgroundTasks) -> dict[str, Any]:
        return {"task_id": background_tasks.add_task(slow, delay=3600)}

    async with serve(app) as client:
        task_id = (await client.post("/go")).json()["task_id"]
        record = tm.store.get(task_id)  # no flush, no wait: already committed
        assert record is not None
        assert record.status is TaskStatus.PENDING


async def test_an_app_without_taskadmin_keeps_stock_background_tasks() -> None:
    tm = TaskManager(store=MemoryStore())
    TaskAdmin(FastAPI(), tm)  # installs the managed class for TaskAdmin apps only
    plain = FastAPI()
    ran: list[str] = []

    @plain.post("/stock")
    def stock(background_tasks: BackgroundTasks) -> dict[str, Any]:
        return {"returned": background_tasks.add_task(ran.append, "x")}

    async with serve(plain) as client:
        response = await client.post("/stock")
    assert response.json() == {"returned": None}
    assert ran == ["x"]
    assert await tm.store.count() == 0


async def test_the_apps_own_lifespan_starts_first_and_its_tasks_are_committed() -> None:
    """TaskAdmin starts the manager once the app's own startup is done (so that startup
    could run it itself); tasks queued at startup wait in the buffer and are committed
    when it starts, tasks queued at shutdown are committed before it stops."""
    tm = TaskManager(store=MemoryStore())
    seen: list[tuple[str, RunState]] = []

    @tm.task
    async def at_startup() -> None:
        pass

    @asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[None]:
        seen.append(("startup", tm.state))
        app.state.startup_task = tm.add_task(at_startup)
        yield
        seen.append(("shutdown", tm.state))
        app.state.shutdown_task = tm.add_task(at_startup)

    app = FastAPI(lifespan=own)
    TaskAdmin(app, tm)
    async with lifespan(app):
        assert tm.state is RunState.RUNNING
        record = await tm.wait(app.state.startup_task, timeout=10)
        assert record.status is TaskStatus.SUCCESS
    assert seen == [("startup", RunState.IDLE), ("shutdown", RunState.RUNNING)]
    assert tm.state is RunState.IDLE
    assert tm.store.get(app.state.shutdown_task) is not None


async def test_the_lifespan_helper_wires_the_manager_without_wrapping_twice() -> None:
    from anytask.fastapi import lifespan as task_lifespan

    tm = TaskManager(store=MemoryStore())
    app = FastAPI(lifespan=task_lifespan(tm))
    TaskAdmin(app, tm)
    assert getattr(app.router.lifespan_context, "__anytask_manager__", None) is tm
    async with lifespan(app):
        assert tm.state is RunState.RUNNING
    assert tm.state is RunState.IDLE


async def test_a_plain_starlette_app_gets_the_api_and_durable_responses() -> None:
    tm = TaskManager(store=MemoryStore())

    @tm.task
    async def work(n: int) -> int:
        return n * 2

    async def enqueue(request: Request) -> JSONResponse:
        tasks = await tm.get_tasks()
        return JSONResponse({"task_id": tasks.add_task(work, 21)})

    app = Starlette(routes=[Route("/work", enqueue, methods=["POST"])])
    TaskAdmin(app, tm)
    async with serve(app) as client:
        task_id = (await client.post("/work")).json()["task_id"]
        assert tm.store.get(task_id) is not None
        await tm.wait(task_id, timeout=10)
        detail = await client.get(f"/tasks/api/tasks/{task_id}")
        assert detail.status_code == 200
        assert detail.json()["result"] == 42
        short = await client.get(f"/tasks/{task_id}")
        assert short.json()["status"] == "success"


async def test_a_response_is_refused_when_its_tasks_cannot_be_committed() -> None:
    tm = TaskManager(store=MemoryStore())
    app = FastAPI()
    TaskAdmin(app, tm, manage_lifespan=False)  # and nobody starts the manager

    @app.post("/go")
    def go(background_tasks: BackgroundTasks) -> dict[str, Any]:
        return {"task_id": background_tasks.add_task(print, "never acknowledged")}

    @app.get("/plain")
    def plain() -> dict[str, str]:
        return {"queued": "nothing"}

    async with serve(app) as client:
        response = await client.post("/go")
        # a request that queued nothing is not refused for the one that did
        other = await client.get("/plain")
        again = await client.post("/go")
    assert response.status_code == 503
    assert "not committed" in response.json()["detail"]
    assert other.status_code == 200
    assert again.status_code == 503
    # the client was told the task was not accepted: it must not run once tm starts, and
    # what other code queued meanwhile still is committed
    kept = tm.add_task(print, "queued outside a request")
    async with tm:
        await tm.join(timeout=5)
        assert sum((await tm.counts()).values()) == 1
        assert (await tm.wait(kept, timeout=5)).status.value == "success"


def test_anytask_imports_without_fastapi() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['fastapi'] = None\n"
        "import anytask\n"
        "assert anytask.TaskManager\n"
        "try:\n"
        "    anytask.TaskAdmin\n"
        "except ImportError:\n"
        "    print('lazy')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "lazy"


async def test_current_manager_is_the_requests_manager() -> None:
    from anytask.fastapi import current_manager

    tm = TaskManager(store=MemoryStore())
    app = FastAPI()
    TaskAdmin(app, tm)

    @app.get("/who")
    def who() -> dict[str, bool]:
        return {"mine": current_manager() is tm}

    async with serve(app) as client:
        assert (await client.get("/who")).json() == {"mine": True}
    assert current_manager() is None


async def test_the_event_stream_ends_after_sse_max_age_so_shutdown_is_not_held() -> None:
    from fastapi import FastAPI

    from anytask import MemoryStore, TaskAdmin, TaskManager

    tm = TaskManager(store=MemoryStore())
    app = FastAPI()
    TaskAdmin(app, tm, sse_ping=0.1, sse_max_age=0.4)
    async with serve(app) as client:
        started = anyio.current_time()
        with anyio.fail_after(10):
            response = await client.get("/tasks/api/events")
        elapsed = anyio.current_time() - started
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.startswith(": ok\nretry: 1000\n")
    assert ": ping" in response.text
    assert 0.3 <= elapsed < 5
