"""Bad input fails where it is written, names the culprit, and stores nothing."""

from __future__ import annotations

import math
import os
import re
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import anyio
import pytest

from anytask import (
    ConfigurationError,
    MemoryStore,
    PayloadError,
    TaskManager,
    TaskQuery,
    TaskStatus,
    task_log,
)


class Custom:
    pass


BAD_PAYLOADS = [
    pytest.param({1, 2}, "set", id="set"),
    pytest.param(b"raw", "bytes", id="bytes"),
    pytest.param((1, 2), "tuple", id="tuple"),
    pytest.param({1: "a"}, "key 1", id="int-key"),
    pytest.param({"ok": {(1, 2): "a"}}, "key (1, 2)", id="nested-tuple-key"),
    pytest.param(math.nan, "nan", id="nan"),
    pytest.param(math.inf, "inf", id="inf"),
    pytest.param([1, [2, -math.inf]], "-inf", id="nested-inf"),
    pytest.param(Custom(), "Custom", id="object"),
]


def make() -> tuple[TaskManager, Any]:
    tm = TaskManager(store=MemoryStore())

    @tm.task
    async def job(*args: Any, **kwargs: Any) -> None:
        pass

    return tm, job


@pytest.mark.anyio
@pytest.mark.parametrize(("value", "what"), BAD_PAYLOADS)
async def test_bad_positional_argument_is_rejected_and_nothing_stored(
    value: Any, what: str
) -> None:
    tm, job = make()
    async with tm:
        before = await tm.store.count()
        with pytest.raises(TypeError) as info:
            await tm.enqueue(job, "fine", value)
        with pytest.raises(PayloadError):
            tm.add_task(job, value)
        await tm.flush()
        assert await tm.store.count() == before
    message = str(info.value)
    assert "argument 1" in message
    assert what in message


@pytest.mark.anyio
@pytest.mark.parametrize(("value", "what"), BAD_PAYLOADS)
async def test_bad_keyword_argument_is_rejected_and_nothing_stored(value: Any, what: str) -> None:
    tm, job = make()
    async with tm:
        with pytest.raises(PayloadError) as info:
            await tm.enqueue_many([(job, (1,), {}), (job, (), {"payload": value})])
        await tm.flush()
        assert await tm.store.count() == 0  # the good call of the batch is not stored either
    assert "'payload'" in str(info.value)
    assert what in str(info.value)


@pytest.mark.parametrize(
    "options",
    [
        {"retries": -1},
        {"retries": 1.5},
        {"retries": True},
        {"delay": -1.0},
        {"delay": math.nan},
        {"delay": math.inf},
        {"backoff": math.nan},
        {"backoff": 0.5},
        {"backoff": -2},
        {"timeout": 0},
        {"timeout": -3},
        {"timeout": math.nan},
        {"timeout": 10**400},
        {"retries": 2**63},
        {"max_delay": -1},
        {"jitter": 1.5},
        {"priority": 1.5},
        {"priority": True},
        {"priority": "high"},
        {"requeue_on_interrupt": "yes"},
        {"tags": "single-string"},
        {"tags": ["ok", ""]},
        {"tags": [1]},
    ],
)
def test_bad_task_options_fail_at_decoration(options: dict[str, Any]) -> None:
    tm = TaskManager(store=MemoryStore())
    (option,) = options
    with pytest.raises(ValueError, match=option):

        @tm.task(**options)
        def job() -> None:
            pass


@pytest.mark.parametrize(
    "call_options",
    [
        {"priority": 2.5},
        {"priority": False},
        {"priority": math.nan},
        {"delay": -1},
        {"delay": math.nan},
        {"delay": "soon"},
        {"tags": "x"},
        {"tags": [None]},
        {"idempotency_key": ""},
        {"idempotency_key": 42},
        {"run_at": datetime(2030, 1, 1)},  # naive
        {"run_at": "2030-01-01"},
        {"delay": 5, "run_at": datetime(2030, 1, 1, tzinfo=UTC)},
        {"delay": timedelta(seconds=-5)},
    ],
)
def test_bad_call_options_fail_at_the_call_and_queue_nothing(call_options: dict[str, Any]) -> None:
    tm, job = make()
    with pytest.raises(ValueError):
        tm.add_task(job, **call_options)
    assert tm._inserts == []


def test_bad_manager_options_fail_at_construction() -> None:
    for options in (
        {"max_concurrency": 0},
        {"max_concurrency": 2.0},
        {"lease": 0},
        {"poll_interval": math.nan},
        {"shutdown_grace": -1},
        {"requeue_pending": "no"},
    ):
        with pytest.raises(ValueError, match=next(iter(options))):
            TaskManager(store=MemoryStore(), **options)  # type: ignore[arg-type]


# -- text SQLite cannot store: lone surrogates (e.g. an OS error about a non-UTF-8 path) --

LONE = os.fsdecode(b"/tmp/caf\xe9")  # '/tmp/caf\udce9'


async def test_a_lone_surrogate_in_arguments_is_refused_and_nothing_stored(db_path: str) -> None:
    tm = TaskManager(snapshot_db=db_path)

    @tm.task(name="job")
    async def job(*args: Any, **kwargs: Any) -> None:
        pass

    async with tm:
        for call in (
            lambda: tm.add_task(job, LONE),
            lambda: tm.add_task(job, {LONE: 1}),
            lambda: tm.add_task(job, path=[LONE]),
        ):
            with pytest.raises(PayloadError, match="surrogate"):
                call()
        assert await tm.store.count() == 0
        assert (await tm.wait(await tm.enqueue(job, "fine"), timeout=10)).status.value == "success"


async def test_an_error_text_with_a_lone_surrogate_is_recorded_and_the_writer_goes_on(
    db_path: str,
) -> None:
    tm = TaskManager(snapshot_db=db_path)

    @tm.task(name="open_file")
    async def open_file() -> None:
        raise FileNotFoundError(LONE)

    @tm.task(name="log_it")
    async def log_it() -> str:
        task_log(f"opening {LONE}")
        return "done"

    async with tm:
        failed = await tm.wait(await tm.enqueue(open_file), timeout=10)
        logged = await tm.wait(await tm.enqueue(log_it), timeout=10)
    assert failed.status.value == "failed"
    assert failed.error == "/tmp/caf\\udce9"
    assert "FileNotFoundError: /tmp/caf\\udce9" in (failed.traceback or "")
    assert logged.status.value == "success"
    assert logged.logs[0]["msg"] == "opening /tmp/caf\\udce9"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        pytest.param({"statuses": {"faild"}}, "'faild'", id="unknown-status"),
        pytest.param(
            {"statuses": frozenset({"failed", "nope"})}, "'nope'", id="unknown-in-frozenset"
        ),
        pytest.param({"statuses": 3}, "statuses", id="not-a-collection"),
        pytest.param({"created_after": datetime(2026, 1, 1)}, "created_after", id="naive-after"),
        pytest.param({"created_before": datetime(2026, 1, 1)}, "created_before", id="naive-before"),
        pytest.param({"created_after": "2026-01-01"}, "created_after", id="not-a-datetime"),
    ],
)
def test_bad_query_fields_fail_with_a_clear_error(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(named)):
        TaskQuery(**fields)


class _NoOffset(tzinfo):
    """A tzinfo that knows no offset: Python takes such datetimes as naive."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


@pytest.mark.parametrize(
    ("call_options", "says"),
    [
        pytest.param({"delay": 4e8}, "delay must be at most", id="delay-past-the-cap"),
        pytest.param(
            {"run_at": datetime(2030, 1, 1, tzinfo=_NoOffset())},
            "run_at must be timezone-aware",
            id="run_at-tzinfo-without-offset",
        ),
    ],
)
def test_call_options_out_of_bounds_say_which_bound(
    call_options: dict[str, Any], says: str
) -> None:
    tm, job = make()
    with pytest.raises(ConfigurationError, match=re.escape(says)):
        tm.add_task(job, **call_options)
    assert tm._inserts == []


def test_a_backoff_below_one_names_the_real_bound() -> None:
    tm = TaskManager(store=MemoryStore())
    for bad in (-2, 0, 0.5):
        with pytest.raises(ConfigurationError, match=re.escape(f"backoff must be >= 1, got {bad}")):
            tm.task(backoff=bad)(lambda: None)


@pytest.mark.anyio
async def test_replay_and_dead_letter_selections_name_the_argument_that_was_wrong() -> None:
    tm = TaskManager(store=MemoryStore())
    naive = datetime(2026, 1, 1)
    async with tm:
        for call in (tm.replay_many, tm.dead_letters):
            with pytest.raises(ConfigurationError, match=r"^since must be timezone-aware"):
                await call(since=naive)
            with pytest.raises(ConfigurationError, match=r"^until must be timezone-aware"):
                await call(until=naive)
            with pytest.raises(TypeError, match="ids must be a collection of task ids"):
                await call(ids="0b1c5e2e-8f5d-4a53-9d7e-2f3a4b5c6d7e")
        assert await tm.counts() == dict.fromkeys(TaskStatus, 0)  # nothing was written


async def test_a_big_int_timeout_is_stored_as_seconds_and_fails_no_commit(db_path: str) -> None:
    # an int timeout past 64 bits cannot be written to SQLite; as a float it can, and an
    # ordinary task enqueued in the same group commit is not taken down with it
    tm = TaskManager(snapshot_db=db_path)

    @tm.task(timeout=10**20)
    async def big() -> int:
        return 1

    @tm.task(timeout=3)
    async def plain() -> int:
        return 2

    async with tm:
        ids: list[str] = []
        async with anyio.create_task_group() as tg:
            for fn in (plain, big, plain):
                tg.start_soon(lambda fn=fn: _append(ids, tm.enqueue(fn)))
        for task_id in ids:
            rec = await tm.wait(task_id, timeout=10)
            assert rec.status.value == "success"
            assert type(rec.timeout) is float
        assert len(ids) == 3


async def _append(ids: list[str], enqueue: Any) -> None:
    ids.append(await enqueue)


@pytest.mark.parametrize("timeout", ["5", math.nan, True, [1]])
async def test_wait_and_join_refuse_a_timeout_that_is_not_seconds(timeout: Any) -> None:
    # a str raised a bare TypeError from the arithmetic; NaN passed to join waited forever
    tm = TaskManager()

    @tm.task
    async def job() -> None:
        pass

    async with tm:
        task_id = await tm.enqueue(job)
        with pytest.raises(ConfigurationError, match="timeout must be a number"):
            await tm.wait(task_id, timeout=timeout)
        with pytest.raises(ConfigurationError, match="timeout must be a number"):
            await tm.join(timeout=timeout)
        assert (await tm.wait(task_id, timeout=5)).status is TaskStatus.SUCCESS
        await tm.join(timeout=5)
