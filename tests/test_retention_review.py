"""Review of history retention and purge: what is left after records are deleted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi import FastAPI

from anytask import MemoryStore, SQLiteStore, TaskAdmin, TaskManager, TaskRecord, TaskStatus
from fastapi_helpers import serve

pytestmark = pytest.mark.anyio


def _store(kind: str, tmp_path: Path) -> Any:
    return MemoryStore() if kind == "memory" else SQLiteStore(str(tmp_path / "r.db"))


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_the_detail_of_a_task_id_back_after_a_purge_lists_no_earlier_replay(
    kind: str, tmp_path: Path
) -> None:
    # The dead task goes (dead_retention) while its replay stays (retention); the same
    # idempotency key makes a new task with the same id, which fails too. Its detail must
    # not list the earlier task's replay as one made from it (nor say it was replayed).
    tm = TaskManager(store=_store(kind, tmp_path), retention=60, dead_retention=0.3)
    app = FastAPI()
    TaskAdmin(app, tm)
    runs: list[str] = []

    @tm.task
    async def order(step: str) -> None:
        runs.append(step)
        if runs.count(step) == 1:  # fails when enqueued, succeeds when replayed
            raise ValueError(step)

    async with serve(app) as client:
        first = await tm.enqueue(order, "first", idempotency_key="order-1")
        await tm.wait(first, timeout=5)
        old_replay = await tm.replay(first)
        await tm.wait(old_replay, timeout=5)
        with anyio.fail_after(5):
            while await tm.get(first) is not None:  # noqa: ASYNC110 - polling the store is the point
                await anyio.sleep(0.05)
        again = await tm.enqueue(order, "again", idempotency_key="order-1")
        assert again == first
        assert (await tm.wait(again, timeout=5)).status is TaskStatus.FAILED
        detail = (await client.get(f"/tasks/api/tasks/{again}")).json()
        assert detail["status"] == "failed"
        assert detail["replayed_as"] is None
        assert detail["replays"] == []
        # replayed now: that replay, and only it, is listed
        new_replay = await tm.replay(again)
        detail = (await client.get(f"/tasks/api/tasks/{again}")).json()
        assert detail["replayed_as"] == new_replay
        assert detail["replays"] == [new_replay]


T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _ended(n: int, *, together: bool) -> list[TaskRecord]:
    """``n`` old successes, each ended a second after the one before or all at T0 (as
    the tasks a start with ``requeue_pending=False`` marks interrupted at once)."""
    return [
        TaskRecord(
            id=f"ok-{i}",
            name="job",
            args=[],
            kwargs={},
            created_at=T0,
            run_after=T0,
            status=TaskStatus.SUCCESS,
            ended_at=T0 + timedelta(seconds=0 if together else i),
        )
        for i in range(n)
    ]


async def _pass_steps(path: str, records: list[TaskRecord], limit: int) -> tuple[int, int]:
    """A retention pass (calls of ``limit`` until one deletes fewer) over ``records``: how
    many it deleted and SQLite's virtual-machine steps (in hundreds) it took, which do not
    depend on the machine's speed."""
    store = SQLiteStore(path)
    await store.open()
    try:
        await store.insert(records)
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0  # (go on)

        assert store._writer is not None
        store._writer.set_progress_handler(count, 100)
        deleted = 0
        with anyio.fail_after(60):
            while (n := await store.purge(T0 + timedelta(days=1), limit=limit)) > 0:
                deleted += n
                if n < limit:
                    break
        store._writer.set_progress_handler(None, 0)
        return deleted, steps[0]
    finally:
        await store.close()


async def test_a_pass_over_rows_that_ended_together_reads_each_about_once(
    tmp_path: Path,
) -> None:
    # 3,000 rows that ended at one moment, deleted 100 a call: each call went on from the
    # middle of them through the ended-time index, which orders them by other columns
    # than seq, so it read (and sorted) all that were left, twice: quadratic (a start
    # with requeue_pending=False that marked 1M pending tasks interrupted made each
    # 500-row transaction of dead_retention hold the write lock for 1.5 s). Reading
    # them costs about what reading rows that ended one by one does.
    deleted, apart = await _pass_steps(str(tmp_path / "a.db"), _ended(3000, together=False), 100)
    assert deleted == 3000
    deleted, together = await _pass_steps(str(tmp_path / "b.db"), _ended(3000, together=True), 100)
    assert deleted == 3000
    assert together < 2 * apart, (together, apart)
