"""Misuse of the public API: clear typed errors, never a crash, a hang or a lost task."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest

from anytask import (
    ConfigurationError,
    ManagerStateError,
    MemoryStore,
    RunState,
    SQLiteStore,
    TaskManager,
    TaskStatus,
)
from anytask.stores.abc import Store

pytestmark = pytest.mark.anyio


def make(store: Store | None = None, **options: Any) -> TaskManager:
    options.setdefault("poll_interval", 0.05)
    options.setdefault("shutdown_grace", 2.0)
    return TaskManager(store=store if store is not None else MemoryStore(), **options)


def _run_in_new_thread(backend: str, fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """``anyio.run(fn)`` in a thread of its own (its own event loop): its result, or the
    exception it raised."""
    box: list[Any] = []

    def main() -> None:
        try:
            box.append(anyio.run(fn, backend=backend))
        except BaseException as exc:  # handed to the test
            box.append(exc)

    thread = threading.Thread(target=main)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    return box[0]


# ------------------------------------------- async calls from another thread's event loop


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_async_calls_from_another_event_loop_are_refused_and_the_manager_lives_on(
    kind: str, tmp_path: Path, anyio_backend_name: str
) -> None:
    # The async methods wait on the manager's own events: awaited on another thread's
    # event loop they hung or failed inside anyio (asyncio), and on trio the manager's
    # writer crashed with an AssertionError when it set an event a task of the other
    # loop waited on, taking the whole manager down. They are refused instead, with a
    # ManagerStateError that says what to do; add_task works from there, as documented.
    store = SQLiteStore(tmp_path / "t.db") if kind == "sqlite" else MemoryStore()
    tm = make(store)

    @tm.task
    async def job(n: int) -> int:
        return n

    with anyio.fail_after(30):
        async with tm:
            done = await tm.enqueue(job, 0)
            await tm.wait(done)
            calls: dict[str, Callable[[], Coroutine[Any, Any, Any]]] = {
                "enqueue": lambda: tm.enqueue(job, 1),
                "enqueue_many": lambda: tm.enqueue_many([(job, (1,), {})]),
                "get": lambda: tm.get(done),
                "list": lambda: tm.list(),
                "counts": lambda: tm.counts(),
                "wait": lambda: tm.wait(done),
                "join": lambda: tm.join(timeout=1),
                "flush": lambda: tm.flush(),
                "cancel": lambda: tm.cancel(done),
                "replay": lambda: tm.replay(done),
            }
            for what, call in calls.items():

                async def elsewhere(call: Callable[[], Coroutine[Any, Any, Any]] = call) -> Any:
                    with anyio.fail_after(5):
                        return await call()

                got = await anyio.to_thread.run_sync(
                    _run_in_new_thread, anyio_backend_name, elsewhere
                )
                assert isinstance(got, ManagerStateError), (what, got)
                assert f"{what}() was called from another thread" in str(got)

            async def add_elsewhere() -> str:
                return tm.add_task(job, 2)

            added = await anyio.to_thread.run_sync(
                _run_in_new_thread, anyio_backend_name, add_elsewhere
            )
            # a worker thread reaches the manager's loop through anyio.from_thread
            from_worker = await anyio.to_thread.run_sync(
                lambda: anyio.from_thread.run(tm.enqueue, job, 3)
            )
            # the manager is alive and well
            assert (await tm.wait(added, timeout=10)).result == 2
            assert (await tm.wait(from_worker, timeout=10)).result == 3
            assert (await tm.wait(await tm.enqueue(job, 4), timeout=10)).result == 4
    assert tm.state is RunState.IDLE


# --------------------------------------------------- one SQLiteStore, several managers


async def test_a_sqlite_store_shared_by_two_managers_stays_open_until_the_last_stops(
    tmp_path: Path,
) -> None:
    # The docs let managers of one event loop share a store. The first SQLiteStore user
    # to stop closed it under the others, which then failed every write (and enqueue
    # raised StoreError after retrying for seconds).
    store = SQLiteStore(tmp_path / "t.db")
    first, second = make(store), make(store)

    async def job(n: int) -> int:
        return n

    first.task(name="job")(job)
    second.task(name="job")(job)
    with anyio.fail_after(20):
        async with first:
            async with second:
                assert (await second.wait(await second.enqueue("job", 1))).result == 1
            assert second.state is RunState.IDLE
            # the first manager goes on with the store the second one has let go of
            assert (await first.wait(await first.enqueue("job", 2))).result == 2
            assert (await first.counts())[TaskStatus.SUCCESS] == 2
    # the last one closed it
    with pytest.raises(Exception, match="is not open"):
        await store.fetch("x")
    await store.close()  # (safe to call more times than open)


async def test_a_sqlite_store_in_use_in_another_thread_is_refused(
    tmp_path: Path, anyio_backend_name: str
) -> None:
    # Its limiters belong to the event loop that opened it: a manager on another
    # thread's loop failed with RuntimeErrors from inside anyio ("no running event
    # loop", "must be called from async context"), and stopped, closed the store under
    # the first one. It is refused as a MemoryStore is; a store of its own on the same
    # file works.
    path = tmp_path / "t.db"
    store = SQLiteStore(path)
    here = make(store)
    here.task(name="job")(lambda n: n)

    async def elsewhere(s: Store) -> Any:
        tm = make(s)
        tm.task(name="job")(lambda n: n)
        async with tm:
            return (await tm.wait(await tm.enqueue("job", 7), timeout=10)).result

    with anyio.fail_after(30):
        async with here:
            refused = await anyio.to_thread.run_sync(
                _run_in_new_thread, anyio_backend_name, lambda: elsewhere(store)
            )
            assert isinstance(refused, ConfigurationError), refused
            assert "in use by a manager (or other user) in another thread" in str(refused)
            own = await anyio.to_thread.run_sync(
                _run_in_new_thread, anyio_backend_name, lambda: elsewhere(SQLiteStore(path))
            )
            assert own == 7
            assert (await here.wait(await here.enqueue("job", 8), timeout=10)).result == 8
        # once it is closed, another thread may open it
        assert (
            await anyio.to_thread.run_sync(
                _run_in_new_thread, anyio_backend_name, lambda: elsewhere(store)
            )
            == 7
        )


# ------------------------------------------------------------- what can be a task


def test_generator_functions_are_refused_as_tasks() -> None:
    # Calling one runs none of its body: its task was recorded `success` (with a log
    # line that the result was not stored) although nothing ran.
    tm = make()

    async def agen(n: int) -> AsyncIterator[int]:
        yield n

    def gen(n: int) -> Iterator[int]:
        yield n

    class Streams:
        async def __call__(self, n: int) -> AsyncIterator[int]:
            yield n

    for fn in (agen, gen):
        with pytest.raises(ConfigurationError, match="is a generator function"):
            tm.task(fn)
        with pytest.raises(ConfigurationError, match="is a generator function"):
            tm.add_task(fn, 1)
    with pytest.raises(ConfigurationError, match="is a generator function"):
        tm.task(name="streams")(Streams())
    assert tm.registry.names() == []


async def test_a_sync_callable_returning_a_coroutine_runs_its_body() -> None:
    # An async function behind a plain (sync) decorator: the coroutine it returned was
    # never awaited, and the task was recorded `success` without running.
    tm = make()
    ran: list[int] = []

    def plain_decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        return wrapper

    @tm.task(name="wrapped")
    @plain_decorator
    async def job(n: int) -> int:
        await anyio.lowlevel.checkpoint()
        ran.append(n)
        return n * 2

    @tm.task(name="wrapped_with_timeout", timeout=5)
    @plain_decorator
    async def timed(n: int) -> int:
        ran.append(n)
        return n

    with anyio.fail_after(10):
        async with tm:
            rec = await tm.wait(await tm.enqueue("wrapped", 21))
            timed_rec = await tm.wait(await tm.enqueue("wrapped_with_timeout", 5))
    assert (rec.status, rec.result, rec.logs) == (TaskStatus.SUCCESS, 42, [])
    assert (timed_rec.status, timed_rec.result) == (TaskStatus.SUCCESS, 5)
    assert sorted(ran) == [5, 21]


# ------------------------------------------------------------------------ lifecycle


async def test_aexit_without_aenter_is_a_manager_state_error() -> None:
    tm = make()
    with pytest.raises(ManagerStateError, match="without a matching __aenter__"):
        await tm.__aexit__(None, None, None)
    async with tm:  # still usable
        assert tm.state is RunState.RUNNING


async def test_wait_on_a_sqlite_manager_that_is_not_running_says_so(tmp_path: Path) -> None:
    # It said "the manager stopped while task x had not ended", about a manager that
    # never ran and a task that does not exist.
    tm = make(SQLiteStore(tmp_path / "t.db"))
    with pytest.raises(ManagerStateError, match="the task manager is not running"):
        await tm.wait("x", timeout=1)
