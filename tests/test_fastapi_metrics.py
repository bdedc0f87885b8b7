"""Metrics come from the store (tm.metrics / GET /api/metrics): every store computes the
same buckets and nearest-rank percentiles as the generic version that pages through
``list``."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from anytask import MemoryStore, TaskRecord, TaskStatus
from anytask.stores.abc import Store
from anytask.stores.sqlite import SQLiteStore

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def records(n: int) -> list[TaskRecord]:
    rnd = random.Random(3)
    out = []
    for _ in range(n):
        status = rnd.choice(list(TaskStatus))
        ended = NOW - timedelta(seconds=rnd.uniform(-300, 4000))  # some outside the hour
        started = ended - timedelta(seconds=round(rnd.uniform(0, 5), 3))
        terminal = status.terminal
        out.append(
            TaskRecord(
                id=str(uuid.uuid4()),
                name=rnd.choice(["a", "b", "c"]),
                args=[],
                kwargs={},
                created_at=started,
                run_after=started,
                status=status,
                started_at=started if status is not TaskStatus.PENDING else None,
                ended_at=ended if terminal else None,
                attempts=1,
            )
        )
    return out


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s: Store = MemoryStore() if request.param == "memory" else SQLiteStore(str(tmp_path / "m.db"))
    await s.open()
    await s.insert(records(400))
    yield s
    await s.close()


async def test_every_store_agrees_with_the_generic_metrics(store: Store) -> None:
    since, until = NOW - timedelta(hours=1), NOW
    fast = await store.metrics(since, until, 12)
    generic = await Store.metrics(store, since, until, 12)
    assert fast.counts == generic.counts
    assert [(b.start, b.success, b.failed, b.other) for b in fast.series] == [
        (b.start, b.success, b.failed, b.other) for b in generic.series
    ]
    assert len(fast.durations) == 3
    for mine, ref in zip(fast.durations, generic.durations, strict=True):
        assert (mine.name, mine.count) == (ref.name, ref.count)
        assert mine.p50 == pytest.approx(ref.p50, abs=1e-6)
        assert mine.p95 == pytest.approx(ref.p95, abs=1e-6)
        assert mine.p99 == pytest.approx(ref.p99, abs=1e-6)


async def test_buckets_count_what_ended_in_them(store: Store) -> None:
    since, until = NOW - timedelta(hours=1), NOW
    m = await store.metrics(since, until, 6)
    ended = [r for r in records(400) if r.ended_at is not None and since <= r.ended_at < until]
    assert sum(b.success + b.failed + b.other for b in m.series) == len(ended)
    assert sum(b.failed for b in m.series) == sum(1 for r in ended if r.status.dead)
    assert [b.start for b in m.series] == [since + timedelta(minutes=10 * i) for i in range(6)]


async def test_sqlite_percentiles_stay_close_over_a_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anytask.stores import sqlite

    monkeypatch.setattr(sqlite, "_METRICS_EXACT", 50)  # sample beyond 50 timed tasks
    store = SQLiteStore(str(tmp_path / "s.db"))
    await store.open()
    try:
        await store.insert(records(2000))
        since, until = NOW - timedelta(hours=1), NOW
        sampled = await store.metrics(since, until, 4)
        exact = await Store.metrics(store, since, until, 4)
    finally:
        await store.close()
    for mine, ref in zip(sampled.durations, exact.durations, strict=True):
        assert (mine.name, mine.count) == (ref.name, ref.count)  # counts stay exact
        assert mine.p50 == pytest.approx(ref.p50, abs=0.6)  # durations spread over 0..5 s
        assert mine.p95 == pytest.approx(ref.p95, abs=0.6)
    assert [b.success for b in sampled.series] == [b.success for b in exact.series]
