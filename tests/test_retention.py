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
    # new tasks keep being committed and run. They are made by a manager without
    # retention, so that all of them are old when the first pass looks (made under one
    # with retention, on a busy machine, they ended over more than the retention, and
    # each pass found fewer than PURGE_BATCH old enough)
    from anytask import _manager

    path = str(tmp_path / "big.db")
    before = TaskManager(snapshot_db=path)

    @before.task(name="noop")
    async def noop_before() -> None:
        pass

    async with before:
        first = [before.add_task(noop_before) for _ in range(1200)]
        await before.join(timeout=20)
    await anyio.sleep(0.6)  # all past the retention

    store = SQLiteStore(path)
    sizes: list[int] = []
    purge = store.purge

    async def counting_purge(*args: Any, **kwargs: Any) -> int:
        n = await purge(*args, **kwargs)
        sizes.append(n)
        return n

    store.purge = counting_purge  # type: ignore[method-assign]
    tm = TaskManager(store=store, retention=0.5)

    @tm.task(name="noop")
    async def noop() -> None:
        pass

    async with tm:
        with anyio.fail_after(10):
            while await tm.get(first[-1]) is not None:
                await tm.wait(await tm.enqueue(noop), timeout=5)  # work goes on meanwhile
                await anyio.sleep(0.05)
        assert await tm.get(first[0]) is None
    assert max(sizes) == _manager.PURGE_BATCH
    assert sum(sizes) >= 1200


@pytest.mark.parametrize(
    "value",
    [0, -1, math.nan, math.inf, pytest.param(10**400, id="1e400"), "7d", True, timedelta(0)],
)
@pytest.mark.parametrize("option", ["retention", "dead_retention"])
def test_bad_retention_fails_at_construction(option: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=option):
        TaskManager(**{option: value})


class TestVirtualTime:
    """Trio only (its MockClock): asyncio has no virtual clock; the tests above cover it
    in real time."""

    @pytest.fixture
    def anyio_backend(self, mock_clock_backend: Any) -> Any:
        return mock_clock_backend

    async def test_retention_follows_the_virtual_clock(self) -> None:
        """An hour of retention passes in no time."""
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
            assert await tm.get(task_id) is None  # 70 minutes old: deleted (within 6 min)


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


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_replayed_dead_task_stays_replayed_once_its_replay_is_old(
    kind: str, tmp_path: Path
) -> None:
    # retention shorter than dead_retention (None here: dead letters kept): the replay's
    # success is old enough to go, but it stays while the dead task does, so the dead
    # task is still known to have been replayed and does not run a third time
    tm = TaskManager(store=_store(kind, tmp_path), retention=0.2)
    runs: list[int] = []

    @tm.task
    async def flaky() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise ValueError("first run fails")

    async with tm:
        dead = await tm.enqueue(flaky)
        assert (await tm.wait(dead, timeout=5)).status is TaskStatus.FAILED
        replay = await tm.replay(dead)
        assert (await tm.wait(replay, timeout=5)).status is TaskStatus.SUCCESS
        await anyio.sleep(0.8)  # several passes past the retention
        assert await tm.get(replay) is not None
        assert await tm.replay(dead) == replay
        assert await tm.replay_many(ids=[dead]) == []  # (already replayed: left out)
        await anyio.sleep(0.1)
    assert len(runs) == 2


class _FailingForSuccesses(MemoryStore):
    async def purge(self, ended_before: Any, **options: Any) -> int:
        if TaskStatus.SUCCESS in (options.get("statuses") or ()):
            raise OSError("disk unplugged")
        return await super().purge(ended_before, **options)


async def test_one_failing_retention_rule_does_not_stop_the_other_and_backs_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = _FailingForSuccesses()
    tm = TaskManager(store=store, retention=0.1, dead_retention=0.1)

    @tm.task
    async def broken() -> None:
        raise ValueError("no")

    with caplog.at_level("ERROR", logger="anytask"):
        async with tm:
            dead = await tm.enqueue(broken)
            await tm.wait(dead, timeout=5)
            with anyio.fail_after(5):
                while await tm.get(dead) is not None:  # noqa: ASYNC110 - polling the store is the point
                    await anyio.sleep(0.05)
            await anyio.sleep(1.0)
    failures = [r for r in caplog.records if "deleting old tasks failed" in r.getMessage()]
    # passes every 0.05 s would have failed about 30 times by now; backing off (1 s, then
    # 2 s...) leaves a handful
    assert 1 <= len(failures) <= 4, len(failures)


async def test_an_in_process_store_is_purged_in_one_pass_per_rule() -> None:
    calls: list[int | None] = []

    class Counting(MemoryStore):
        async def purge(self, ended_before: Any, **options: Any) -> int:
            calls.append(options.get("limit"))
            return await super().purge(ended_before, **options)

    tm = TaskManager(store=Counting(), retention=0.5, dead_retention=0.5)

    @tm.task
    async def noop() -> None:
        pass

    async with tm:
        for _ in range(1200):
            tm.add_task(noop)
        await tm.join(timeout=10)
        await anyio.sleep(0.7)
        assert await tm.counts() == {s: 0 for s in TaskStatus}
    assert calls
    assert set(calls) == {None}  # never in batches: one scan of the records each time


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_task_id_back_after_a_purge_does_not_inherit_the_old_replay(
    kind: str, tmp_path: Path
) -> None:
    # The dead task goes (dead_retention), its successful replay stays (retention); the
    # same idempotency key makes a new task with the same id, which fails too: it has not
    # been replayed, and replaying it runs it again (a new replay, not the old one).
    tm = TaskManager(store=_store(kind, tmp_path), retention=60, dead_retention=0.3)
    runs: list[str] = []

    @tm.task
    async def order(step: str) -> None:
        runs.append(step)
        if runs.count(step) == 1:  # fails when enqueued, succeeds when replayed
            raise ValueError(step)

    async with tm:
        first = await tm.enqueue(order, "first", idempotency_key="order-1")
        await tm.wait(first, timeout=5)
        old_replay = await tm.replay(first)
        await tm.wait(old_replay, timeout=5)
        with anyio.fail_after(5):
            while await tm.get(first) is not None:  # noqa: ASYNC110 - polling the store is the point
                await anyio.sleep(0.05)
        again = await tm.enqueue(order, "again", idempotency_key="order-1")
        assert again == first  # (the id derived from the key)
        assert (await tm.wait(again, timeout=5)).status is TaskStatus.FAILED
        assert await tm.replays_of([again]) == {}
        assert [r.id for r, _ in await tm.replay_many(ids=[again], dry_run=True)] == [again]
        new_replay = await tm.replay(again)
        assert new_replay != old_replay
        assert await tm.replays_of([again]) == {again: new_replay}
        rec = await tm.wait(new_replay, timeout=5)
        assert rec.replay_of == again
    assert runs == ["first", "first", "again", "again"]
