"""What anytask logs: task failures (once each, never their arguments) and a store that
keeps failing (a bounded number of lines)."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from anytask import MemoryStore, TaskManager, TaskStatus
from anytask._errors import StoreError

pytestmark = pytest.mark.anyio


async def test_a_failed_task_is_logged_once_with_its_traceback_and_not_its_arguments(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tm = TaskManager(poll_interval=0.05)

    @tm.task(name="charge", retries=1, delay=0.01)
    def charge(card: str, *, password: str) -> None:
        raise ValueError("card declined")

    caplog.set_level(logging.INFO, logger="anytask")
    async with tm:
        task_id = await tm.enqueue(charge, "4111-1111", password="hunter2")
        rec = await tm.wait(task_id, timeout=10)
    assert rec.status is TaskStatus.FAILED
    mine = [r for r in caplog.records if r.name == "anytask.tasks" and task_id in r.getMessage()]
    retries = [r for r in mine if r.levelno == logging.INFO]
    dead = [r for r in mine if r.levelno == logging.ERROR]
    assert len(retries) == 1
    assert not retries[0].exc_info
    assert "attempt 1 of 2" in retries[0].getMessage()
    assert len(dead) == 1  # once per task, not per attempt
    assert "charge" in dead[0].getMessage()
    assert "card declined" in dead[0].getMessage()
    assert dead[0].exc_info is not None
    assert dead[0].exc_info[0] is ValueError
    assert "hunter2" not in caplog.text
    assert "4111" not in caplog.text


async def test_a_task_nobody_registered_is_logged_when_it_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    other = TaskManager(store=store)

    @other.task(name="only_elsewhere")
    def only_elsewhere() -> None:
        pass

    ghost = other.add_task(only_elsewhere, delay=0.2)
    async with other:
        await other.flush()
        other.stop()
    tm = TaskManager(store=store)
    caplog.set_level(logging.ERROR, logger="anytask")
    async with tm:
        assert (await tm.wait(ghost, timeout=5)).status is TaskStatus.FAILED
    assert any(
        r.name == "anytask.tasks" and ghost in r.getMessage() and "only_elsewhere" in r.getMessage()
        for r in caplog.records
    )


class _FailingClaims(MemoryStore):
    failing = False

    async def claim(self, owner: str, limit: int, now: Any, lease_until: Any) -> list[Any]:
        if self.failing:
            raise StoreError("the store is down")
        return await super().claim(owner, limit, now, lease_until)


async def test_claims_that_keep_failing_back_off(caplog: pytest.LogCaptureFixture) -> None:
    # a store down for a while: not a traceback every poll_interval
    store = _FailingClaims()
    tm = TaskManager(store=store, poll_interval=0.1)

    @tm.task(name="later")
    def later() -> None:
        pass

    caplog.set_level(logging.ERROR, logger="anytask")
    async with tm:
        await tm.enqueue(later, delay=0.2)
        store.failing = True
        await anyio.sleep(3.0)
        store.failing = False
    failed = [r for r in caplog.records if "claiming tasks failed" in r.getMessage()]
    assert 1 <= len(failed) <= 10  # (0.1 s apart: about 30)
