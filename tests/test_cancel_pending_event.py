"""Cancelling a pending task publishes a "finished" event (status cancelled), as
cancelling a running one does: docs/runtime.md "Events" and docs/dashboard.md ("Every
committed change of a task ... arrives as a small event"). Before, a pending task
cancelled by tm.cancel() published nothing, so a live dashboard kept showing it pending."""

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
