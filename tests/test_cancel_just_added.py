"""cancel() of a task just queued with add_task (its group commit still on its way) makes
it cancelled at once on every store: it never starts (docs/runtime.md, "Queries and
control"). On SQLite, the commit that wrote it also claimed it and handed it to a worker
before cancel() went on, so it ran."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from anytask import MemoryStore, SQLiteStore, TaskManager, TaskStatus

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> MemoryStore | SQLiteStore:
    if request.param == "memory":
        return MemoryStore()
    return SQLiteStore(str(tmp_path / "tasks.db"))


async def test_cancel_right_after_add_task_never_starts(store: MemoryStore | SQLiteStore) -> None:
    tm = TaskManager(store=store)
    ran: list[int] = []

    @tm.task
    async def job(x: int) -> int:
        ran.append(x)
        return x

    async with tm:
        await anyio.sleep(0.05)  # the workers are idle
        for i in range(5):
            tid = tm.add_task(job, i)
            assert await tm.cancel(tid) is TaskStatus.CANCELLED
            rec = await tm.get(tid)
            assert rec is not None
            assert rec.status is TaskStatus.CANCELLED
        # the manager goes on: a task not cancelled runs
        ok = await tm.enqueue(job, 99)
        assert (await tm.wait(ok, timeout=5)).status is TaskStatus.SUCCESS
        assert not tm._cancel_soon
    assert ran == [99]
