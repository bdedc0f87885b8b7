"""Graceful shutdown: finish within ``shutdown_grace``, then cancel, record and exit.

These tests use real time with a small grace (0.5 s) and measure how long the manager
takes to exit with ``anyio.current_time()``.
"""

from __future__ import annotations

import gc
import random
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

import anytask._manager as _manager_module
from anytask import ManagerStateError, MemoryStore, SQLiteStore, TaskManager, TaskStatus
from slow_stores import SlowClaimStore

pytestmark = pytest.mark.anyio

GRACE = 0.5


def make(store: MemoryStore, **options: Any) -> TaskManager:
    options.setdefault("poll_interval", 0.05)
    options.setdefault("shutdown_grace", GRACE)
    return TaskManager(store=store, **options)


async def wait_running(tm: TaskManager, *ids: str) -> None:
    with anyio.fail_after(5):
        for task_id in ids:
            while (rec := await tm.get(task_id)) is None or rec.status is not TaskStatus.RUNNING:  # noqa: ASYNC110 - polling the store is the point
                await anyio.sleep(0.01)


async def test_running_task_that_finishes_within_grace_completes() -> None:
    store = MemoryStore()
    tm = make(store, shutdown_grace=2.0)

    @tm.task
    async def short() -> str:
        await anyio.sleep(0.2)
        return "finished"

    async with tm:
        task_id = await tm.enqueue(short)
        await wait_running(tm, task_id)
    rec = store.get(task_id)
    assert rec is not None
    assert (rec.status, rec.result) == (TaskStatus.SUCCESS, "finished")


@pytest.mark.parametrize("requeue", [False, True])
async def test_stubborn_tasks_are_cut_off_after_grace(requeue: bool) -> None:
    store = MemoryStore()
    tm = make(store)
    release = threading.Event()
    cancels = 0

    @tm.task(requeue_on_interrupt=requeue)
    async def stubborn() -> None:
        nonlocal cancels
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            cancels += 1  # ignores the cancellation and keeps going...
        await anyio.sleep(30)  # ...until its next checkpoint, which is cancelled again

    @tm.task(requeue_on_interrupt=requeue)
    def blocked() -> None:
        release.wait(30)  # a thread blocked in time.sleep(30) cannot be cancelled either

    try:
        async with tm:
            ids = [await tm.enqueue(stubborn), await tm.enqueue(blocked)]
            await wait_running(tm, *ids)
            stopped_at = anyio.current_time()
        elapsed = anyio.current_time() - stopped_at
    finally:
        release.set()
    assert elapsed <= GRACE + 1.0
    assert elapsed >= GRACE
    assert cancels == 1
    expected = TaskStatus.PENDING if requeue else TaskStatus.INTERRUPTED
    for task_id in ids:
        rec = store.get(task_id)
        assert rec is not None
        assert rec.status is expected
        assert rec.owner is None
        assert rec.error_type == "Interrupted"


async def test_a_task_catching_every_cancellation_is_named_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # structured concurrency: the shutdown has to wait for a task that catches every
    # cancellation (here for 1 s past the cut), but it says which task it waits for
    store = MemoryStore()
    tm = make(store)

    @tm.task(name="refuses_to_stop")
    async def refuses_to_stop() -> None:
        give_up = None
        while True:
            try:
                await anyio.sleep(30)
            except anyio.get_cancelled_exc_class():
                now = anyio.current_time()
                give_up = give_up or now + GRACE + 2.0
                if now >= give_up:
                    raise

    caplog.set_level("ERROR", logger="anytask")
    async with tm:
        task_id = await tm.enqueue(refuses_to_stop)
        await wait_running(tm, task_id)
    waited = [r.getMessage() for r in caplog.records if "keep running" in r.getMessage()]
    assert len(waited) == 1
    assert f"refuses_to_stop ({task_id})" in waited[0]
    rec = store.get(task_id)
    assert rec is not None
    assert rec.status is TaskStatus.INTERRUPTED


@pytest.mark.parametrize("case", ["queued behind a busy worker", "enqueue_many on an idle one"])
async def test_a_cancelled_manager_hands_back_claims_no_worker_will_start(case: str) -> None:
    # Leaving `async with tm:` by a cancellation tears the workers down. What was
    # claimed for them and never started must go back to pending at once: not be waited
    # for until the grace runs out, nor be left `running` with nobody to run it.
    store = MemoryStore()
    tm = make(store, max_concurrency=4, shutdown_grace=3.0)

    @tm.task
    async def slow() -> None:
        await anyio.sleep(0.3)

    @tm.task
    async def quick() -> None:
        await anyio.lowlevel.checkpoint()

    async with tm.events.subscribe() as events, anyio.create_task_group():
        with anyio.CancelScope() as outer:
            async with tm:
                ids = await _hand_back_case(tm, case, slow, quick)
                outer.cancel()
                started = anyio.current_time()
                await anyio.lowlevel.checkpoint()
        took = anyio.current_time() - started
        seen = []
        while True:
            try:
                seen.append(events.receive_nowait())
            except anyio.WouldBlock:
                break
    assert took < 1.0, took  # not the 3 s grace
    statuses = [store.get(task_id).status for task_id in ids]  # type: ignore[union-attr]
    assert TaskStatus.RUNNING not in statuses, statuses
    left = [i for i, status in zip(ids, statuses, strict=True) if status is TaskStatus.PENDING]
    assert left, statuses  # (most never started)
    # the dashboard's view ends where the store is: a claim published "running", so a
    # claim handed back publishes its return to "pending"
    last = {event.task_id: (event.kind, event.status) for event in seen}
    claimed = {event.task_id for event in seen if event.kind == "running"}
    assert all(last[task_id][1] == "pending" for task_id in left), last
    assert all(last[task_id] == ("retrying", "pending") for task_id in claimed & set(left))
    again = make(store)
    again.task(quick)
    again.task(slow)
    async with again:
        await again.join(timeout=10)
    for task_id in left:
        rec = store.get(task_id)
        assert rec is not None
        assert rec.status is TaskStatus.SUCCESS
        assert rec.attempts == 1  # the claim that never started did not count


async def _hand_back_case(tm: TaskManager, case: str, slow: Any, quick: Any) -> list[str]:
    if case == "queued behind a busy worker":
        await wait_running(tm, tm.add_task(slow))
        ids = [tm.add_task(quick) for _ in range(6)]
        tm.stop()  # (as leaving the block does, before the cancellation lands)
        return ids
    await anyio.sleep(0.05)
    return await tm.enqueue_many([(quick, (), {}) for _ in range(3)])


def _store(storage: str, tmp_path: Path) -> MemoryStore | SQLiteStore:
    return MemoryStore() if storage == "memory" else SQLiteStore(str(tmp_path / "t.db"))


@pytest.mark.parametrize("storage", ["memory", "sqlite"])
async def test_a_handed_back_claim_whose_cancel_was_asked_ends_cancelled_with_a_time(
    storage: str, tmp_path: Path
) -> None:
    # Claimed for a worker but not started yet (no worker is woken for it here), then
    # cancelled by id, then the manager is torn down: the hand-back turns it cancelled
    # (Store.complete), with an end time, so that purges and time windows find it.
    store = _store(storage, tmp_path)
    tm = make(store, max_concurrency=3, shutdown_grace=3.0)  # type: ignore[arg-type]
    tm._wake_idle = lambda n: None  # type: ignore[method-assign]

    @tm.task
    async def slow() -> None:
        await anyio.sleep(5)

    @tm.task
    async def quick() -> None:
        await anyio.lowlevel.checkpoint()

    with anyio.CancelScope() as outer:
        async with tm:
            await wait_running(tm, tm.add_task(slow))
            for _ in range(3):
                tm.add_task(quick)
            with anyio.fail_after(5):
                while not tm._backlog:  # noqa: ASYNC110 - waiting for the claim is the point
                    await anyio.sleep(0.01)
            waiting = tm._backlog[0].id
            # asked by another instance (the store's flag; this manager's own cancel()
            # would record it cancelled at once, see test_manager)
            assert await store.cancel(waiting, tm.clock.now()) is TaskStatus.RUNNING
            outer.cancel()
            started = anyio.current_time()
            await anyio.lowlevel.checkpoint()
    assert anyio.current_time() - started < 1.0
    again = make(store)  # type: ignore[arg-type]
    async with again:
        rec = await again.get(waiting)
        assert rec is not None
        assert rec.status is TaskStatus.CANCELLED
        assert rec.ended_at is not None
        assert rec.attempts == 0
        assert await again.store.purge(rec.ended_at + timedelta(seconds=1)) >= 1
        assert await again.get(waiting) is None


@pytest.mark.parametrize("storage", ["memory", "sqlite"])
async def test_a_cancelled_teardown_hands_back_claims_although_a_task_refuses_to_stop(
    storage: str, tmp_path: Path
) -> None:
    # Torn down by a cancellation while a task catches every cancellation for longer
    # than the grace and the cut: the teardown has to wait for that task, but what was
    # claimed and never started goes back to pending all the same (not left `running`
    # until a later start recovers it, nor marked `interrupted` then: it never ran).
    store = _store(storage, tmp_path)
    tm = make(store, max_concurrency=3, shutdown_grace=0.2)  # type: ignore[arg-type]
    started = anyio.Event()

    @tm.task
    async def stubborn() -> None:
        started.set()
        give_up = None
        while True:
            try:
                await anyio.sleep(30)
            except anyio.get_cancelled_exc_class():
                now = anyio.current_time()
                give_up = give_up or now + 1.5  # past the grace (0.2 s) and the cut (1 s)
                if now >= give_up:
                    raise

    @tm.task
    async def quick() -> None:
        await anyio.lowlevel.checkpoint()

    with anyio.CancelScope() as outer:
        async with tm:
            stubborn_id = tm.add_task(stubborn)
            with anyio.fail_after(5):
                await started.wait()
            tm._wake_idle = lambda n: None  # type: ignore[method-assign]  # claims stay queued
            ids = [tm.add_task(quick) for _ in range(2)]
            with anyio.fail_after(5):
                while len(tm._backlog) < 2:  # noqa: ASYNC110 - waiting for the claim is the point
                    await anyio.sleep(0.01)
            outer.cancel()
            await anyio.lowlevel.checkpoint()
    if storage == "sqlite":  # what the file holds, read by a fresh store
        store = SQLiteStore(str(tmp_path / "t.db"))
        await store.open()
    try:
        for task_id in ids:
            rec = await store.fetch(task_id)
            assert rec is not None
            assert (rec.status, rec.attempts, rec.owner) == (TaskStatus.PENDING, 0, None)
        rec = await store.fetch(stubborn_id)
        assert rec is not None
        assert rec.status is TaskStatus.INTERRUPTED
    finally:
        if storage == "sqlite":
            await store.close()


class _LateClaims(SQLiteStore):
    """A store whose claims reach the manager 0.5 s after their commit."""

    async def write_batch(self, *args: Any, **kwargs: Any) -> Any:
        result = await super().write_batch(*args, **kwargs)
        if result.claimed:
            await anyio.sleep(0.5)
        return result

    async def claim(self, *args: Any, **kwargs: Any) -> Any:
        records = await super().claim(*args, **kwargs)
        if records:
            await anyio.sleep(0.5)
        return records


async def test_a_cancellation_during_a_stop_hands_back_claims_that_land_after_it(
    tmp_path: Path,
) -> None:
    # A stop has begun (so the teardown was not a cancellation when it started), a claim
    # is on its way, and then the manager is cancelled while a task refuses to stop: the
    # claim lands in the backlog after the idle workers have ended, and goes back to
    # pending instead of staying `running` with nobody to run it.
    path = str(tmp_path / "t.db")
    tm = make(_LateClaims(path), max_concurrency=3, shutdown_grace=0.2)  # type: ignore[arg-type]
    started = anyio.Event()
    ran: list[int] = []
    ids: list[str] = []
    when_it_gave_up: list[Any] = []

    @tm.task
    async def stubborn() -> None:
        started.set()
        give_up = None
        while True:
            try:
                await anyio.sleep(30)
            except anyio.get_cancelled_exc_class():
                now = anyio.current_time()
                give_up = give_up or now + 2.0
                if now >= give_up:
                    # handed back while the teardown waited for this task, not after
                    when_it_gave_up.extend(tm.store.get(task_id) for task_id in ids)
                    raise

    @tm.task
    async def quick(n: int) -> None:
        ran.append(n)

    with anyio.CancelScope() as outer:
        async with tm:
            tm.add_task(stubborn)
            with anyio.fail_after(5):
                await started.wait()
            await anyio.sleep(0.6)  # (the stubborn task's own late claim has landed)
            ids.extend(tm.add_task(quick, n) for n in range(2))
            await anyio.sleep(0.1)
            tm.stop()
            await anyio.sleep(0.05)
            assert tm._claiming  # the claim is still on its way
            assert not tm._backlog
            outer.cancel()
    assert ran == []
    assert [rec.status for rec in when_it_gave_up] == [TaskStatus.PENDING] * 2
    store = SQLiteStore(path)
    await store.open()
    try:
        for task_id in ids:
            rec = await store.fetch(task_id)
            assert rec is not None
            assert (rec.status, rec.attempts, rec.owner) == (TaskStatus.PENDING, 0, None)
    finally:
        await store.close()


async def test_a_cancelled_teardown_leaves_no_task_running(tmp_path: Path) -> None:
    # Torn down by a cancellation (with or without a stop just before), the manager loses
    # its writer with it; outcomes still waiting for a commit must reach the store all
    # the same instead of leaving their tasks `running` until their lease runs out.
    # Random rounds (trio runs woken tasks in varying order): tasks that fail at once,
    # queued one by one and in a batch, the teardown at varying moments.
    # Tasks queued with add_task whose group commit had not come yet are written to the
    # store as the manager goes down, too: none is lost.
    rng = random.Random(5)
    for rnd in range(30):
        ids, statuses = await _teardown_round(rng, str(tmp_path / f"t{rnd}.db"))
        assert TaskStatus.RUNNING not in statuses.values(), (rnd, statuses)
        assert sorted(statuses) == sorted(ids), (rnd, "lost", set(ids) - set(statuses))


async def _teardown_round(rng: random.Random, path: str) -> tuple[list[str], dict[str, TaskStatus]]:
    store = SQLiteStore(path)
    tm = make(store, max_concurrency=rng.choice([1, 2, 4]), shutdown_grace=2.0)  # type: ignore[arg-type]

    @tm.task
    async def fails(n: int) -> None:
        raise ValueError(n)

    ids: list[str] = []
    with anyio.CancelScope() as outer:
        async with tm:
            ids += [tm.add_task(fails, 0) for _ in range(rng.randint(1, 4))]
            await anyio.sleep(rng.choice([0, 0.001, 0.02, 0.05]))
            if rng.random() < 0.5:
                ids += await tm.enqueue_many([(fails, (1,), {}) for _ in range(rng.randint(1, 6))])
            else:
                ids += [tm.add_task(fails, 2) for _ in range(rng.randint(1, 6))]
            mode = rng.choice(["stop, then cancel", "cancel", "stop, wait, cancel"])
            if mode != "cancel":
                tm.stop()
            if mode == "stop, wait, cancel":
                await anyio.sleep(rng.choice([0, 0.005, 0.03]))
            outer.cancel()
            await anyio.lowlevel.checkpoint()
    await store.open()
    try:
        return ids, {rec.id: rec.status for rec in await store.fetch_many(ids)}
    finally:
        await store.close()


async def test_outcomes_left_by_a_writer_gone_during_a_stop_still_reach_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cancellation that comes during a stop ends the writer, while the workers end
    # cleanly (the stop had closed them): outcomes handed to the writer after that must
    # still reach the store, and the teardown must not wait for a writer that is gone.
    # The writer here is ended by a cancellation as the stop begins, so that a task
    # still running then finishes after it.
    write_cycles = TaskManager._write_cycles

    async def writer_ended_at_stop(self: TaskManager) -> None:
        async with anyio.create_task_group() as tg:

            async def end_at_stop() -> None:
                assert self._stop is not None
                await self._stop.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(end_at_stop)
            await write_cycles(self)

    monkeypatch.setattr(TaskManager, "_write_cycles", writer_ended_at_stop)
    path = str(tmp_path / "c.db")
    tm = make(SQLiteStore(path), shutdown_grace=5.0)  # type: ignore[arg-type]
    started = anyio.Event()

    @tm.task
    async def slow() -> str:
        started.set()
        await anyio.sleep(0.2)
        return "done"

    t0 = anyio.current_time()
    async with tm:
        task_id = await tm.enqueue(slow)
        with anyio.fail_after(5):
            await started.wait()
        tm.stop()
    elapsed = anyio.current_time() - t0
    assert not tm._writer_alive
    store = SQLiteStore(path)
    await store.open()
    try:
        rec = await store.fetch(task_id)
    finally:
        await store.close()
    assert rec is not None
    assert (rec.status, rec.result) == (TaskStatus.SUCCESS, "done")
    assert elapsed < 5


async def test_outcomes_a_failing_writer_left_are_written_when_the_stop_gives_up_on_it(
    tmp_path: Path,
) -> None:
    # The group commit failed for several seconds (the writer reports the error and waits
    # 5 s before its next try), then the store works again, and the manager is stopped.
    # The stop does not wait for the writer's next try: what the writer left (the outcome
    # of an attempt that ended) must be written to the store directly, not left `running`
    # in the name of a manager that has stopped.
    class Flaky(SQLiteStore):
        failing = False

        async def write_batch(self, *args: Any, **kwargs: Any) -> Any:
            if self.failing:
                raise OSError("disk I/O error")
            return await super().write_batch(*args, **kwargs)

    path = str(tmp_path / "w.db")
    store = Flaky(path)
    tm = make(store, shutdown_grace=2.0)  # type: ignore[arg-type]
    started = anyio.Event()

    @tm.task
    async def slow() -> str:
        started.set()
        await anyio.sleep(0.2)
        return "done"

    async with tm:
        task_id = await tm.enqueue(slow)
        with anyio.fail_after(5):
            await started.wait()
        store.failing = True
        with anyio.fail_after(15):
            while tm._write_error is None:  # noqa: ASYNC110 - waiting for the writer to give up
                await anyio.sleep(0.05)
        store.failing = False
        stopped_at = anyio.current_time()
    assert anyio.current_time() - stopped_at < 2.0
    rec = store.get(task_id)
    assert rec is not None
    assert (rec.status, rec.result, rec.owner) == (TaskStatus.SUCCESS, "done", None)


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
async def test_tasks_queued_as_the_manager_is_cancelled_are_not_lost(
    tmp_path: Path, kind: str
) -> None:
    # add_task returned their ids; the writer was gone before its next commit. The
    # teardown writes them to the store itself.
    path = str(tmp_path / "q.db")
    store: Any = SQLiteStore(path) if kind == "sqlite" else MemoryStore()
    tm = make(store)

    @tm.task
    async def noop() -> None:
        pass

    with anyio.CancelScope() as outer:
        async with tm:
            await anyio.sleep(0.05)  # the writer waits for work
            outer.cancel()
            ids = [tm.add_task(noop) for _ in range(3)]
            # a thread queues one too (on the memory store as well, it waits for the
            # group commit)
            thread = threading.Thread(target=lambda: ids.append(tm.add_task(noop)))
            thread.start()
            thread.join(5)
            assert len(ids) == 4
    await store.open()
    try:
        found = {rec.id: rec.status for rec in await store.fetch_many(ids)}
    finally:
        await store.close()
    assert sorted(found) == sorted(ids)
    assert set(found.values()) <= {TaskStatus.PENDING, TaskStatus.SUCCESS}


async def test_tasks_the_teardown_could_not_write_run_at_the_next_start(tmp_path: Path) -> None:
    class RefusingInserts(SQLiteStore):
        refuse = True

        async def insert(self, records: Any) -> list[bool]:
            if self.refuse:
                raise OSError("disk unplugged")
            return await super().insert(records)

    store = RefusingInserts(str(tmp_path / "r.db"))
    tm = make(store)  # type: ignore[arg-type]

    @tm.task
    async def noop() -> str:
        return "ran"

    with anyio.CancelScope() as outer:
        async with tm:
            await anyio.sleep(0.05)
            outer.cancel()
            ids = [tm.add_task(noop) for _ in range(2)]
    assert store.get(ids[0]) is None  # not written, but still queued in the manager
    store.refuse = False
    async with tm:
        for task_id in ids:
            with anyio.fail_after(5):
                assert (await tm.wait(task_id)).result == "ran"


async def test_outcomes_the_teardown_could_not_write_are_written_at_the_next_start(
    tmp_path: Path,
) -> None:
    # Torn down by a cancellation while the store refuses writes: the teardown must not
    # crash (the error of recording a cut attempt raised in place of the cancellation),
    # and the outcomes it could not write (an attempt that ended, one it cut) stay queued
    # like the tasks it could not write, for the next start, instead of leaving their
    # tasks `running` in the name of the stopped run until their leases run out.
    class Flaky(SQLiteStore):
        failing = False

        def check(self) -> None:
            if self.failing:
                raise OSError("disk I/O error")

        async def write_batch(self, *args: Any, **kwargs: Any) -> Any:
            self.check()
            return await super().write_batch(*args, **kwargs)

        async def complete(self, *args: Any, **kwargs: Any) -> Any:
            self.check()
            return await super().complete(*args, **kwargs)

    store = Flaky(str(tmp_path / "o.db"))
    tm = make(store, max_concurrency=2, shutdown_grace=2.0)  # type: ignore[arg-type]

    @tm.task
    async def short() -> str:
        await anyio.sleep(0.1)
        return "done"

    @tm.task
    async def long() -> None:
        await anyio.sleep(30)

    with anyio.CancelScope() as outer:
        async with tm:
            ended, cut = await tm.enqueue(short), await tm.enqueue(long)
            await wait_running(tm, ended, cut)
            store.failing = True
            await anyio.sleep(0.3)  # `short` has ended; its outcome is not committed
            outer.cancel()
    for task_id in (ended, cut):
        rec = store.get(task_id)
        assert rec is not None
        assert rec.status is TaskStatus.RUNNING  # (nothing could be written)
    store.failing = False
    async with tm:
        await tm.flush()
    statuses = {task_id: store.get(task_id).status for task_id in (ended, cut)}  # type: ignore[union-attr]
    assert statuses == {ended: TaskStatus.SUCCESS, cut: TaskStatus.INTERRUPTED}


async def test_a_group_commit_failing_during_the_teardown_is_waited_for(tmp_path: Path) -> None:
    # The writer's write runs to its end even when the writer is cancelled. The teardown
    # waits for it: here it fails and puts its records back in the queue, and the
    # teardown writes them once (they are not left queued as well, which would make the
    # next flush fail and the next start insert them again).
    class FailingCommit(SQLiteStore):
        armed = False

        async def write_batch(self, records: Any, *args: Any, **kwargs: Any) -> Any:
            if records and self.armed:
                with anyio.CancelScope(shield=True):
                    await anyio.sleep(0.5)  # in flight...
                raise OSError("disk I/O error")  # ...and failing
            return await super().write_batch(records, *args, **kwargs)

    store = FailingCommit(str(tmp_path / "f.db"))
    tm = make(store, max_concurrency=1, shutdown_grace=0.3)  # type: ignore[arg-type]

    @tm.task
    async def noop() -> None:
        pass

    @tm.task
    async def busy() -> None:
        await anyio.sleep(5)

    with anyio.CancelScope() as outer:
        async with tm:
            await wait_running(tm, await tm.enqueue(busy))  # no free slot: no claim
            store.armed = True
            ids = [tm.add_task(noop) for _ in range(3)]
            await anyio.sleep(0.1)  # the writer has taken them; its write is in flight
            outer.cancel()
    assert all(store.get(task_id) is not None for task_id in ids)
    await tm.flush()  # nothing left queued


async def test_a_group_commit_cancelled_in_flight_loses_nothing(tmp_path: Path) -> None:
    # A store whose write lets a cancellation in (a network database driver): the
    # writer's write with no claim in it (no free slot) is not shielded, and a teardown
    # ends it. Whether it committed is unknown: the tasks it held must still reach the
    # store, not vanish with it after add_task returned their ids.
    class NetworkLike(SQLiteStore):
        async def write_batch(self, *args: Any, **kwargs: Any) -> Any:
            await anyio.sleep(0.2)  # the round trip to the server
            return await super().write_batch(*args, **kwargs)

    store = NetworkLike(str(tmp_path / "n.db"))
    tm = make(store, max_concurrency=1, shutdown_grace=0.3)  # type: ignore[arg-type]

    @tm.task
    async def noop() -> None:
        pass

    @tm.task
    async def busy() -> None:
        await anyio.sleep(5)

    with anyio.CancelScope() as outer:
        async with tm:
            await wait_running(tm, await tm.enqueue(busy))  # no free slot: no claim
            ids = [tm.add_task(noop) for _ in range(3)]
            await anyio.sleep(0.1)  # the writer has taken them; its write is in flight
            outer.cancel()
    assert all(store.get(task_id) is not None for task_id in ids)
    await tm.flush()  # nothing left queued


async def test_stop_from_another_thread_shuts_the_manager_down() -> None:
    tm = make(MemoryStore())
    finished: list[str] = []

    @tm.task
    async def slow() -> None:
        await anyio.sleep(0.2)
        finished.append("slow")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(tm.run)
            task_id = await tm.enqueue(slow)
            await wait_running(tm, task_id)
            await anyio.to_thread.run_sync(tm.stop)
            # run() returns by itself: the group exits without cancelling it
    assert finished == ["slow"]  # a graceful stop: the running task finished
    rec = tm.store.get(task_id)
    assert rec is not None
    assert rec.status is TaskStatus.SUCCESS


async def test_a_stop_asked_while_the_manager_starts_is_not_lost() -> None:
    # A stop asked while the store opens and recovers (by another task, a thread, a
    # signal handler) must stop the manager once it has started, not be dropped.
    class SlowRecover(MemoryStore):
        async def recover(self, now: Any) -> Any:
            await anyio.sleep(0.3)
            return await super().recover(now)

    tm = make(SlowRecover())
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(tm.run)
            await anyio.sleep(0.1)
            assert tm.state.value == "starting"
            await anyio.to_thread.run_sync(tm.stop)
            tm.stop()  # (from the event loop thread too)
            # run() returns by itself: the group exits without cancelling it
    assert tm.state.value == "idle"


async def test_task_claimed_just_before_stop_is_cut_off_too() -> None:
    store = SlowClaimStore()
    tm = make(store)
    release = threading.Event()

    @tm.task
    def blocked() -> None:
        release.wait(30)

    try:
        async with tm:
            task_id = await tm.enqueue(blocked)
            await wait_running(tm, task_id)  # claimed; the claim has not returned yet
            stopped_at = anyio.current_time()
        elapsed = anyio.current_time() - stopped_at
    finally:
        release.set()
    assert elapsed <= 0.3 + GRACE + 1.0
    rec = store.get(task_id)
    assert rec is not None
    assert rec.status is TaskStatus.INTERRUPTED


@pytest.mark.parametrize("storage", ["memory", "sqlite"])
async def test_pending_tasks_stay_pending_and_run_after_restart(storage: str, db_path: str) -> None:
    memory = MemoryStore()
    gate = anyio.Event()
    done: list[int] = []

    def manager() -> TaskManager:
        # sqlite: a new manager on the same file, as after a process restart;
        # memory: one store reused by two manager runs, the same thing in-process
        if storage == "sqlite":
            tm = TaskManager(snapshot_db=db_path, max_concurrency=1, shutdown_grace=GRACE)
        else:
            tm = make(memory, max_concurrency=1)

        @tm.task(name="blocker")
        async def blocker() -> None:
            await gate.wait()

        @tm.task(name="job")
        async def job(i: int) -> None:
            done.append(i)

        return tm

    tm = manager()
    async with tm:
        first = await tm.enqueue("blocker")
        await wait_running(tm, first)
        waiting = [await tm.enqueue("job", i) for i in range(3)]
        gate.set()
        tm.stop()
    between = memory if storage == "memory" else SQLiteStore(db_path)
    await between.open()
    try:
        statuses = [(await between.fetch(i)).status for i in [first, *waiting]]  # type: ignore[union-attr]
    finally:
        await between.close()
    assert statuses[0] is TaskStatus.SUCCESS
    ran = [waiting[n] for n in done]
    assert [s for i, s in zip(waiting, statuses[1:], strict=True) if i not in ran] == [
        TaskStatus.PENDING
    ] * (3 - len(ran))
    assert len(ran) <= 1  # the stop came before the last ones were claimed
    tm = manager()
    async with tm:
        await tm.join(timeout=5)
        records = [await tm.get(i) for i in waiting]
    assert sorted(done) == [0, 1, 2]
    assert {r.status for r in records if r is not None} == {TaskStatus.SUCCESS}


SCRIPT = """
import sys, time
import anyio
from anytask import TaskManager, TaskStatus

tm = TaskManager(shutdown_grace=0.2, poll_interval=0.05)

@tm.task
def stuck() -> None:
    time.sleep(30)

async def main() -> None:
    async with tm:
        task_id = await tm.enqueue(stuck)
        while (await tm.get(task_id)).status is not TaskStatus.RUNNING:
            await anyio.sleep(0.01)
    print((await tm.store.fetch(task_id)).status.value, flush=True)

anyio.run(main, backend=sys.argv[1])
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_abandoned_sync_task_does_not_keep_the_process_alive(backend: str) -> None:
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), backend],
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "interrupted"
    assert elapsed < 10, f"the process took {elapsed:.1f}s to exit"


NEVER_RUN_SCRIPT = """
import sys
import anyio
from anytask import MemoryStore, SQLiteStore, TaskManager

case, path = sys.argv[1], sys.argv[2]


class FailingAtTeardown(SQLiteStore):
    async def insert(self, records):
        raise OSError("disk gone")


async def main() -> None:
    store = FailingAtTeardown(path) if case == "teardown write fails" else SQLiteStore(path)
    tm = TaskManager(store=store, shutdown_grace=0.5)

    @tm.task(name="job")
    async def job() -> None:
        pass

    if case == "queued, then started":
        print(tm.add_task(job))
        async with tm:
            await tm.join(timeout=10)
    elif case == "queued after the stop":
        async with tm:
            pass
        print(tm.add_task(job))
    elif case == "never started":
        print(tm.add_task(job), tm.add_task(job))
    else:  # the writer never gets to them, and the teardown's own write fails
        with anyio.CancelScope() as scope:
            async with tm:
                tm._wake_writer = lambda: None
                print(tm.add_task(job))
                scope.cancel()
                await anyio.sleep(1)


anyio.run(main)
"""


@pytest.mark.parametrize(
    "case",
    ["queued, then started", "queued after the stop", "never started", "teardown write fails"],
)
def test_tasks_a_manager_never_wrote_are_named_at_exit(case: str, tmp_path: Path) -> None:
    # add_task on a manager that is not running keeps the task for its next start. When
    # the process ends before that, the task is lost: the exit says so, with its id,
    # instead of losing it silently. A task the next start did write is not mentioned.
    proc = subprocess.run(
        [sys.executable, "-c", NEVER_RUN_SCRIPT, case, str(tmp_path / "t.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    ids = proc.stdout.split()
    assert ids, proc.stdout
    warned = [line for line in proc.stderr.splitlines() if "never written to the store" in line]
    if case == "queued, then started":
        assert warned == [], proc.stderr
        return
    assert len(warned) == 1, proc.stderr
    assert f"{len(ids)} task(s) queued with add_task()" in warned[0]
    assert all(task_id in warned[0] for task_id in ids)


async def test_a_manager_that_wrote_what_it_queued_before_starting_is_not_kept_alive() -> None:
    # Managers holding tasks queued while not running are kept (to name those tasks at
    # exit) only until a run writes them: afterwards nothing holds the manager.
    tm = make(MemoryStore())

    @tm.task
    async def job() -> None:
        pass

    task_id = tm.add_task(job)
    assert tm in _manager_module._queued_while_idle
    async with tm:
        await tm.wait(task_id, timeout=10)
    ref = weakref.ref(tm)
    del tm, job
    gc.collect()
    assert ref() is None


async def test_wait_and_join_cut_short_by_a_stop_say_the_manager_stopped(
    tmp_path: Path,
) -> None:
    # The stop wakes them and closes the SQLite store; they must not then report the
    # closed store (StoreError) but that the manager stopped.
    tm = make(SQLiteStore(str(tmp_path / "w.db")), shutdown_grace=0.2)  # type: ignore[arg-type]

    @tm.task(requeue_on_interrupt=True)
    async def long() -> None:
        await anyio.sleep(30)

    errors: dict[str, BaseException] = {}

    async def record(what: str, call: Any) -> None:
        try:
            await call()
        except Exception as exc:
            errors[what] = exc

    async with anyio.create_task_group() as tg, tm:
        task_id = await tm.enqueue(long)
        await wait_running(tm, task_id)
        tg.start_soon(record, "wait", lambda: tm.wait(task_id))
        tg.start_soon(record, "join", tm.join)
        await anyio.sleep(0.1)
    assert sorted(errors) == ["join", "wait"]
    for exc in errors.values():
        assert isinstance(exc, ManagerStateError), repr(exc)


# Outcomes a teardown could not write stay queued for the next start, like tasks: the
# manager is held until then and the exit warns when it never comes.


class FlakyWritesStore(SQLiteStore):
    failing = False

    async def write_batch(self, *args: Any, **kwargs: Any) -> Any:
        if self.failing:
            raise OSError("disk I/O error")
        return await super().write_batch(*args, **kwargs)

    async def complete(self, *args: Any, **kwargs: Any) -> Any:
        if self.failing:
            raise OSError("disk I/O error")
        return await super().complete(*args, **kwargs)


async def test_outcomes_left_by_a_teardown_are_held_and_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("CRITICAL", logger="anytask")
    store = FlakyWritesStore(str(tmp_path / "o.db"))
    tm = TaskManager(store=store, shutdown_grace=0.5)

    @tm.task
    async def short() -> str:
        await anyio.sleep(0.1)
        return "done"

    with anyio.CancelScope() as outer:
        async with tm:
            task_id = await tm.enqueue(short)
            await anyio.sleep(0.05)
            store.failing = True
            await anyio.sleep(0.3)
            outer.cancel()
    assert tm._outcomes
    assert not tm._inserts
    assert tm in _manager_module._queued_while_idle
    caplog.clear()
    caplog.set_level("WARNING", logger="anytask")
    _manager_module._warn_never_committed()
    assert task_id in caplog.text
    assert "outcomes" in caplog.text
    store.failing = False
    async with tm:
        await tm.flush()
    assert store.get(task_id).status is TaskStatus.SUCCESS  # type: ignore[union-attr]
