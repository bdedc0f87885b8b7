"""Retention: ended tasks older than ``retention`` (successes, cancellations) or
``dead_retention`` (failed and interrupted tasks) are deleted from the store."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from anytask import (
    ConfigurationError,
    LoopClock,
    MemoryStore,
    SQLiteStore,
    TaskManager,
    TaskStatus,
)

pytestmark = pytest.mark.anyio


def _store(kind: str, tmp_path: Path) -> Any:
    return MemoryStore() if kind == "memory" else SQLiteStore(str(tmp_path / "r.db"))


async def _run_tasks(tm: TaskManager) -> tuple[list[str], str, str]:
    @tm.task
    async def ok(i: int) -> int:
        return i

    @tm.task
    async def broken() -> None:
        raise ValueError("no")

    @tm.task
    async def later() -> None:
        pass

    ok_ids = [await tm.enqueue(ok, i) for i in range(5)]
    failed = await tm.enqueue(broken)
    cancelled = await tm.enqueue(later, delay=60)
    assert await tm.cancel(cancelled) is TaskStatus.CANCELLED
    for task_id in [*ok_ids, failed]:
        await tm.wait(task_id, timeout=5)
    return ok_ids, failed, cancelled


async def _gone(tm: TaskManager, task_id: str) -> bool:
    return await tm.get(task_id) is None


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_retention_deletes_old_successes_and_keeps_dead_letters(
    kind: str, tmp_path: Path
) -> None:
    tm = TaskManager(store=_store(kind, tmp_path), retention=0.3)
    async with tm:
        ok_ids, failed, cancelled = await _run_tasks(tm)
        assert await tm.get(ok_ids[0]) is not None  # not old enough yet
        with anyio.fail_after(5):
            while not all([await _gone(tm, i) for i in [*ok_ids, cancelled]]):  # noqa: ASYNC110 - polling the store is the point
                await anyio.sleep(0.05)
        await anyio.sleep(0.5)  # several more passes
        rec = await tm.get(failed)
        assert rec is not None
        assert rec.status is TaskStatus.FAILED
        assert [r.id for r in await tm.dead_letters()] == [failed]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_dead_retention_deletes_old_dead_letters_only(kind: str, tmp_path: Path) -> None:
    tm = TaskManager(store=_store(kind, tmp_path), dead_retention=timedelta(seconds=0.3))
    async with tm:
        ok_ids, failed, cancelled = await _run_tasks(tm)
        with anyio.fail_after(5):
            while not await _gone(tm, failed):  # noqa: ASYNC110 - polling the store is the point
                await anyio.sleep(0.05)
        for task_id in [*ok_ids, cancelled]:
            assert await tm.get(task_id) is not None


async def test_a_large_history_goes_in_small_transactions(tmp_path: Path) -> None:
    # 1,200 old successes: deleted in transactions of at most PURGE_BATCH rows, while
    # new tasks keep being committed and run
    from anytask import _manager

    store = SQLiteStore(str(tmp_path / "big.db"))
    sizes: list[int] = []
    purge = store.purge

    async def counting_purge(*args: Any, **kwargs: Any) -> int:
        n = await purge(*args, **kwargs)
        sizes.append(n)
        return n

    store.purge = counting_purge  # type: ignore[method-assign]
    tm = TaskManager(store=store, retention=0.5)

    @tm.task
    async def noop() -> None:
        pass

    async with tm:
        first = [tm.add_task(noop) for _ in range(1200)]
        await tm.join(timeout=20)
        with anyio.fail_after(10):
            while await tm.get(first[-1]) is not None:
                await tm.wait(await tm.enqueue(noop), timeout=5)  # work goes on meanwhile
                await anyio.sleep(0.05)
        assert await tm.get(first[0]) is None
    assert max(sizes) == _manager.PURGE_BATCH
    assert sum(sizes) >= 1200


@pytest.mark.parametrize(
    "value", [0, -1, math.nan, math.inf, "7d", True, timedelta(0), timedelta(seconds=-5)]
)
@pytest.mark.parametrize("option", ["retention", "dead_retention"])
def test_bad_retention_fails_at_construction(option: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=option):
        TaskManager(**{option: value})


def _virtual() -> tuple[str, dict[str, Any]]:
    import trio.testing

    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


@pytest.mark.parametrize("anyio_backend", [_virtual()])
async def test_retention_follows_the_virtual_clock() -> None:
    """An hour of retention passes in no time under trio's MockClock (trio only: asyncio
    has no virtual clock; the tests above cover it in real time)."""
    tm = TaskManager(store=MemoryStore(), clock=LoopClock(), retention=timedelta(hours=1))

    @tm.task
    async def noop() -> None:
        pass

    async with tm:
        task_id = await tm.enqueue(noop)
        await tm.wait(task_id, timeout=5)
        await anyio.sleep(50 * 60)
        assert await tm.get(task_id) is not None  # 50 minutes old: kept
        await anyio.sleep(20 * 60)
        assert await tm.get(task_id) is None  # 70 minutes old: deleted (within 6 minutes)


async def test_a_retention_longer_than_the_epoch_deletes_nothing_and_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tm = TaskManager(store=MemoryStore(), retention=timedelta.max, dead_retention=1e12)

    @tm.task
    async def noop() -> None:
        pass

    with caplog.at_level("INFO", logger="anytask"):
        async with tm:
            task_id = await tm.enqueue(noop)
            await tm.wait(task_id, timeout=5)
            await anyio.sleep(0.2)
            assert await tm.get(task_id) is not None
    assert not [r for r in caplog.records if "old tasks" in r.getMessage()]
