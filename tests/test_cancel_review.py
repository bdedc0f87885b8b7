"""Regression tests from a review of cancellation, end to end.

* A task that catches the cancellation of ``tm.cancel()`` and returns, raises another
  error, or goes on for a while before it returns, still ends ``cancelled``: it was
  recorded a success (the cancel lost), or its error was retried (the task ran again
  although its cancel had been asked).
* A task that starts while ``cancel()`` asks the store (a retry claimed again, a delayed
  task falling due) is answered with how it ended, as one running when the call came:
  the call answered ``running`` at once, although the task was cancelled a moment later.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import anyio
import pytest

from anytask import MemoryStore, SQLiteStore, TaskManager, TaskStatus

pytestmark = pytest.mark.anyio


def make_store(kind: str, tmp_path: Path) -> MemoryStore | SQLiteStore:
    return MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "t.db")


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("how", ["returns", "raises", "goes_on"])
async def test_a_task_that_catches_its_cancel_still_ends_cancelled(
    kind: str, how: str, tmp_path: Path
) -> None:
    tm = TaskManager(store=make_store(kind, tmp_path))
    runs: list[int] = []
    started = anyio.Event()

    @tm.task(retries=2, delay=0)
    async def job() -> str:
        runs.append(1)
        started.set()
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            if how == "raises":  # a clean-up that fails
                raise ValueError("clean-up failed") from None
            if how == "goes_on":  # catches the cancellation at every checkpoint a while
                for _ in range(3):
                    try:
                        await anyio.sleep(0.05)
                    except anyio.get_cancelled_exc_class():
                        pass
        return "partial"

    async with tm:
        task_id = await tm.enqueue(job)
        with anyio.fail_after(5):
            await started.wait()
        answer = await tm.cancel(task_id)
        rec = await tm.wait(task_id, timeout=5)
        await anyio.sleep(0.2)  # a retry would have started by now
        rec = await tm.get(task_id)  # type: ignore[assignment]
    assert answer is TaskStatus.CANCELLED
    assert rec.status is TaskStatus.CANCELLED, rec
    assert rec.error_type == "Cancelled"
    assert rec.result is None
    assert rec.attempts == 1
    assert runs == [1]  # not run again


class SlowCancelStore(MemoryStore):
    """Answers a cancel after a while, in which the task starts (as a retry claimed again
    by a commit in flight may on SQLite)."""

    async def cancel(self, task_id: str, now: datetime) -> TaskStatus | None:
        await anyio.sleep(0.4)
        return await super().cancel(task_id, now)


async def test_a_task_starting_while_cancel_asks_the_store_is_answered_how_it_ended() -> None:
    tm = TaskManager(store=SlowCancelStore())
    started = anyio.Event()

    @tm.task
    async def job() -> None:
        started.set()
        await anyio.sleep(30)

    async with tm:
        task_id = await tm.enqueue(job, delay=0.1)  # falls due while the store is asked
        answer = await tm.cancel(task_id)
        assert started.is_set()
        rec = await tm.get(task_id)
        assert rec is not None
        assert rec.status is TaskStatus.CANCELLED
        assert answer is TaskStatus.CANCELLED  # not "running": it ended before the answer
