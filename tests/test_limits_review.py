"""Payloads bigger than the store holds: SQLite refuses a row longer than its length limit
(1e9 bytes by default; lowered here so that the tests stay small). Such a row must not
fail the group commit that holds it, and every later write with it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi import FastAPI

from anytask import PayloadError, TaskManager, task_log
from anytask.fastapi import TaskAdmin
from anytask.stores.memory import MemoryStore
from anytask.stores.sqlite import SQLiteStore
from fastapi_helpers import serve

pytestmark = pytest.mark.anyio

LIMIT = 200_000  # SQLite's SQLITE_LIMIT_LENGTH for these tests


@pytest.fixture
def small_sqlite(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    connect = SQLiteStore._connect

    def limited(self: SQLiteStore, *, reader: bool) -> sqlite3.Connection:
        conn = connect(self, reader=reader)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, LIMIT)
        return conn

    monkeypatch.setattr(SQLiteStore, "_connect", limited)
    return tmp_path / "tasks.db"


async def _still_writes(tm: TaskManager) -> None:
    @tm.task(name="small")
    async def small() -> int:
        return 1

    with anyio.fail_after(30):
        record = await tm.wait(await tm.enqueue(small))
    assert record.status.value == "success"


async def test_too_big_result_is_not_stored_and_writes_go_on(small_sqlite: Path) -> None:
    tm = TaskManager(snapshot_db=small_sqlite)

    @tm.task()
    async def big() -> str:
        return "x" * LIMIT

    async with tm:
        with anyio.fail_after(30):
            record = await tm.wait(await tm.enqueue(big))
        assert record.status.value == "success"
        assert record.result is None
        assert "result not stored" in record.logs[-1]["msg"]
        assert "bytes as JSON" in record.logs[-1]["msg"]
        await _still_writes(tm)


async def test_too_big_error_and_traceback_are_cut(small_sqlite: Path) -> None:
    tm = TaskManager(snapshot_db=small_sqlite)

    @tm.task()
    async def fails() -> None:
        raise ValueError("e" * LIMIT)

    async with tm:
        with anyio.fail_after(30):
            record = await tm.wait(await tm.enqueue(fails))
        assert record.status.value == "failed"
        assert record.error is not None
        assert record.traceback is not None
        assert record.error.startswith("eeee")
        assert record.error.endswith("more characters not stored]")
        assert len(record.error) < LIMIT // 4
        assert record.traceback.endswith("more characters not stored]")
        await _still_writes(tm)


async def test_too_big_logs_are_cut(small_sqlite: Path) -> None:
    tm = TaskManager(snapshot_db=small_sqlite)

    @tm.task()
    async def chatty() -> int:
        for _ in range(100):
            task_log("l" * 2000)
        return 2

    async with tm:
        with anyio.fail_after(30):
            record = await tm.wait(await tm.enqueue(chatty))
        assert record.status.value == "success"
        assert record.result == 2
        assert 0 < len(record.logs) < 100
        assert "log lines not stored" in record.logs[-1]["msg"]
        await _still_writes(tm)


async def test_too_big_argument_is_refused_at_enqueue(small_sqlite: Path) -> None:
    tm = TaskManager(snapshot_db=small_sqlite)

    @tm.task()
    async def f(*args: Any, **kwargs: Any) -> int:
        return 1

    async with tm:
        with pytest.raises(PayloadError, match=r"argument 1: .*more than the store takes"):
            tm.add_task(f, "a", "x" * LIMIT)
        with pytest.raises(PayloadError, match=r"argument 'data'"):
            await tm.enqueue(f, data=["y" * 1000] * (LIMIT // 1000), priority=3)
        with pytest.raises(PayloadError, match="idempotency_key"):
            await tm.enqueue(f, idempotency_key="k" * LIMIT)
        with pytest.raises(PayloadError):
            await tm.enqueue_many([(f, (), {}), (f, ("z" * LIMIT,), {})])
        await _still_writes(tm)
        assert await tm.store.count() == 1  # the small task only


async def test_memory_store_has_no_limit() -> None:
    tm = TaskManager(store=MemoryStore())

    @tm.task()
    async def echo(x: str) -> str:
        return x

    async with tm:
        with anyio.fail_after(30):
            record = await tm.wait(await tm.enqueue(echo, "x" * 2_000_000))
        assert record.result == "x" * 2_000_000


async def test_list_cuts_long_errors_the_detail_keeps_them() -> None:
    tm = TaskManager(store=MemoryStore())

    @tm.task()
    async def fails() -> None:
        raise ValueError("e" * 100_000)

    app = FastAPI()
    TaskAdmin(app, tm)
    async with serve(app) as client:
        task_id = await tm.enqueue(fails)
        with anyio.fail_after(30):
            await tm.wait(task_id)
        for path in ("/tasks/api/tasks", "/tasks/api/dead-letters"):
            page = (await client.get(path)).json()
            error = page["items"][0]["error"]
            assert error.startswith("eee")
            assert error.endswith("…")
            assert len(error) <= 1001
        detail = (await client.get(f"/tasks/api/tasks/{task_id}")).json()
        assert detail["error"] == "e" * 100_000
