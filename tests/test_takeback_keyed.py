"""A refused request (its tasks taken back) never cancels a task that an earlier,
accepted request stored under the same idempotency key."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from anytask import MemoryStore, StoreError, TaskManager, TaskStatus
from anytask._manager import QueuedHere, _queued_here


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
