"""The SQLite store's disk fails (is full) while the manager runs.

A real full disk needs a mount (see the report of this change); here a ``SQLiteStore``
subclass refuses every write transaction with the ``StoreError`` SQLite's SQLITE_FULL
turns into, while ``full`` is set."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest

from anytask import SQLiteStore, StoreError, TaskManager, TaskRecord, TaskStatus

pytestmark = pytest.mark.anyio

T = TypeVar("T")


class FullDisk(SQLiteStore):
    full = False

    def _write_sync(self, fn: Callable[[Any], T]) -> T:
        if self.full:
            raise StoreError(f"{self.path}: database or disk is full")
        return super()._write_sync(fn)


@pytest.mark.parametrize("requeue", [False, True], ids=["interrupt", "requeue"])
async def test_outcome_left_by_a_stop_on_a_full_disk_is_written_at_the_next_start(
    tmp_path: Path, requeue: bool
) -> None:
    """A task ends while the disk is full, and the manager stops before the disk has room
    again: its outcome stays queued for the next start of the manager. That start must
    write it before it recovers expired leases: the task ran and succeeded, so it is
    neither a dead letter (``interrupted``) nor run a second time (requeued)."""
    store = FullDisk(tmp_path / "t.db")
    tm = TaskManager(store=store, lease=0.3, shutdown_grace=1, poll_interval=0.05)
    release, started = anyio.Event(), anyio.Event()
    runs: list[int] = []

    @tm.task(requeue_on_interrupt=requeue)
    async def job() -> str:
        runs.append(1)
        started.set()
        if len(runs) == 1:
            await release.wait()
        return "done"

    with anyio.fail_after(30):
        async with tm:
            task_id = await tm.enqueue(job)
            await started.wait()
            store.full = True
            release.set()
            await anyio.sleep(1.0)  # the lease (0.3 s) runs out: the heartbeat cannot renew
        assert store.get(task_id).status is TaskStatus.RUNNING  # (read: the disk is full)
        store.full = False  # room again
        async with tm:
            record = await tm.wait(task_id, timeout=10)
    assert record.status is TaskStatus.SUCCESS, (record.status, record.error)
    assert record.result == "done"
    assert len(runs) == 1


class BatchFull(SQLiteStore):
    """The writer's commits (new tasks and outcomes) do not fit on the disk, while a
    claim, a few pages, still does: what a real full disk does once a failed large
    transaction has left room at the end of the WAL file (on a 2 MB tmpfs, 73 tasks were
    left ``running`` with ``max_concurrency=4``)."""

    full = False

    async def write_batch(self, records: Any, outcomes: Any, *args: Any) -> Any:
        if self.full and (records or outcomes):
            raise StoreError(f"{self.path}: database or disk is full")
        return await super().write_batch(records, outcomes, *args)

    async def complete(self, outcomes: Any) -> Any:
        if self.full:
            raise StoreError(f"{self.path}: database or disk is full")
        return await super().complete(outcomes)


async def test_no_new_attempt_starts_while_outcomes_cannot_be_written(tmp_path: Path) -> None:
    """While the store refuses the outcomes of attempts that ended, the manager starts no
    new attempt: its outcome could not be recorded either (a stop, or a crash, would leave
    it for recovery to mark interrupted or run again), and each one makes the batch the
    disk must take once it has room again bigger."""
    store = BatchFull(tmp_path / "t.db")
    tm = TaskManager(store=store, max_concurrency=2, poll_interval=0.05, shutdown_grace=1)
    gate, two_running = anyio.Event(), anyio.Event()
    runs: list[int] = []

    @tm.task()
    async def job(n: int) -> int:
        runs.append(n)
        if len(runs) == 2:
            two_running.set()
        await gate.wait()
        return n

    with anyio.fail_after(30):
        async with tm:
            ids = [await tm.enqueue(job, n) for n in range(10)]
            await two_running.wait()
            store.full = True
            gate.set()  # the two running attempts end; their outcomes cannot be written
            await anyio.sleep(1.5)
            started_while_full = len(runs)
            store.full = False  # room again: the manager goes on by itself
            await tm.join()
            records = [await tm.get(task_id) for task_id in ids]
    assert started_while_full == 2, f"{started_while_full - 2} attempt(s) started while full"
    assert [r.status for r in records] == [TaskStatus.SUCCESS] * 10
    assert sorted(runs) == list(range(10))  # each ran once


def _record(pad: str = "") -> TaskRecord:
    now = datetime.now(UTC)
    return TaskRecord(uuid.uuid4().hex, "job", [pad], {}, now, now)


async def test_writes_after_a_full_disk_checkpoint_the_wal(tmp_path: Path) -> None:
    """Once writes go in again after SQLITE_FULL, the WAL is copied into the database, so
    that the next writes reuse the WAL file instead of growing it. SQLite's own checkpoint
    waits for 1000 pages (4 MB) of WAL: on a disk of a few MB, the WAL ate every byte
    freed and writes never went in again (a 2.5 MB tmpfs: 1 MB freed, then full again,
    16 tasks left pending and 4 running for good).

    ``max_page_count`` makes SQLite refuse a write with SQLITE_FULL, as a full disk does."""
    path = tmp_path / "t.db"
    store = SQLiteStore(path)
    await store.open()
    try:
        await store.insert([_record("x" * 3000) for _ in range(20)])
        writer = store._writer
        assert writer is not None
        pages = writer.execute("PRAGMA page_count").fetchone()[0]
        writer.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(StoreError, match="full"):
            await store.insert([_record("y" * 3000) for _ in range(5)])
        writer.execute("PRAGMA max_page_count = 1073741823")  # room again
        await store.insert([_record()])
        # everything the WAL held is in the database file now
        pages = writer.execute("PRAGMA page_count").fetchone()[0]
        size = writer.execute("PRAGMA page_size").fetchone()[0]
        assert path.stat().st_size == pages * size
    finally:
        await store.close()
