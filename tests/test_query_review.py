"""Query-side review: MemoryStore and SQLiteStore answer metrics identically."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from anytask import TaskManager
from anytask._errors import ConfigurationError
from anytask._models import TaskRecord, TaskStatus
from anytask.stores.abc import Store
from anytask.stores.memory import MemoryStore
from anytask.stores.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def _rec(i: int, name: str, ended: datetime, *, started: datetime = T0) -> TaskRecord:
    return TaskRecord(
        f"t{i}", name, [], {}, T0, T0, TaskStatus.SUCCESS,
        started_at=started, ended_at=ended, attempts=1,
    )  # fmt: skip


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    st: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "q.db")
    await st.open()
    try:
        yield st
    finally:
        await st.close()


async def test_metrics_durations_are_exact_microseconds(store: Store) -> None:
    # 1 µs and 0.999999 s runs: SQLite subtracted float timestamps (9.5367431640625e-07)
    us = timedelta(microseconds=1)
    await store.insert([_rec(0, "a", T0 + us), _rec(1, "b", T0 + timedelta(seconds=1) - us)])
    m = await store.metrics(T0, T0 + timedelta(seconds=10), 1)
    got = {d.name: (d.count, d.p50, d.p95, d.p99) for d in m.durations}
    assert got == {"a": (1, 1e-06, 1e-06, 1e-06), "b": (1, 0.999999, 0.999999, 0.999999)}


async def test_metrics_task_ending_on_a_bucket_edge(store: Store) -> None:
    us = timedelta(microseconds=1)
    # [T0, T0+3µs) in 3 buckets of 1 µs: a task ending at T0+1µs is in bucket 1
    await store.insert([_rec(0, "a", T0 + us)])
    m = await store.metrics(T0, T0 + 3 * us, 3)
    assert [b.start for b in m.series] == [T0, T0 + us, T0 + 2 * us]
    assert [b.success for b in m.series] == [0, 1, 0]
    # odd window: [T0+1µs, T0+7.000003s) in 7 buckets: edges at ceil(i * span / 7) µs
    since = T0 + us
    m = await store.metrics(since, T0 + timedelta(seconds=7, microseconds=3), 7)
    span = 7_000_002
    assert [b.start for b in m.series] == [
        since + timedelta(microseconds=-(-span * i // 7)) for i in range(7)
    ]
    edge = m.series[2].start
    await store.insert([_rec(1, "a", edge), _rec(2, "a", edge - us)])
    m = await store.metrics(since, T0 + timedelta(seconds=7, microseconds=3), 7)
    assert [b.success for b in m.series] == [1, 1, 1, 0, 0, 0, 0]  # (t0 in bucket 0)


async def test_metrics_sampling_keeps_every_name(store: Store) -> None:
    # past 20,000 timed tasks SQLite samples every k-th by seq: a name whose only task
    # had an odd seq vanished from the durations although its count was known
    s = timedelta(seconds=1)
    recs = [_rec(0, "rare", T0 + 3 * s)]
    recs += [_rec(i, "bulk", T0 + (1 + i % 2) * s) for i in range(1, 20_001)]
    await store.insert(recs)
    m = await store.metrics(T0, T0 + 60 * s, 1)
    names = {d.name: d.count for d in m.durations}
    assert names == {"bulk": 20_000, "rare": 1}
    assert [(d.p50, d.p99) for d in m.durations if d.name == "rare"] == [(3.0, 3.0)]


async def test_metrics_sampling_of_names_that_take_turns(store: Store) -> None:
    # two names queued by turns (even and odd seqs) past 20,000 tasks: a sample of every
    # second seq would hold one of them only; both keep an even share, with exact counts
    # and their own run times
    s = timedelta(seconds=1)
    recs = [
        _rec(i, "even" if i % 2 else "odd", T0 + 30 * s, started=T0 + (20 if i % 2 else 10) * s)
        for i in range(1, 30_001)
    ]
    await store.insert(recs)
    m = await store.metrics(T0, T0 + 60 * s, 1)
    assert {d.name: (d.count, d.p50, d.p99) for d in m.durations} == {
        "even": (15_000, 10.0, 10.0),
        "odd": (15_000, 20.0, 20.0),
    }


@pytest.mark.parametrize(
    ("since", "until", "buckets"),
    [
        (datetime(2024, 1, 1), datetime(2024, 1, 2), 3),  # naive
        (T0, datetime(2024, 1, 2), 3),
        (T0, T0 + timedelta(hours=1), 0),
        (T0, T0 + timedelta(hours=1), -1),
    ],
)
async def test_metrics_bad_arguments_same_error(
    store: Store, since: datetime, until: datetime, buckets: int
) -> None:
    await store.insert([_rec(0, "a", T0 + timedelta(seconds=1))])
    with pytest.raises(ConfigurationError):
        await store.metrics(since, until, buckets)


async def test_manager_metrics_naive_datetime_is_a_clear_error() -> None:
    tm = TaskManager(store=MemoryStore())
    async with tm:
        with pytest.raises(ConfigurationError, match="timezone-aware"):
            await tm.metrics(since=datetime(2024, 1, 1))
        with pytest.raises(ConfigurationError, match="timezone-aware"):
            await tm.metrics(since=datetime(2024, 1, 1), until=datetime(2024, 1, 2))
