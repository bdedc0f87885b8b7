"""Final review of the newest changes (task_log clock, full disk, wait() leaks)."""

from __future__ import annotations

import time

import pytest

from anytask import MemoryStore, TaskManager, TaskStatus, task_log
from anytask._clock import Clock, to_ts

pytestmark = pytest.mark.anyio


class StepClock(Clock):
    """A clock ahead of the system's that the test moves on by hand (as a virtual clock
    moves on while a task sleeps)."""

    def __init__(self) -> None:
        self.ahead = 1_000_000.0

    def time(self) -> float:
        return time.time() + self.ahead


async def test_task_log_follows_a_clock_that_moves_during_the_attempt() -> None:
    # the offset taken at the attempt's start stamped a line logged after an hour of
    # (virtual) time an hour early: before the attempt's own ended_at minus an hour
    clock = StepClock()
    tm = TaskManager(store=MemoryStore(), clock=clock)

    @tm.task
    async def slow() -> None:
        task_log("before")
        clock.ahead += 3600  # an hour passes (a virtual sleep)
        task_log("after")

    async with tm:
        rec = await tm.wait(await tm.enqueue(slow), timeout=10)
    assert rec.status is TaskStatus.SUCCESS
    assert rec.ended_at is not None
    before, after = (line["ts"] for line in rec.logs if line["msg"] in ("before", "after"))
    assert 3600 <= after - before < 3660, rec.logs
    assert after <= to_ts(rec.ended_at) + 1
