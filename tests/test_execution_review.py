"""Execution semantics found wanting in a review: results and payloads JSON cannot write,
sync callables that hand back coroutines, generator functions, a KeyboardInterrupt raised
in a sync task's thread, a timeout the task swallows, retry waits without a delay."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from anytask import (
    ConfigurationError,
    MemoryStore,
    PayloadError,
    TaskManager,
    TaskStatus,
    get_task_context,
    task_log,
)
from anytask._models import TaskOptions
from anytask.stores.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

STORES = ["memory", "sqlite"]


def make(storage: str, tmp_path: Path, **options: Any) -> TaskManager:
    store = MemoryStore() if storage == "memory" else SQLiteStore(str(tmp_path / "t.db"))
    return TaskManager(store=store, **options)


@pytest.mark.parametrize("storage", STORES)
async def test_an_int_too_long_for_text_is_refused_and_never_kills_the_runtime(
    storage: str, tmp_path: Path
) -> None:
    # JSON writes an int in decimal, which Python refuses past 4300 digits: such a
    # result, argument or log field used to raise ValueError inside the store write (the
    # whole group commit failed and the manager died with StoreError / ValueError).
    tm = make(storage, tmp_path)
    huge = 10**5000

    @tm.task
    async def returns_huge() -> int:
        return huge

    @tm.task
    async def logs_huge() -> None:
        task_log("big", value=huge)

    @tm.task
    async def echo(x: Any) -> Any:
        return x

    async with tm:
        with pytest.raises(PayloadError, match="digits"):
            await tm.enqueue(echo, huge)
        with anyio.fail_after(10):
            rec = await tm.wait(await tm.enqueue(returns_huge))
            logged = await tm.wait(await tm.enqueue(logs_huge))
            after = await tm.wait(await tm.enqueue(echo, 10**100))
    assert rec.status is TaskStatus.SUCCESS
    assert rec.result is None
    assert any("result not stored" in line["msg"] for line in rec.logs)
    assert logged.status is TaskStatus.FAILED
    assert logged.error_type == "PayloadError"
    assert after.status is TaskStatus.SUCCESS
    assert after.result == 10**100


def passthrough(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("storage", STORES)
async def test_a_sync_callable_returning_a_coroutine_runs_it(storage: str, tmp_path: Path) -> None:
    # An async function behind a plain decorator is a sync callable: it ran in a thread,
    # handed back a coroutine that nobody awaited, and the task was recorded a success
    # whose body never ran.
    tm = make(storage, tmp_path)
    ran: list[int] = []

    @tm.task(name="decorated")
    @passthrough
    async def decorated(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        ran.append(x)
        task_log("ran", attempt_seen=get_task_context().attempt)
        return x * 2

    async with tm:
        with anyio.fail_after(10):
            rec = await tm.wait(await tm.enqueue(decorated, 21))
    assert ran == [21]
    assert rec.status is TaskStatus.SUCCESS
    assert rec.result == 42
    assert [line["msg"] for line in rec.logs] == ["ran"]


def test_a_generator_function_is_refused_when_defined() -> None:
    # Calling one only makes a generator: the task "succeeded" without running its body.
    tm = TaskManager(store=MemoryStore())

    def gen() -> Any:
        yield 1

    async def agen() -> Any:
        yield 1

    for fn in (gen, agen, functools.partial(gen)):
        with pytest.raises(ConfigurationError, match="generator"):
            tm.task(fn)
        with pytest.raises(ConfigurationError, match="generator"):
            tm.add_task(fn)


@pytest.mark.parametrize("storage", STORES)
async def test_keyboard_interrupt_raised_in_a_sync_task_is_its_failure(
    storage: str, tmp_path: Path
) -> None:
    # No Ctrl-C is ever delivered to a worker thread: a KeyboardInterrupt raised there is
    # the task's own error. It used to tear the whole manager (and app) down, leaving
    # the record running.
    tm = make(storage, tmp_path)

    @tm.task(retries=1)
    def interrupts() -> None:
        raise KeyboardInterrupt("from the task")

    @tm.task
    async def later() -> str:
        return "ok"

    async with tm:
        with anyio.fail_after(10):
            rec = await tm.wait(await tm.enqueue(interrupts))
            after = await tm.wait(await tm.enqueue(later))
    assert rec.status is TaskStatus.FAILED
    assert rec.attempts == 2
    assert rec.error_type == "KeyboardInterrupt"
    assert rec.error == "from the task"
    assert rec.traceback is not None
    assert "interrupts" in rec.traceback
    assert after.result == "ok"


@pytest.mark.parametrize("storage", STORES)
async def test_a_timeout_the_task_swallows_is_still_a_timeout(storage: str, tmp_path: Path) -> None:
    # "a timeout is a failure (retried)": a task that catches its timeout's cancellation
    # and returns was recorded a success, past its timeout.
    tm = make(storage, tmp_path)
    attempts: list[int] = []

    @tm.task(retries=1, timeout=0.2)
    async def swallows() -> str:
        attempts.append(get_task_context().attempt)
        try:
            await anyio.sleep(5)
        except anyio.get_cancelled_exc_class():
            return "partial"
        return "full"

    async with tm:
        with anyio.fail_after(10):
            rec = await tm.wait(await tm.enqueue(swallows))
    assert attempts == [1, 2]
    assert rec.status is TaskStatus.FAILED
    assert rec.error_type == "TimeoutError"
    assert rec.error is not None
    assert "timed out after 0.2s" in rec.error
    assert rec.result is None


def test_retry_waits_without_a_delay_stay_zero_however_many_retries() -> None:
    # delay * backoff ** n overflowed for a large n, and the wait became max_delay (or a
    # year) although the delay is 0.
    opts = TaskOptions(retries=5000, delay=0, backoff=2.5, max_delay=60)
    assert [opts.retry_wait(n, 0.5) for n in (1, 10, 1000, 4000)] == [0.0] * 4
    opts = TaskOptions(retries=5000, delay=1, backoff=2.5, max_delay=60)
    assert opts.retry_wait(4000, 0.0) == 60.0
