"""Schedules and one-off future runs on the SQLite store, across manager restarts."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest

from anytask import TaskManager, TaskStatus

pytestmark = pytest.mark.anyio


async def test_a_run_at_task_survives_a_restart_and_runs_when_due(db_path: str) -> None:
    first = TaskManager(snapshot_db=db_path, poll_interval=0.05)

    @first.task(name="remind")
    async def remind(who: str) -> str:
        return f"hi {who}"

    async with first:
        run_at = first.clock.now() + timedelta(seconds=1.5)
        task_id = await first.enqueue(remind, "ada", run_at=run_at)
    # the first process is gone; a new one on the same file picks the task up
    second = TaskManager(snapshot_db=db_path, poll_interval=0.05)
    second.task(name="remind")(remind)
    async with second:
        assert (await second.get(task_id)).status is TaskStatus.PENDING  # type: ignore[union-attr]
        rec = await second.wait(task_id, timeout=10)
    assert rec.status is TaskStatus.SUCCESS
    assert rec.result == "hi ada"
    assert rec.started_at is not None
    assert rec.started_at >= run_at


async def test_a_pause_persists_in_the_file_across_restarts(db_path: str) -> None:
    seen: list[str] = []
    for _ in range(2):
        tm = TaskManager(snapshot_db=db_path, poll_interval=0.05)

        @tm.schedule(every=0.2, id="fast", misfire="catch_up", overlap="allow")
        async def fast() -> None:
            seen.append("x")

        async with tm:
            await anyio.sleep(1.0)
            await tm.pause_schedule("fast")
            [info] = await tm.schedules()
        assert info.paused
        assert info.last_status is not None
    tm = TaskManager(snapshot_db=db_path, poll_interval=0.05)
    tm.schedule(every=0.2, id="fast", misfire="catch_up", overlap="allow")(fast)
    async with tm:
        [info] = await tm.schedules()
        assert info.paused  # the pause survived two restarts
        page = await tm.list(schedule_id="fast", limit=1000)
    fire_times = [r.fire_at for r in page.items]
    assert len(fire_times) == len(set(fire_times)) >= 2
