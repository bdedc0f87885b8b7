"""Leases survive a long wait for the SQLite write lock and a forward step of the wall
clock: a live instance's running task is neither interrupted nor run twice."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from anytask import MemoryStore, TaskManager, TaskStatus
from anytask._clock import Clock
from anytask.stores.abc import HeartbeatResult

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


class _SlowHeartbeats(MemoryStore):
    """Every heartbeat write takes ``delay`` (a slow disk's fsync); the first ``slow``
    ones only, when given, and ``entered`` is set as the first one starts waiting."""

    def __init__(self, delay: float, slow: int | None = None) -> None:
        super().__init__()
        self.delay, self.slow = delay, slow
        self.entered = anyio.Event()

    async def heartbeat(
        self, owner: str, lease_until: Any, task_ids: Any = None
    ) -> HeartbeatResult:
        if self.slow is None or self.slow > 0:
            if self.slow is not None:
                self.slow -= 1
            self.entered.set()
            await anyio.sleep(self.delay)
        return await super().heartbeat(owner, lease_until, task_ids)


async def test_heartbeat_writes_that_always_wait_do_not_put_recovery_off_forever() -> None:
    # lease 0.3 s: a heartbeat every 0.1 s, and each write takes 60 ms (> half a period):
    # every round is "blocked", yet a dead instance's task must still be recovered
    store = _SlowHeartbeats(0.06)
    dead = TaskManager(store=store, lease=0.3, poll_interval=0.05, instance_id="dead")
    live = TaskManager(store=store, lease=0.3, poll_interval=0.05, instance_id="live")

    async def no_heartbeat() -> None:  # the instance died: its leases are never renewed
        await anyio.sleep_forever()

    dead._heartbeat = no_heartbeat  # type: ignore[method-assign]

    @dead.task(name="job")
    async def job() -> None:
        await anyio.sleep_forever()

    async with live, dead:
        task_id = await dead.enqueue("job")
        with anyio.fail_after(3):  # ten leases
            rec = await live.wait(task_id)
    assert rec.status is TaskStatus.INTERRUPTED


async def test_a_task_claimed_while_the_heartbeat_waits_is_not_abandoned() -> None:
    # one heartbeat write waits 0.25 s (> the 0.1 s period); a task claimed meanwhile is
    # not in what that heartbeat renewed, and must not be taken for a lost lease
    store = _SlowHeartbeats(0.25, slow=1)
    tm = TaskManager(store=store, lease=0.3, poll_interval=0.05)
    runs: list[int] = []

    @tm.task(name="job", requeue_on_interrupt=True)
    async def job() -> str:
        runs.append(1)
        await anyio.sleep(1.0)
        return "ok"

    async with tm:
        await store.entered.wait()
        task_id = await tm.enqueue("job")
        with anyio.fail_after(10):
            rec = await tm.wait(task_id)
    assert rec.status is TaskStatus.SUCCESS, rec.error
    assert runs == [1]
