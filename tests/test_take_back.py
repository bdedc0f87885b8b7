"""Taking back refused tasks (a failed enqueue_many, a 503 response) never cancels a task
that an earlier, accepted call stored under the same idempotency key, also when both
were built at the same clock time (a coarse clock, such as a Windows system clock's
15.6 ms tick, or LoopClock under a virtual clock, which does not move between calls)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from anytask import MemoryStore, SQLiteStore, StoreError, TaskManager, TaskStatus
from anytask._clock import Clock
from anytask._manager import QueuedHere, _queued_here

pytestmark = pytest.mark.anyio


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


@pytest.mark.parametrize("clock", ["system", "fixed"])
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_take_back_leaves_the_keyed_task_of_an_accepted_call(
    kind: str, clock: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A request refused after its keyed insert was committed as a no-op (a double
    # submit): the task the accepted request stored under that key stands, the refused
    # request's own keyed task is cancelled and its unwritten one withdrawn; also when
    # the two were built at the same clock time.
    caplog.set_level("CRITICAL", logger="anytask")
    store: Any = Memory() if kind == "memory" else SQLite(str(tmp_path / "t.db"))
    tm = TaskManager(store=store, clock=FixedClock() if clock == "fixed" else None)

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
