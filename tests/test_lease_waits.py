"""Leases survive a long wait for the SQLite write lock and a forward step of the wall
clock: a live instance's running task is neither interrupted nor run twice."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import anyio
import pytest

from anytask import TaskManager, TaskStatus
from anytask._clock import Clock

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("requeue", [False, True])
async def test_heartbeat_after_long_lock_wait_keeps_the_task(tmp_path: Path, requeue: bool) -> None:
    db = str(tmp_path / "t.db")
    runs: list[int] = []
    tm = TaskManager(snapshot_db=db, lease=1.0, poll_interval=0.1)

    @tm.task(name="job", requeue_on_interrupt=requeue)
    async def job() -> str:
        runs.append(1)
        await anyio.sleep(3)
        return "ok"

    locked = threading.Event()

    def hold_lock() -> None:  # another process's long write transaction (< busy_timeout)
        conn = sqlite3.connect(db, isolation_level=None, timeout=10)
        conn.execute("BEGIN IMMEDIATE")
        locked.set()
        time.sleep(1.8)
        conn.execute("COMMIT")
        conn.close()

    async with tm:
        task_id = await tm.enqueue(job)
        await anyio.sleep(0.2)
        holder = threading.Thread(target=hold_lock)
        holder.start()
        await anyio.to_thread.run_sync(locked.wait)
        with anyio.fail_after(20):
            rec = await tm.wait(task_id)
        await anyio.to_thread.run_sync(holder.join)
    assert rec.status is TaskStatus.SUCCESS, rec.error
    assert len(runs) == 1


class _Stepped(Clock):
    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset


async def test_wall_clock_step_does_not_take_a_live_instances_task(tmp_path: Path) -> None:
    db = str(tmp_path / "t.db")
    clock = _Stepped()
    runs: list[str] = []

    def make(name: str) -> TaskManager:
        tm = TaskManager(
            snapshot_db=db, lease=1.5, poll_interval=0.1, clock=clock, instance_id=name
        )

        @tm.task(name="job")
        async def job() -> str:
            runs.append(name)
            await anyio.sleep(2.5)
            return "ok"

        return tm

    a, b = make("a"), make("b")
    for phase in (0.1, 0.25, 0.4):  # the step at several points between heartbeats
        runs.clear()
        async with a:
            task_id = await a.enqueue("job")
            await anyio.sleep(0.3)
            async with b:
                await anyio.sleep(phase)
                clock.offset += 3.0  # a system-wide forward step, twice the lease
                with anyio.fail_after(20):
                    rec = await a.wait(task_id)
        assert rec.status is TaskStatus.SUCCESS, (phase, rec.error)
        assert runs == ["a"]
