"""Retries and backoff under virtual time.

These tests run only on trio: they use ``trio.testing.MockClock(autojump_threshold=0)``,
which jumps the clock forward whenever every task is blocked, so hours of backoff pass in
milliseconds of wall time. The manager uses ``LoopClock()``, so record timestamps follow
the virtual clock. asyncio has no equivalent virtual clock; the same code paths are
covered there in real time by ``test_manager.py``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

import anyio
import pytest
import trio.testing

from anytask import LoopClock, MemoryStore, TaskManager, TaskStatus, get_task_context, task_log
from anytask._clock import to_ts
from anytask._models import Outcome

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


class RecordingStore(MemoryStore):
    """Keeps every outcome it applied, to read the stored retry waits."""

    def __init__(self) -> None:
        super().__init__()
        self.applied: list[Outcome] = []

    async def complete(self, outcomes: Sequence[Outcome]) -> list[bool]:
        result = await super().complete(outcomes)
        self.applied.extend(o for o, ok in zip(outcomes, result, strict=True) if ok)
        return result

    def waits(self) -> list[float]:
        return [
            to_ts(o.run_after) - to_ts(o.ended_at)
            for o in self.applied
            if o.status is TaskStatus.PENDING and o.run_after and o.ended_at
        ]


def always_failing(tm: TaskManager, starts: list[float], **options: Any) -> Any:
    @tm.task(name="fails", **options)
    async def fails() -> None:
        starts.append(tm.clock.time())
        raise RuntimeError(f"attempt {get_task_context().attempt}")

    return fails


async def test_hour_long_backoffs_pass_instantly_and_are_stored() -> None:
    store = RecordingStore()
    tm = TaskManager(store=store, clock=LoopClock())
    starts: list[float] = []
    fails = always_failing(tm, starts, retries=3, delay=3600, backoff=2)
    wall = time.monotonic()
    async with tm:
        rec = await tm.wait(await tm.enqueue(fails))
    assert time.monotonic() - wall < 5
    assert rec.status is TaskStatus.FAILED
    assert rec.attempts == 4
    assert store.waits() == pytest.approx([3600, 7200, 14400])
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps == pytest.approx([3600, 7200, 14400], abs=1.0)
    assert rec.error == "attempt 4"


async def test_jitter_keeps_waits_within_bounds() -> None:
    store = RecordingStore()
    tm = TaskManager(store=store, clock=LoopClock())
    fails = always_failing(tm, [], retries=3, delay=3600, backoff=2, jitter=0.5)
    async with tm:
        await tm.wait(await tm.enqueue(fails))
    waits = store.waits()
    assert len(waits) == 3
    for wait, full in zip(waits, [3600, 7200, 14400], strict=True):
        assert full * 0.5 <= wait <= full


async def test_max_delay_caps_the_wait() -> None:
    store = RecordingStore()
    tm = TaskManager(store=store, clock=LoopClock())
    fails = always_failing(tm, [], retries=3, delay=3600, backoff=10, max_delay=5000)
    async with tm:
        await tm.wait(await tm.enqueue(fails))
    assert store.waits() == pytest.approx([3600, 5000, 5000])


async def test_restart_during_backoff_loses_nothing() -> None:
    store = RecordingStore()
    clock = LoopClock()  # one clock for the process, shared by both runs
    starts: list[float] = []

    def define(tm: TaskManager) -> Any:
        @tm.task(name="flaky", retries=1, delay=3600)
        async def flaky() -> str:
            starts.append(tm.clock.time())
            if get_task_context().attempt == 1:
                raise RuntimeError("first attempt fails")
            return "second attempt"

        return flaky

    first = TaskManager(store=store, clock=clock)
    flaky = define(first)
    async with first:
        task_id = await first.enqueue(flaky)
        with anyio.fail_after(60):
            while not store.applied:  # noqa: ASYNC110 - polling the store is the point
                await anyio.sleep(0.01)
        await anyio.sleep(600)  # ten minutes into the hour of backoff, the app stops
    waiting = store.get(task_id)
    assert waiting is not None
    assert waiting.status is TaskStatus.PENDING
    due = to_ts(waiting.run_after)
    assert due - starts[0] == pytest.approx(3600, abs=1.0)

    await anyio.sleep(60)  # down for a minute
    second = TaskManager(store=store, clock=clock)
    define(second)
    async with second:
        rec = await second.wait(task_id)
    assert rec.status is TaskStatus.SUCCESS
    assert rec.result == "second attempt"
    assert len(starts) == 2
    assert due <= starts[1] <= due + 1.0


async def test_tasks_after_a_long_wait_get_a_lease_from_their_own_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A worker runs tasks back to back and claims them with one lease end per slice. A
    # task that waits an hour of virtual time inside one slice (the real time it takes is
    # far shorter than the slice, made ten seconds long here so that the slice cannot
    # end first) must not hand the tasks after it a lease that ended before they start.
    import anytask._manager

    monkeypatch.setattr(anytask._manager, "_YIELD_EVERY", 10.0)
    lease = 30.0
    tm = TaskManager(store=MemoryStore(), clock=LoopClock(), max_concurrency=1, lease=lease)
    seen: dict[str, tuple[Any, Any]] = {}

    @tm.task
    async def step(wait: float) -> None:
        rec = tm.store.get(get_task_context().task_id)
        assert rec is not None
        seen[rec.id] = (rec.started_at, rec.lease_expires_at)
        await anyio.sleep(wait)

    async with tm:
        ids = [tm.add_task(step, w) for w in (0, 0, 3600, 0, 0, 7200, 0)]
        await tm.join(timeout=30_000)
    assert set(seen) == set(ids)
    for task_id in ids:
        started, lease_until = seen[task_id]
        left = to_ts(lease_until) - to_ts(started)
        assert lease * 0.9 <= left <= lease, (task_id, left)


async def test_log_lines_are_stamped_in_the_managers_clock_also_from_threads() -> None:
    # the record's times follow the virtual clock (hours of backoff in milliseconds):
    # task_log lines, from the event loop and from a sync task's thread, must too, or an
    # attempt's lines came before the retry line of the attempt before it
    tm = TaskManager(store=MemoryStore(), clock=LoopClock(1_000_000.0))

    @tm.task(retries=1, delay=3600)
    async def flaky() -> None:
        task_log("async line")
        if get_task_context().attempt == 1:
            raise RuntimeError("first")

    @tm.task(retries=1, delay=3600)
    def flaky_sync() -> None:
        task_log("sync line")
        if get_task_context().attempt == 1:
            raise RuntimeError("first")

    async with tm:
        for fn in (flaky, flaky_sync):
            rec = await tm.wait(await tm.enqueue(fn))
            assert rec.status is TaskStatus.SUCCESS
            own = [line for line in rec.logs if line["msg"].endswith(" line")]
            [retry] = [line for line in rec.logs if "retrying" in line["msg"]]
            assert [line["attempt"] for line in own] == [1, 2]
            assert retry["ts"] <= own[1]["ts"], rec.logs
            assert 3600 <= own[1]["ts"] - own[0]["ts"] < 7200  # (jitter, dispatch)
            created = to_ts(rec.created_at)
            assert created <= own[0]["ts"] < created + 60
