"""A request's tasks start after its route has returned, as Starlette's background tasks
do: a task that reads what the route writes finds it. They are still committed before the
response starts (acknowledged means durable). A route that fails before its response
drops what it added; a route that asks for one of its tasks gets it."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException

from anytask import MemoryStore, SQLiteStore, TaskAdder, TaskAdmin, TaskManager, TaskStatus
from fastapi_helpers import serve

pytestmark = pytest.mark.anyio

# what the routes "write" (a stand-in for the app's database) and what the tasks saw
written: set[str] = set()
seen: dict[str, bool] = {}


def check_written(key: str) -> None:
    seen[key] = key in written


async def check_written_async(key: str) -> None:
    seen[key] = key in written


async def slow(key: str) -> None:
    seen[key] = True
    await anyio.sleep(30)


def make_manager(kind: str, tmp_path: Path) -> TaskManager:
    store = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "t.db")
    return TaskManager(store=store)


@pytest.fixture(autouse=True)
def _clear() -> None:
    written.clear()
    seen.clear()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_tasks_start_after_the_route_returned(kind: str, tmp_path: Path) -> None:
    tm = make_manager(kind, tmp_path)
    app = FastAPI()
    TaskAdmin(app, tm)

    @app.post("/async/{key}")
    async def async_route(key: str, background_tasks: BackgroundTasks) -> dict[str, Any]:
        task_id = background_tasks.add_task(check_written_async, key)
        await anyio.sleep(0.3)  # time enough for a task that was let go to run
        written.add(key)  # the route's own write, after add_task
        return {"task_id": task_id}

    @app.post("/sync/{key}")
    def sync_route(
        key: str,
        tasks: TaskAdder = Depends(tm.get_tasks),  # noqa: B008
    ) -> dict[str, Any]:
        task_id = tasks.add_task(check_written, key)
        time.sleep(0.3)  # in the threadpool
        written.add(key)
        return {"task_id": task_id}

    @app.post("/direct/{key}")
    async def direct_route(key: str) -> dict[str, Any]:
        task_id = tm.add_task(check_written_async, key)  # the manager's own add_task
        await anyio.sleep(0.3)
        written.add(key)
        return {"task_id": task_id}

    async with serve(app) as client:
        ids = []
        for route in ("async", "sync", "direct"):
            response = await client.post(f"/{route}/{route}-key")
            assert response.status_code == 200
            ids.append(response.json()["task_id"])
            # committed before the response started
            assert tm.store.get(ids[-1]) is not None
        for task_id in ids:
            assert (await tm.wait(task_id, timeout=10)).status is TaskStatus.SUCCESS
    assert seen == {"async-key": True, "sync-key": True, "direct-key": True}


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_route_that_fails_drops_what_it_added(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tm = make_manager(kind, tmp_path)
    app = FastAPI()
    TaskAdmin(app, tm)
    added: list[str] = []

    @app.post("/fails")
    async def fails(background_tasks: BackgroundTasks) -> None:
        added.append(background_tasks.add_task(check_written_async, "never"))
        raise RuntimeError("the route fails after add_task")

    @app.post("/refuses")
    async def refuses(background_tasks: BackgroundTasks) -> None:
        added.append(background_tasks.add_task(check_written_async, "refused"))
        raise HTTPException(409, "conflict")  # a response: its tasks are let go

    caplog.set_level(logging.WARNING, logger="anytask")
    async with serve(app) as client:
        with pytest.raises(RuntimeError):
            await client.post("/fails")
        response = await client.post("/refuses")
        assert response.status_code == 409
        await tm.flush()
        assert await tm.get(added[0]) is None  # never stored
        assert (await tm.wait(added[1], timeout=10)).status is TaskStatus.SUCCESS
        await tm.join(timeout=10)
    assert "never" not in seen
    assert any("were dropped" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_route_asking_for_its_task_gets_it(kind: str, tmp_path: Path) -> None:
    tm = make_manager(kind, tmp_path)
    app = FastAPI()
    TaskAdmin(app, tm)

    @app.post("/waits")
    async def waits(background_tasks: BackgroundTasks) -> dict[str, Any]:
        task_id = background_tasks.add_task(check_written_async, "waited")
        assert task_id is not None
        rec = await tm.wait(task_id, timeout=10)  # lets the request's tasks go
        return {"status": rec.status.value}

    @app.post("/cancels")
    async def cancels(background_tasks: BackgroundTasks) -> dict[str, Any]:
        task_id = background_tasks.add_task(slow, "cancelled")
        assert task_id is not None
        return {"status": (await tm.cancel(task_id)).value, "task_id": task_id}

    async with serve(app) as client:
        assert (await client.post("/waits")).json() == {"status": "success"}
        body = (await client.post("/cancels")).json()
        assert body["status"] == "cancelled"
        rec = await tm.wait(body["task_id"], timeout=10)
        assert rec.status is TaskStatus.CANCELLED
