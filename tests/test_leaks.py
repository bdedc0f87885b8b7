"""Resource leaks found by a soak run: collections that grew with the number of tasks
processed (not with the number pending). Each test counts a collection after N tasks."""

from __future__ import annotations

import gc
import uuid
from datetime import UTC, datetime, timedelta

import anyio
import anyio.lowlevel
import pytest

from anytask import MemoryStore, SQLiteStore, TaskManager, TaskNotFound, TaskStatus
from anytask._models import Outcome, TaskRecord

pytestmark = pytest.mark.anyio

N = 50


async def quick() -> None:
    await anyio.lowlevel.checkpoint()


async def slow() -> None:
    await anyio.sleep(30)


def _events() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, anyio.Event))


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
async def test_wait_leaves_no_waiter_behind(store_kind: str, db_path: str) -> None:
    """Every wait() on a task that had ended already, that timed out, that was not found
    or that was cancelled left its anyio.Event in TaskManager._waiters for as long as the
    manager ran (only a task reaching its end while waited for removed it)."""
    store = MemoryStore() if store_kind == "memory" else SQLiteStore(db_path)
    tm = TaskManager(store=store, poll_interval=0.05, shutdown_grace=0.1)
    tm.task(quick)
    tm.task(slow)
    async with tm:
        ended = [await tm.enqueue(quick) for _ in range(N)]
        await tm.join(timeout=10)
        baseline = _events()
        for task_id in ended:  # ended already: returned at once
            assert (await tm.wait(task_id, timeout=5)).status is TaskStatus.SUCCESS
        running = await tm.enqueue(slow)
        for _ in range(N):  # timed out
            with pytest.raises(TimeoutError):
                await tm.wait(running, timeout=0.001)
        for i in range(N):  # unknown
            with pytest.raises(TaskNotFound):
                await tm.wait(f"no-such-task-{i}", timeout=1)
        for _ in range(5):  # cancelled from outside
            with anyio.move_on_after(0.01):
                await tm.wait(running)
        assert tm._waiters == {}
        assert tm._waiting == {}
        # (not one per call: 155 calls above; the runtime's own events come and go)
        assert _events() - baseline < N // 2
        # two callers waiting for one task: one leaving does not take the other's wake-up
        async with anyio.create_task_group() as tg:
            got: list[TaskStatus] = []

            async def waiter() -> None:
                got.append((await tm.wait(running, timeout=10)).status)

            tg.start_soon(waiter)
            await anyio.sleep(0.05)
            with pytest.raises(TimeoutError):
                await tm.wait(running, timeout=0.01)
            assert running in tm._waiters  # still there for the other caller
            await tm.cancel(running)
        assert got == [TaskStatus.CANCELLED]
        assert tm._waiters == {}
        assert tm._waiting == {}


T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def _record(i: int, run_after: datetime = T0) -> TaskRecord:
    return TaskRecord(
        id=uuid.uuid4().hex, name="job", args=[i], kwargs={}, created_at=T0, run_after=run_after
    )


async def test_sqlite_cancelled_pending_tasks_are_forgotten(db_path: str) -> None:
    """SQLiteStore remembers each fresh insert until its claim (``_inserted_here``); a
    task cancelled while pending is never claimed, so its entry stayed (up to 20,000 of
    them, then the whole map was cleared): one per cancelled task."""
    store = SQLiteStore(db_path)
    await store.open()
    try:
        records = [_record(i, run_after=T0 + timedelta(hours=1)) for i in range(N)]
        await store.insert(records)
        assert len(store._inserted_here) == N
        for rec in records:
            assert await store.cancel(rec.id, T0) is TaskStatus.CANCELLED
        assert len(store._inserted_here) == 0
    finally:
        await store.close()


@pytest.mark.parametrize("limit", [None, 7])
async def test_sqlite_purged_tasks_are_forgotten(db_path: str, limit: int | None) -> None:
    """Tasks inserted by one instance and run by another (sharing the file) are never
    claimed by the first: purging them must drop what the first remembered of them."""
    mine, other = SQLiteStore(db_path), SQLiteStore(db_path)
    await mine.open()
    await other.open()
    try:
        await mine.insert([_record(i) for i in range(N)])
        assert len(mine._inserted_here) == N
        claimed = await other.claim("other", N, T0, T0 + LEASE)
        assert len(claimed) == N
        ended = T0 + timedelta(seconds=1)
        await other.complete(
            [Outcome(r.id, r.token, TaskStatus.SUCCESS, ended, seq=r.seq) for r in claimed]
        )
        deleted = 0
        while True:
            n = await mine.purge(T0 + timedelta(hours=1), limit=limit)
            deleted += n
            if limit is None or n < limit:
                break
        assert deleted == N
        assert len(mine._inserted_here) == 0
    finally:
        await other.close()
        await mine.close()


async def test_manager_cancel_while_pending_on_sqlite(db_path: str) -> None:
    """The same through the manager: N delayed tasks cancelled while pending."""
    tm = TaskManager(snapshot_db=db_path, poll_interval=0.05)
    tm.task(quick)
    async with tm:
        for _ in range(N):
            task_id = await tm.enqueue(quick, delay=3600)
            assert await tm.cancel(task_id) is TaskStatus.CANCELLED
        assert len(tm.store._inserted_here) == 0  # type: ignore[attr-defined]
