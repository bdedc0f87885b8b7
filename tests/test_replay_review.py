"""Review of replay_many under concurrency: which replays each call reports, with a clock
that gives two replays the same creation time (a coarse or virtual clock)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from anytask import TaskManager
from anytask._clock import Clock
from anytask._manager import QueuedHere, _queued_here
from anytask._models import TaskQuery, TaskRecord, TaskStatus
from anytask.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio

STORES = ["memory", "sqlite"]
_T0 = 1_700_000_000.0


class _FrozenClock(Clock):
    """A clock that does not move while the test runs (a virtual or coarse clock)."""

    def time(self) -> float:
        return _T0


def _manager(kind: str, tmp_path: Path, **kw: Any) -> TaskManager:
    if kind == "memory":
        return TaskManager(store=MemoryStore(), **kw)
    return TaskManager(snapshot_db=str(tmp_path / "tasks.db"), **kw)


def _dead(n: int) -> list[TaskRecord]:
    t = datetime.fromtimestamp(_T0 - 1000, UTC)
    return [
        TaskRecord(
            id=f"dead-{i}",
            name="job",
            args=[],
            kwargs={},
            created_at=t,
            run_after=t,
            status=TaskStatus.FAILED,
            ended_at=t,
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("kind", STORES)
async def test_concurrent_bulk_replays_past_the_verdict_cap_report_each_once(
    kind: str, tmp_path: Path
) -> None:
    # Two bulk replays of more dead tasks than the manager remembers insert verdicts for
    # (2,000): the oldest verdicts were forgotten before the callers read them, and the
    # creation times they fell back on are equal, so the loser reported replays it did
    # not write (each task must be reported by one call only).
    tm = _manager(kind, tmp_path, clock=_FrozenClock())

    @tm.task(name="job")
    async def job() -> None:
        raise ValueError("dead")

    n = 2100
    async with tm:
        dead = _dead(n)
        await tm.store.insert(dead)
        ids = [r.id for r in dead]
        results: list[list[str | None]] = []

        async def bulk() -> None:
            results.append([new for _, new in await tm.replay_many(ids=ids, limit=n)])

        async with anyio.create_task_group() as tg:
            tg.start_soon(bulk)
            tg.start_soon(bulk)
        await tm.flush()
        rows = await tm.store.count(TaskQuery())
        reported = [new for result in results for new in result]
        assert len(set(reported)) == len(reported) == n
        assert rows == 2 * n


@pytest.mark.parametrize("kind", STORES)
async def test_take_back_after_a_refused_bulk_replay_keeps_the_winners_replay(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A request runs replay_many, whose insert the store refused (another caller replayed
    # the task first), then queues a task whose commit fails: the request is answered 503
    # and what it queued is taken back, but the other caller's replay must stand.
    # replay_many had used up the store's verdict on its record, and the creation times
    # the take-back fell back on are equal, so it cancelled the winner's replay.
    tm = _manager(kind, tmp_path, clock=_FrozenClock())
    gate = anyio.Event()

    @tm.task(name="job")
    async def job() -> None:
        await gate.wait()  # (the replay is still running when the request fails)

    async with tm:
        await tm.store.insert(_dead(1))
        results: list[tuple[QueuedHere, list[str | None]]] = []

        async def request() -> None:
            queued = QueuedHere()  # what the FastAPI middleware sets up per request
            token = _queued_here.set(queued)
            try:
                pairs = await tm.replay_many(ids=["dead-0"])
            finally:
                _queued_here.reset(token)
            results.append((queued, [new for _, new in pairs]))

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(request)
        winners = [new for _, news in results for new in news]
        assert len(winners) == 1
        losers = [q for q, news in results if not news and q.records]
        if kind == "sqlite":
            assert losers  # (the memory store writes inline: nothing to take back)
        for queued in losers:
            # the request goes on to queue a task, and the store fails that commit
            async def failing(records: Any) -> Any:
                raise OSError("disk I/O error")

            monkeypatch.setattr(tm.store, "insert", failing)
            token = _queued_here.set(queued)
            try:
                tm.add_task(job)
            finally:
                _queued_here.reset(token)
            queued.is_open = False
            assert not await tm._take_back(queued.records)  # (what the middleware does)
            monkeypatch.undo()
        stored = await tm.store.fetch(winners[0])
        gate.set()
        assert stored is not None
        assert stored.status is not TaskStatus.CANCELLED
        assert not stored.cancel_requested
        assert await tm.replays_of(["dead-0"]) == {"dead-0": winners[0]}
