"""Review of the unregistered-task hand-back (``_ran_elsewhere``) and of the durable-store
refusals as seen through FastAPI's ``BackgroundTasks``."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi import BackgroundTasks, FastAPI

from anytask import SQLiteStore, TaskAdmin, TaskManager, TaskQuery, TaskRecord, TaskStatus
from anytask._models import Page
from fastapi_helpers import serve

pytestmark = pytest.mark.anyio


async def _until(tm: TaskManager, task_id: str, ok: Callable[[TaskRecord], bool]) -> None:
    """Poll the record until ``ok`` holds (at most about 20 s)."""
    for _ in range(400):
        rec = await tm.get(task_id)
        if rec is not None and ok(rec):
            return
        await anyio.sleep(0.05)
    raise AssertionError(f"task {task_id} never got there: {await tm.get(task_id)}")


async def test_tasks_fail_once_the_instance_that_ran_their_name_is_gone(tmp_path: Path) -> None:
    # "has" runs one task of "work", after "lacks" handed another back, and then is gone
    # (a rollback): the handed-back task must fail grace seconds after that last run, not
    # stay pending forever because a run ended "since the first hand-back"
    path = tmp_path / "t.db"
    has = TaskManager(
        store=SQLiteStore(path), instance_id="has", poll_interval=0.05, max_concurrency=1
    )
    lacks = TaskManager(
        store=SQLiteStore(path),
        instance_id="lacks",
        poll_interval=0.05,
        max_concurrency=1,
        unregistered_grace=1,
    )
    gate = anyio.Event()

    @has.task(name="work")
    async def work(n: int) -> None:
        if n == 1:
            await gate.wait()

    async with lacks:
        async with has:
            first = await has.enqueue("work", 1)
            await _until(has, first, lambda r: r.status is TaskStatus.RUNNING)
            # "has" is busy: only "lacks" claims this one, and hands it back
            second = await has.enqueue("work", 2)
            await _until(has, second, lambda r: r.error_type == "TaskNotRegistered")
            gate.set()  # the run of "work" ends after the first hand-back...
            has.stop()  # ...and "has" is gone (its one slot held "first" until now)
        ran = await lacks.wait(first, timeout=20)
        assert ran.status is TaskStatus.SUCCESS
        with anyio.fail_after(20):  # about 1 to 6 s (a look is cached for 5 s)
            dead = await lacks.wait(second)
    assert dead.status is TaskStatus.FAILED
    assert dead.error_type == "TaskNotRegistered"


class _SlowList(SQLiteStore):
    """A store whose reads take a while (a busy reader pool, a store over the network)."""

    entered: anyio.Event | None = None

    async def list(self, query: TaskQuery) -> Page:
        if self.entered is not None:
            self.entered.set()
        await anyio.sleep(0.5)
        return await super().list(query)


async def test_a_manager_torn_down_while_it_looks_for_runs_elsewhere_leaves_no_task_running(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    other = TaskManager(store=SQLiteStore(path), poll_interval=0.05)

    @other.task(name="only_elsewhere")
    def only_elsewhere() -> None:
        pass

    ghost = other.add_task(only_elsewhere, delay=0.2)
    async with other:
        await other.flush()
        other.stop()
    store = _SlowList(path)
    store.entered = anyio.Event()
    # grace 0: the first claim looks for runs elsewhere (a store read) before failing it
    tm = TaskManager(store=store, poll_interval=0.05, unregistered_grace=0, shutdown_grace=0.5)
    async with anyio.create_task_group() as tg:
        await tg.start(tm.run)
        with anyio.fail_after(20):
            await store.entered.wait()
        tg.cancel_scope.cancel()  # torn down (not stopped) during that read
    with sqlite3.connect(path) as conn:
        status, owner = conn.execute(
            "SELECT status, owner FROM anytask_tasks WHERE id = ?", (ghost,)
        ).fetchone()
    conn.close()
    # it had been claimed; the teardown must not leave it "running" under a lease of a
    # manager that is gone (recovered later as interrupted: a task that never ran)
    assert (status, owner) == ("failed", None)


class Mailer:
    send = lambda self, to: _SENT.append(to)  # noqa: E731 - the pattern under test


_SENT: list[str] = []
mailer = Mailer()


async def test_background_tasks_hands_a_lambda_method_to_starlette(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a durable store's add_task refuses a lambda; BackgroundTasks must keep Starlette's
    # behaviour for it (a 500 before), also when the lambda is a method of a module-level
    # object
    tm = TaskManager(snapshot_db=str(tmp_path / "t.db"), poll_interval=0.05)
    app = FastAPI()
    TaskAdmin(app, tm, auth=("a", "b"), secret="s" * 32)

    @app.post("/send")
    def send(background_tasks: BackgroundTasks) -> dict[str, Any]:
        return {"id": background_tasks.add_task(mailer.send, "a@example.com")}

    _SENT.clear()
    with caplog.at_level(logging.WARNING, logger="anytask"):
        async with serve(app) as client:
            response = await client.post("/send")
    assert response.status_code == 200
    assert response.json() == {"id": None}
    assert _SENT == ["a@example.com"]
