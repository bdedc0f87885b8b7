"""Taking back refused tasks (a failed enqueue_many, a 503 response) never cancels a task
that an earlier, accepted call stored under the same idempotency key, also when both
were built at the same clock time (a coarse clock, such as a Windows system clock's
15.6 ms tick, or LoopClock under a virtual clock, which does not move between calls)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from anytask import MemoryStore, SQLiteStore, StoreError, TaskManager, TaskStatus
from anytask._clock import Clock
from anytask._manager import QueuedHere, _queued_here

pytestmark = pytest.mark.anyio


class FailingInsertsStore(MemoryStore):
    fail = False

    @property
    def inline(self) -> bool:
        return False

    async def write_batch(self, records: Any, outcomes: Any, *args: Any) -> Any:
        if records and self.fail:
            raise StoreError("database or disk is full")
        return await super().write_batch(records, outcomes, *args)


async def test_taking_back_a_refused_request_leaves_the_keyed_task_of_an_accepted_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("CRITICAL", logger="anytask")
    store = FailingInsertsStore()
    tm = TaskManager(store=store)

    @tm.task
    async def charge(n: int) -> None:
        pass

    async with tm:
        original = await tm.enqueue(charge, 0, idempotency_key="order-42", delay=3600)
        # a retry of that request, as a sync route makes it (the middleware's bookkeeping):
        # its keyed task is committed (a no-op insert), then the store fails
        queued = QueuedHere()
        token = _queued_here.set(queued)
        try:
            again = tm.add_task(charge, 0, idempotency_key="order-42", delay=3600)
            await tm.flush()
            mine = tm.add_task(charge, 1, delay=3600)
            store.fail = True
            tm._wake_writer()
            with anyio.fail_after(30), pytest.raises(StoreError):
                await tm._wait_committed(queued.mark)
            assert await tm._take_back(queued.records) is False  # the request is refused
        finally:
            _queued_here.reset(token)
        assert again == original
        assert (await tm.get(original)).status is TaskStatus.PENDING  # the accepted one stands
        store.fail = False
        assert await tm.get(mine) is None  # withdrawn: never written


class FixedClock(Clock):
    def time(self) -> float:
        return 1_700_000_000.0


class FailingInserts:
    fail = False

    async def write_batch(self, records: Any, outcomes: Any, *args: Any) -> Any:
        if records and self.fail:
            raise StoreError("database or disk is full")
        return await super().write_batch(records, outcomes, *args)  # type: ignore[misc]


class Memory(FailingInserts, MemoryStore):
    @property
    def inline(self) -> bool:
        return False


class SQLite(FailingInserts, SQLiteStore):
    pass


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_take_back_at_the_same_clock_time_leaves_the_accepted_keyed_task(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("CRITICAL", logger="anytask")
    store: Any = Memory() if kind == "memory" else SQLite(str(tmp_path / "t.db"))
    tm = TaskManager(store=store, clock=FixedClock())

    @tm.task
    async def charge(n: int) -> None:
        pass

    async with tm:
        original = await tm.enqueue(charge, 0, idempotency_key="order-42", delay=3600)
        queued = QueuedHere()
        token = _queued_here.set(queued)
        try:
            # a double submit, refused: its keyed insert was a no-op; a keyed task of its
            # own was inserted (that one must be cancelled)
            again = tm.add_task(charge, 0, idempotency_key="order-42", delay=3600)
            own = tm.add_task(charge, 2, idempotency_key="order-43", delay=3600)
            await tm.flush()
            mine = tm.add_task(charge, 1, delay=3600)
            store.fail = True
            tm._write_error = StoreError("writes keep failing")  # (as after ~10 s of them)
            with pytest.raises(StoreError):
                await tm._wait_committed(queued.mark)
            assert await tm._take_back(queued.records) is False
        finally:
            _queued_here.reset(token)
            store.fail = False
            tm._write_error = None
        assert again == original
        assert (await tm.get(original)).status is TaskStatus.PENDING  # type: ignore[union-attr]
        assert (await tm.get(own)).status is TaskStatus.CANCELLED  # type: ignore[union-attr]
        assert await tm.get(mine) is None
