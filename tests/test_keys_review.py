"""Review of idempotency keys and replays under concurrency."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from anytask import TaskManager
from anytask._clock import Clock
from anytask._models import TaskQuery
from anytask.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio

STORES = ["memory", "sqlite"]


class _SteppingClock(Clock):
    """The system's time plus an offset the test sets (an NTP step, a lagging host)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset


def _manager(kind: str, tmp_path: Path, **kw: Any) -> TaskManager:
    if kind == "memory":
        return TaskManager(store=MemoryStore(), **kw)
    return TaskManager(snapshot_db=str(tmp_path / "tasks.db"), **kw)


def _failing_task(tm: TaskManager) -> tuple[Any, list[int]]:
    """A task registered on ``tm`` that always fails, and a list that gets an item per
    run of it."""
    runs: list[int] = []

    @tm.task
    async def fail() -> None:
        runs.append(1)
        raise ValueError("dead")

    return fail, runs


@pytest.mark.parametrize("kind", STORES)
async def test_replay_once_when_the_clock_steps_back(kind: str, tmp_path: Path) -> None:
    # A replay dated before its task (the wall clock stepped back after the task was
    # created, or another instance's clock is behind) must still count as its replay:
    # replaying the task again returns it, and the task does not run a third time.
    clock = _SteppingClock()
    tm = _manager(kind, tmp_path, clock=clock)
    fail, runs = _failing_task(tm)

    async with tm:
        task = await tm.enqueue(fail)
        await tm.wait(task, timeout=5)
        clock.offset = -2.0
        first = await tm.replay(task)
        await tm.wait(first, timeout=5)
        assert await tm.replays_of([task]) == {task: first}
        assert await tm.replay_many(ids=[task]) == []
        again = await tm.replay(task)
        await tm.join(timeout=5)
        rows = await tm.store.count(TaskQuery())
    assert again == first
    assert rows == 2
    assert len(runs) == 2


@pytest.mark.parametrize("kind", STORES)
async def test_concurrent_replay_many_report_the_replay_once(kind: str, tmp_path: Path) -> None:
    # Several bulk replays of one dead task at the same moment write one replay (the
    # store refuses the others' inserts); only the call that wrote it reports it, as
    # a second run of the same bulk replay reports nothing.
    tm = _manager(kind, tmp_path)
    fail, runs = _failing_task(tm)

    async with tm:
        task = await tm.enqueue(fail)
        await tm.wait(task, timeout=5)
        results: list[list[str | None]] = []

        async def bulk() -> None:
            results.append([new for _, new in await tm.replay_many(ids=[task])])

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(bulk)
        await tm.join(timeout=5)
        replay = await tm.replays_of([task])
        rows = await tm.store.count(TaskQuery())
    assert sorted(results, key=len) == [[], [], [], [replay[task]]]
    assert rows == 2
    assert len(runs) == 2


@pytest.mark.parametrize("kind", STORES)
async def test_the_key_alone_decides(kind: str, tmp_path: Path) -> None:
    # docs/runtime.md: a second call with the same key but other arguments, or another
    # task, gets the first task's id and queues nothing
    tm = _manager(kind, tmp_path)
    ran: list[tuple[str, int]] = []

    @tm.task
    async def first(n: int) -> None:
        ran.append(("first", n))

    @tm.task
    async def second(n: int) -> None:
        ran.append(("second", n))

    async with tm:
        a = await tm.enqueue(first, 1, idempotency_key="k")
        b = await tm.enqueue(first, 2, idempotency_key="k")
        c = tm.add_task(second, 3, idempotency_key="k")
        await tm.join(timeout=10)
        page = await tm.list(TaskQuery(limit=10))
    assert a == b == c
    assert ran == [("first", 1)]
    assert [r.id for r in page.items] == [a]
