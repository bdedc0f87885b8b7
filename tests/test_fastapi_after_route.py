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
from anytask._manager import QueuedHere, _queued_here
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


class SlowCommitStore(SQLiteStore):
    """A store whose commits take a while: a response that does not wait for its tasks'
    commit starts before they are in the store."""

    async def write_batch(self, records: Any, outcomes: Any, *args: Any) -> Any:
        if records:
            await anyio.sleep(0.3)
        return await super().write_batch(records, outcomes, *args)


async def test_another_managers_task_goes_to_that_manager(tmp_path: Path) -> None:
    # a route of tm1's app queues a task of tm2 (which has no TaskAdmin): it was held by
    # tm1's request and let go into tm1's store, where nobody knows its function
    tm1 = TaskManager(store=MemoryStore())
    tm2 = TaskManager(store=MemoryStore())
    tm2.task(check_written_async)
    app = FastAPI()
    TaskAdmin(app, tm1)

    @app.post("/other")
    async def other() -> dict[str, Any]:
        written.add("other")
        return {"task_id": tm2.add_task(check_written_async, "other")}

    async with tm2, serve(app) as client:
        task_id = (await client.post("/other")).json()["task_id"]
        await tm1.flush()
        assert (await tm2.wait(task_id, timeout=10)).status is TaskStatus.SUCCESS
        assert await tm1.get(task_id) is None
    assert seen == {"other": True}


async def test_outer_apps_tasks_queued_in_a_mounted_app(tmp_path: Path) -> None:
    # an app with its own TaskAdmin mounted in another one's: its route queues a task of
    # the outer app's manager. It is held for the outer request, goes to the outer
    # manager, and the response waits for its commit (the outer middleware's send runs in
    # the inner request's context)
    outer_tm = TaskManager(store=SlowCommitStore(tmp_path / "outer.db"))
    inner_tm = TaskManager(store=MemoryStore())
    outer_tm.task(check_written_async)
    app = FastAPI()
    TaskAdmin(app, outer_tm)
    sub = FastAPI()
    TaskAdmin(sub, inner_tm)

    @sub.post("/queue")
    async def queue() -> dict[str, Any]:
        task_id = outer_tm.add_task(check_written_async, "mounted")
        await anyio.sleep(0.3)
        written.add("mounted")
        return {"task_id": task_id}

    app.mount("/sub", sub)
    async with inner_tm, serve(app) as client:  # (a mounted app's lifespan is not run)
        response = await client.post("/sub/queue")
        assert response.status_code == 200
        task_id = response.json()["task_id"]
        assert outer_tm.store.get(task_id) is not None  # committed before the response
        assert (await outer_tm.wait(task_id, timeout=10)).status is TaskStatus.SUCCESS
        await inner_tm.flush()
        assert await inner_tm.get(task_id) is None
    assert seen == {"mounted": True}


async def test_released_tasks_count_as_the_requests_that_held_them(tmp_path: Path) -> None:
    # the middleware lets a request's tasks go from its send, which a middleware may call
    # from code that is not the request's (a task of the app's): they must still count as
    # that request's, or its response would not wait for their commit (nor take them back)
    tm = TaskManager(store=SlowCommitStore(tmp_path / "t.db"))
    tm.task(check_written_async)
    async with tm:
        queued = QueuedHere(hold=True, manager=tm)
        token = _queued_here.set(queued)
        try:
            task_id = tm.add_task(check_written_async, "held")
        finally:
            _queued_here.reset(token)
        assert tm.store.get(task_id) is None  # held
        tm._release_held(queued)  # (no request's context here)
        assert [rec.id for rec in queued.records] == [task_id]
        assert queued.mark > 0
        await tm._wait_committed(queued.mark)
        assert tm.store.get(task_id) is not None


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_tasks_added_after_a_lookup_are_still_held(kind: str, tmp_path: Path) -> None:
    # a route that looks a task up (another one: the request's tasks are let go) and then
    # adds one: that one too starts after the route returned (it was queued at once)
    tm = make_manager(kind, tmp_path)
    tm.task(check_written_async)
    app = FastAPI()
    TaskAdmin(app, tm)

    @app.post("/looks-up/{key}")
    async def looks_up(key: str, background_tasks: BackgroundTasks) -> dict[str, Any]:
        assert await tm.get("no-such-task") is None
        await tm.flush()
        task_id = background_tasks.add_task(check_written_async, key)
        await anyio.sleep(0.3)
        written.add(key)
        return {"task_id": task_id}

    async with serve(app) as client:
        response = await client.post("/looks-up/after-get")
        assert response.status_code == 200
        task_id = response.json()["task_id"]
        assert (await tm.wait(task_id, timeout=10)).status is TaskStatus.SUCCESS
    assert seen == {"after-get": True}


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_route_getting_its_task_finds_it(kind: str, tmp_path: Path) -> None:
    # tm.get lets the request's tasks go: and waits for their commit, or a SQLite store
    # did not have the task yet
    tm = make_manager(kind, tmp_path)
    tm.task(check_written_async)
    app = FastAPI()
    TaskAdmin(app, tm)

    @app.post("/gets")
    async def gets(background_tasks: BackgroundTasks) -> dict[str, Any]:
        task_id = background_tasks.add_task(check_written_async, "got")
        assert task_id is not None
        rec = await tm.get(task_id)
        return {"found": rec is not None}

    async with serve(app) as client:
        assert (await client.post("/gets")).json() == {"found": True}
