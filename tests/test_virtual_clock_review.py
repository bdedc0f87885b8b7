"""A manager in a test under a virtual clock (trio's ``MockClock``): its default clock
follows the event loop's, a ``LoopClock`` carries on across event loops, and a clock set
on ``tm.clock`` stamps the log lines too.

Every wait is bounded in virtual time (``fail_after``): a manager whose due times go by
the wall clock lets virtual time run on for as long as real time takes to get there (an
hour, for an hour of backoff), so without the bound such a test hangs.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
import trio.testing

from anytask import (
    LoopClock,
    MemoryStore,
    SystemClock,
    TaskManager,
    TaskStatus,
    get_task_context,
    task_log,
)
from anytask._clock import to_ts

pytestmark = pytest.mark.anyio

_DAY = 86_400.0


def _mock_clock() -> dict[str, Any]:
    return {"clock": trio.testing.MockClock(autojump_threshold=0)}


class TestUnderMockClock:
    @pytest.fixture
    def anyio_backend(self, mock_clock_backend: Any) -> Any:
        return mock_clock_backend

    async def test_the_default_clock_lets_backoffs_delays_and_schedules_fall_due(self) -> None:
        tm = TaskManager(store=MemoryStore())  # no clock given, as in the app under test
        fires: list[float] = []

        @tm.task(retries=1, delay=3600)
        async def flaky() -> int:
            if get_task_context().attempt == 1:
                raise RuntimeError("first attempt fails")
            return 2

        @tm.task
        async def later() -> str:
            return "done"

        @tm.schedule(every=60)
        async def minutely() -> None:
            fires.append(tm.clock.time())

        wall = time.monotonic()
        async with tm:
            assert isinstance(tm.clock, LoopClock)
            with anyio.fail_after(3 * _DAY):
                retried = await tm.wait(await tm.enqueue(flaky))
                delayed = await tm.wait(await tm.enqueue(later, delay=_DAY))
        assert time.monotonic() - wall < 60
        assert retried.status is TaskStatus.SUCCESS
        assert retried.attempts == 2
        assert 3599 < to_ts(retried.ended_at) - to_ts(retried.created_at) < 3700
        assert delayed.status is TaskStatus.SUCCESS
        ran_after = to_ts(delayed.started_at) - to_ts(delayed.created_at)
        assert _DAY - 1 < ran_after < _DAY + 60
        # a day and an hour of virtual time: a fire a minute
        assert len(fires) >= 60 * 24

    async def test_a_clock_set_on_the_manager_stamps_the_log_lines_too(self) -> None:
        tm = TaskManager(store=MemoryStore())
        tm.clock = LoopClock()  # as a test fixture may do for an app's manager

        @tm.task(retries=1, delay=3600)
        async def flaky() -> None:
            task_log("line")
            if get_task_context().attempt == 1:
                raise RuntimeError("first attempt fails")

        async with tm:
            with anyio.fail_after(_DAY):
                rec = await tm.wait(await tm.enqueue(flaky))
        assert tm.clock.__class__ is LoopClock
        own = [line["ts"] for line in rec.logs if line["msg"] == "line"]
        assert len(own) == 2
        assert 3599 < own[1] - own[0] < 3700, rec.logs

    async def test_a_clock_passed_to_the_manager_is_kept(self) -> None:
        mine = SystemClock()
        tm = TaskManager(store=MemoryStore(), clock=mine)
        async with tm:
            assert tm.clock is mine


async def test_the_default_clock_is_the_system_clock_on_a_real_clock() -> None:
    tm = TaskManager(store=MemoryStore())
    async with tm:
        assert isinstance(tm.clock, SystemClock)
        assert abs(tm.clock.time() - time.time()) < 5


def test_a_loop_clock_goes_on_across_event_loops() -> None:
    # each test runs its own event loop with a MockClock of its own (starting at 0):
    # a LoopClock shared by them (a module's manager, a session fixture) must not go
    # back to its start, nor jump by trio's random clock offset on a real trio loop
    clock = LoopClock()
    start = clock.time()
    seen: list[float] = []

    async def an_hour() -> None:
        seen.append(clock.time())
        await anyio.sleep(3600)
        seen.append(clock.time())

    async def a_moment() -> None:
        seen.append(clock.time())
        await anyio.sleep(0.01)
        seen.append(clock.time())

    anyio.run(an_hour, backend="trio", backend_options=_mock_clock())
    anyio.run(an_hour, backend="trio", backend_options=_mock_clock())
    anyio.run(a_moment, backend="trio")
    anyio.run(a_moment, backend="asyncio")
    assert seen == sorted(seen)
    assert seen[3] - start == pytest.approx(7200, abs=1)
    assert seen[-1] - start < 7200 + 60


def test_a_default_manager_restarted_in_the_next_test_keeps_its_timeline() -> None:
    tm = TaskManager(store=MemoryStore())  # one app manager for several tests
    ended: list[float] = []

    @tm.task
    async def step() -> None:
        pass

    async def one_test() -> None:
        async with tm:
            with anyio.fail_after(_DAY):
                rec = await tm.wait(await tm.enqueue(step, delay=3600))
        assert rec.ended_at is not None
        ended.append(to_ts(rec.ended_at))

    anyio.run(one_test, backend="trio", backend_options=_mock_clock())
    anyio.run(one_test, backend="trio", backend_options=_mock_clock())
    assert ended[1] - ended[0] == pytest.approx(3600, abs=1)
