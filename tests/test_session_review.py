"""Regression tests from a review of the latest fixes (shared SQLiteStore, swallowed
timeouts, sync callables returning coroutines, big ints, trusted origins)."""

from __future__ import annotations

import inspect
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from anytask import MemoryStore, PayloadError, SQLiteStore, TaskManager, TaskStatus
from anytask._codec import check_json


async def test_open_during_the_last_close_gets_an_open_store(tmp_path: Path) -> None:
    # The last user's close() counts the store off, then closes the writer in a thread. A
    # user of the same event loop that opened it meanwhile (a manager starting while
    # another stops) saw it still open, counted itself, and was left with a closed store.
    store = SQLiteStore(tmp_path / "t.db")
    await store.open()
    close_writer = store._close_writer

    def slow_close_writer() -> None:
        time.sleep(0.2)
        close_writer()

    store._close_writer = slow_close_writer  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.close)
        with anyio.fail_after(5):
            while store._holder[1] != 0:  # noqa: ASYNC110 - the close has begun
                await anyio.sleep(0.005)
        await store.open()  # a second user, while that close is in flight
    try:
        counts = await store.counts()  # the store must be open for it
        assert counts[TaskStatus.PENDING] == 0
    finally:
        await store.close()
    assert store._writer is None  # and its own close closes it


async def test_tm_cancel_of_a_task_past_its_timeout_is_not_retried() -> None:
    # A task cancelled with tm.cancel() catches the cancellation, cleans up past its
    # timeout and returns. The swallowed-timeout rule turned that into a TimeoutError,
    # and the retry ran the task again although its cancel had been asked.
    tm = TaskManager(store=MemoryStore())
    runs: list[int] = []
    started = anyio.Event()

    @tm.task(timeout=0.5, retries=1, delay=0)
    async def job() -> str:
        runs.append(1)
        started.set()
        t0 = anyio.current_time()
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):  # the clean-up outlasts the timeout
                await anyio.sleep(max(0.0, t0 + 0.8 - anyio.current_time()))
        return "partial"

    async with tm:
        task_id = tm.add_task(job)
        with anyio.fail_after(5):
            await started.wait()
        await tm.cancel(task_id)
        rec = await tm.wait(task_id, timeout=10)
        await anyio.sleep(0.2)
        assert rec.error_type != "TimeoutError", rec
        assert runs == [1]  # not run again after the cancel
        assert rec.status is TaskStatus.CANCELLED  # the cancel stands (test_cancel_review)


async def test_coroutine_of_a_sync_call_abandoned_on_timeout_is_closed() -> None:
    # A sync callable that returns a coroutine has it awaited; when its attempt was
    # abandoned (timed out while the thread ran), the coroutine it hands back later was
    # dropped unawaited ("coroutine ... was never awaited" at garbage collection).
    tm = TaskManager(store=MemoryStore())
    made: list[Any] = []

    async def body() -> int:
        return 1

    def wrapper() -> Any:
        time.sleep(0.4)  # past the timeout: the attempt is abandoned meanwhile
        coro = body()
        made.append(coro)
        return coro

    tm.task(timeout=0.1, name="wrapped")(wrapper)
    try:
        async with tm:
            task_id = tm.add_task("wrapped")
            rec = await tm.wait(task_id, timeout=10)
            assert rec.error_type == "TimeoutError"
            with anyio.fail_after(5):
                while tm.abandoned_threads:  # noqa: ASYNC110 - the thread returned
                    await anyio.sleep(0.01)
            assert len(made) == 1
            assert inspect.getcoroutinestate(made[0]) == inspect.CORO_CLOSED
    finally:
        for coro in made:
            coro.close()  # (so that a failure here does not also warn)


def test_ints_past_a_lowered_digit_limit_are_refused_where_they_enter() -> None:
    # sys.set_int_max_str_digits (or PYTHONINTMAXSTRDIGITS) may lower the limit to 640
    # digits: an int under the old 4000-digit threshold passed the check and failed at
    # the group commit, taking the other tasks of the batch with it.
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(1000)
    try:
        with pytest.raises(PayloadError):
            check_json([10**2000], "arg")
        tm = TaskManager(store=MemoryStore())

        @tm.task
        async def job(n: int) -> None:
            pass

        with pytest.raises(PayloadError):
            tm.add_task(job, 10**2000)
        check_json([10**900], "arg")  # within the limit: fine
    finally:
        sys.set_int_max_str_digits(limit)


def test_trusted_origins_given_as_an_iterator_are_kept() -> None:
    # The check read the iterator; what was kept of it was then empty.
    from fastapi import FastAPI

    from anytask import TaskAdmin

    hosts = ["admin.example.com", "[::1]:8000"]
    admin = TaskAdmin(
        FastAPI(),
        TaskManager(store=MemoryStore()),
        auth=lambda request: "u",
        trusted_origins=(f"https://{h}" for h in hosts),
    )
    assert admin.trusted_origins == {"https://admin.example.com", "https://[::1]:8000"}


def test_open_from_another_thread_during_the_last_close_waits_for_it(tmp_path: Path) -> None:
    # Once the last user in thread A has begun closing, a user in thread B may take the
    # store over. It used to count itself a user of the store being closed (with A's
    # limiters, of A's event loop) and lose it to that close; it now opens it afresh.
    import threading

    store = SQLiteStore(tmp_path / "t.db")
    close_writer = store._close_writer

    def slow_close_writer() -> None:
        time.sleep(0.3)
        close_writer()

    store._close_writer = slow_close_writer  # type: ignore[method-assign]
    opened = threading.Event()
    errors: list[BaseException] = []

    async def user_a() -> None:
        await store.open()
        opened.set()
        await anyio.sleep(0.05)
        await store.close()

    def thread_a() -> None:
        try:
            anyio.run(user_a, backend="asyncio")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    async def user_b() -> None:
        with anyio.fail_after(5):
            while store._holder[1] != 0:  # noqa: ASYNC110 - A's close has begun
                await anyio.sleep(0.005)
        await store.open()
        try:
            counts = await store.counts()
            assert counts[TaskStatus.PENDING] == 0
        finally:
            await store.close()

    thread = threading.Thread(target=thread_a)
    thread.start()
    try:
        assert opened.wait(5)
        anyio.run(user_b, backend="trio")
    finally:
        thread.join(10)
    assert not errors
    assert store._writer is None
