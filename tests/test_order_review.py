"""Review of when and in which order tasks run: enqueue options at their edges, and the
claim order (priority, then FIFO) on both stores."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest

from anytask import ConfigurationError, MemoryStore, TaskManager

pytestmark = pytest.mark.anyio


def _manager(kind: str, tmp_path: Path, **kw: Any) -> TaskManager:
    if kind == "memory":
        return TaskManager(store=MemoryStore(), **kw)
    return TaskManager(snapshot_db=str(tmp_path / "tasks.db"), **kw)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize(
    "opts",
    [
        # an aware run_at whose UTC time is past year 9999 (raised a bare ValueError)
        pytest.param(
            {"run_at": datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5)))},
            id="run_at-past-9999-in-utc",
        ),
        # an int past the float range (raised a bare OverflowError, as the decorator's
        # delay= does not)
        pytest.param({"delay": 10**400}, id="delay-huge-int"),
        pytest.param({"delay": -(10**400)}, id="delay-huge-negative-int"),
    ],
)
async def test_out_of_range_times_are_configuration_errors(
    kind: str, opts: dict[str, Any], tmp_path: Path
) -> None:
    tm = _manager(kind, tmp_path)

    @tm.task(name="job")
    async def job() -> None:
        pass

    async with tm:
        option = next(iter(opts))
        with pytest.raises(ConfigurationError, match=option):
            await tm.enqueue(job, **opts)
        with pytest.raises(ConfigurationError, match=option):
            tm.add_task(job, **opts)
        with pytest.raises(ConfigurationError, match=option):
            await tm.enqueue_many([(job, (), dict(opts))])
        await tm.flush()
        assert sum((await tm.counts()).values()) == 0  # nothing stored


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_priority_then_fifo_with_a_delayed_task_and_a_retry(
    kind: str, tmp_path: Path
) -> None:
    """max_concurrency=1: the order seen from inside the tasks is the same on both stores:
    priority first, then enqueue order (a delayed task that came due and a retry keep
    their place among tasks of their priority)."""
    tm = _manager(kind, tmp_path, max_concurrency=1, poll_interval=0.05)
    order: list[str] = []
    gate = anyio.Event()
    failed: set[str] = set()

    @tm.task(name="blocker")
    async def blocker() -> None:
        await gate.wait()

    @tm.task(name="job", retries=1, delay=0)
    async def job(tag: str) -> None:
        order.append(tag)
        if tag == "flaky" and tag not in failed:
            failed.add(tag)
            raise RuntimeError("once")

    async with tm:
        await tm.enqueue(blocker)
        await anyio.sleep(0.1)
        await tm.enqueue(job, "p0-a", priority=0)
        await tm.enqueue(job, "p0-delayed", priority=0, delay=0.2)
        await tm.enqueue(job, "p5-a", priority=5)
        tm.add_task(job, "p0-b", priority=0)
        await tm.enqueue(job, "p-1", priority=-1)
        await tm.enqueue_many([(job, ("m3",), {"priority": 3}), (job, ("m7",), {"priority": 7})])
        await tm.enqueue(job, "p5-b", priority=5)
        await anyio.sleep(0.4)  # the delayed one is due
        gate.set()
        await tm.join()
    assert order == ["m7", "p5-a", "p5-b", "m3", "p0-a", "p0-delayed", "p0-b", "p-1"]

    # a retry goes back in its own place (ahead of newer tasks of its priority)
    tm = _manager(kind, tmp_path / "b" if kind == "sqlite" else tmp_path, max_concurrency=1)
    (tmp_path / "b").mkdir(exist_ok=True)
    order.clear()
    gate = anyio.Event()
    tm.task(name="blocker")(blocker)
    tm.task(name="job", retries=1, delay=0)(job)
    async with tm:
        await tm.enqueue(blocker)
        await anyio.sleep(0.1)
        await tm.enqueue(job, "flaky")
        await tm.enqueue(job, "newer")
        gate.set()
        await tm.join()
    assert order == ["flaky", "flaky", "newer"]
