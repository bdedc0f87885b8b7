"""Task identity: what name a callable is stored under, and whether a process that runs
the task later (after a restart, or another one sharing the store) finds the same
callable again by that name."""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from anytask import (
    ConfigurationError,
    MemoryStore,
    SQLiteStore,
    TaskManager,
    TaskRecord,
    TaskStatus,
)

RAN: list[Any] = []


async def send(to: str) -> None:
    RAN.append(("send", to))


def _closure(user: str) -> Any:
    async def job() -> None:
        RAN.append(("job", user))

    return job


class Mailer:
    def __init__(self, sender: str) -> None:
        self.sender = sender

    async def send(self, to: str) -> None:
        RAN.append((self.sender, to))


def _not_found_again() -> list[tuple[str, Any, str]]:
    return [
        ("lambda", lambda: RAN.append("lambda"), "a lambda"),
        ("closure", _closure("alice"), "defined inside another function"),
        ("partial", functools.partial(send, "alice"), "functools.partial"),
    ]


@pytest.mark.parametrize("index", range(3), ids=["lambda", "closure", "partial"])
async def test_a_durable_store_refuses_a_callable_it_could_not_find_again(
    tmp_path: Path, index: int
) -> None:
    # before: phase 1 queued partial(send, "alice"); after a restart the first
    # partial(send, "bob") took the name "send", and alice's task ran as send("bob")
    _, fn, why = _not_found_again()[index]
    tm = TaskManager(store=SQLiteStore(tmp_path / "t.db"))
    async with tm:
        with pytest.raises(ConfigurationError, match=why):
            tm.add_task(fn)
        with pytest.raises(ConfigurationError, match=why):
            await tm.enqueue(fn, delay=1)  # the options path
        assert sum((await tm.counts()).values()) == 0
        tm.task(fn)  # registered on purpose: taken
        assert (await tm.wait(await tm.enqueue(fn), timeout=10)).status is TaskStatus.SUCCESS


async def test_memory_store_still_takes_them() -> None:
    # its tasks end with the process: nothing is found again by name
    RAN.clear()
    tm = TaskManager(store=MemoryStore())
    async with tm:
        for _, fn, _ in _not_found_again():
            assert (await tm.wait(await tm.enqueue(fn), timeout=5)).status is TaskStatus.SUCCESS
    expected = ["lambda", ("job", "alice"), ("send", "alice")]
    assert sorted(map(str, RAN)) == sorted(map(str, expected))


async def test_found_again_callables_are_taken_on_a_durable_store(tmp_path: Path) -> None:
    RAN.clear()
    mailer = Mailer("ops@example.com")
    tm = TaskManager(store=SQLiteStore(tmp_path / "t.db"))
    async with tm:
        ids = [await tm.enqueue(send, "a"), await tm.enqueue(mailer.send, "b")]
        for task_id in ids:
            assert (await tm.wait(task_id, timeout=10)).status is TaskStatus.SUCCESS
    assert sorted(RAN) == [("ops@example.com", "b"), ("send", "a")]


async def test_task_above_staticmethod_is_found_by_the_class_attribute() -> None:
    tm = TaskManager(store=MemoryStore())

    class Jobs:
        @tm.task(retries=2)
        @staticmethod
        async def nightly(n: int) -> int:
            return n * 2

    async with tm:
        rec = await tm.wait(await tm.enqueue(Jobs.nightly, 21), timeout=5)
    assert (rec.name, rec.result, rec.max_attempts) == (Jobs.nightly.__qualname__, 42, 3)


def test_task_above_classmethod_says_how_to_register_it() -> None:
    tm = TaskManager(store=MemoryStore())
    with pytest.raises(ConfigurationError, match=r"tm\.task\(Cls\.method\)"):

        class Jobs:
            @tm.task  # type: ignore[arg-type]
            @classmethod
            async def nightly(cls) -> None:
                pass


def test_a_decorator_above_the_task_is_named_in_the_error() -> None:
    tm = TaskManager(store=MemoryStore())

    def logged(fn: Any) -> Any:
        @functools.wraps(fn)
        async def wrapper(*args: Any) -> Any:
            return await fn(*args)

        return wrapper

    @logged
    @tm.task(retries=3)
    async def charge(n: int) -> None:
        pass

    with pytest.raises(ConfigurationError, match=r"put @tm\.task above the other decorators"):
        tm.add_task(charge, 1)
    with pytest.raises(ConfigurationError, match="pass its arguments to add_task instead"):
        tm.add_task(functools.partial(charge.__wrapped__, 1))


def test_a_callable_object_given_to_add_task_says_how_to_name_it() -> None:
    class Job:
        async def __call__(self) -> None:
            pass

    tm = TaskManager(store=MemoryStore())
    with pytest.raises(ConfigurationError, match=r"tm\.task\(name=\.\.\.\)\(obj\)"):
        tm.add_task(Job())
    tm.task(name="job")(job := Job())
    assert tm._build(job, (), {}).name == "job"


def test_redefining_a_bound_method_reaches_every_access_of_it() -> None:
    # a bound method seen by add_task kept its definition (by id) after @tm.task gave the
    # name new options: its tasks were queued with the old max_attempts
    tm = TaskManager(store=MemoryStore())
    mailer = Mailer("x")
    first = mailer.send
    tm._build(first, ("a",), {})  # add_task's record, registering it
    tm.task(retries=2)(mailer.send)  # another bound-method object, equal to the first
    assert tm._build(first, ("b",), {}).max_attempts == 3
    assert tm._build(mailer.send, ("c",), {}).max_attempts == 3


async def test_a_busy_instance_that_has_the_task_is_not_starved_by_one_that_lacks_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    has = TaskManager(
        store=SQLiteStore(path), instance_id="has", poll_interval=0.05, max_concurrency=1
    )
    lacks = TaskManager(
        store=SQLiteStore(path),
        instance_id="lacks",
        poll_interval=0.05,
        max_concurrency=1,
        unregistered_grace=3,
    )

    @has.task(name="work")
    async def work(n: int) -> None:
        await anyio.sleep(0.1)

    started = time.monotonic()
    async with has, lacks:
        ids = [await has.enqueue("work", n) for n in range(8)]  # 0.8 s of work for "has"
        records = [await has.wait(task_id, timeout=60) for task_id in ids]
    failed = [r for r in records if r.status is not TaskStatus.SUCCESS]
    assert failed == [], f"{len(failed)} failed after {time.monotonic() - started:.1f}s"


async def test_a_task_handed_back_fails_once_the_instance_that_had_it_is_gone(
    tmp_path: Path,
) -> None:
    # first handed back 20 s ago, while an instance that has the task still ran others of
    # its name (the last one ended 15 s ago); that instance has been gone since, longer
    # than the grace (and 10 s): the task fails, instead of being handed back for good
    path = tmp_path / "t.db"
    now = time.time()
    at = datetime.fromtimestamp
    store = SQLiteStore(path)
    await store.open()
    await store.insert(
        [
            TaskRecord(
                id="ran", name="work", args=[], kwargs={}, created_at=at(now - 22, UTC),
                run_after=at(now - 22, UTC), status=TaskStatus.SUCCESS,
                ended_at=at(now - 15, UTC),
            ),
            TaskRecord(
                id="left", name="work", args=[], kwargs={}, created_at=at(now - 21, UTC),
                run_after=at(now - 1, UTC), error_type="TaskNotRegistered",
                logs=[{"ts": now - 20, "level": "warning", "msg": "handed back",
                       "unregistered_in": "lacks"}],
            ),
        ]
    )  # fmt: skip
    await store.close()
    lacks = TaskManager(
        store=SQLiteStore(path), instance_id="lacks", poll_interval=0.05, unregistered_grace=1
    )
    async with lacks:
        rec = await lacks.wait("left", timeout=8)
    assert rec.status is TaskStatus.FAILED
    assert rec.error_type == "TaskNotRegistered"
