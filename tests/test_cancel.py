"""cancel() and what it publishes, on both stores.

* A task just queued with add_task (its group commit still on its way) is cancelled at
  once and never starts (docs/runtime.md, "Queries and control"); on SQLite the commit
  that wrote it also claimed it and handed it to a worker before cancel() went on.
* Cancelling a pending task publishes a "finished" event (status cancelled), as
  cancelling a running one does, and only once, also when the clock has not moved since
  the first cancel (a virtual or a coarse clock).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from anytask import MemoryStore, SQLiteStore, TaskManager, TaskStatus
from anytask._clock import Clock

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


async def test_cancel_pending_publishes_finished(store: MemoryStore | SQLiteStore) -> None:
    tm = TaskManager(store=store)

    @tm.task
    async def job() -> int:
        return 1

    seen: list[tuple[str, str, str]] = []
    async with tm, tm.events.subscribe() as events:
        tid = await tm.enqueue(job, delay=60)
        assert await tm.cancel(tid) is TaskStatus.CANCELLED
        assert await tm.cancel(tid) is TaskStatus.CANCELLED  # a second time: no event
        with anyio.move_on_after(0.3):
            async for event in events:
                seen.append((event.task_id, event.kind, event.status))
    assert seen == [(tid, "enqueued", "pending"), (tid, "finished", "cancelled")]


class FixedClock(Clock):
    def time(self) -> float:
        return 1_700_000_000.0


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_second_cancel_at_the_same_time_publishes_nothing(kind: str, tmp_path: Path) -> None:
    store = MemoryStore() if kind == "memory" else SQLiteStore(str(tmp_path / "t.db"))
    tm = TaskManager(store=store, clock=FixedClock())

    @tm.task
    async def job() -> int:
        return 1

    seen: list[tuple[str, str]] = []
    async with tm, tm.events.subscribe() as events:
        tid = await tm.enqueue(job, delay=60)
        assert await tm.cancel(tid) is TaskStatus.CANCELLED
        assert await tm.cancel(tid) is TaskStatus.CANCELLED
        with anyio.move_on_after(0.3):
            async for event in events:
                seen.append((event.kind, event.status))
    assert seen == [("enqueued", "pending"), ("finished", "cancelled")]
