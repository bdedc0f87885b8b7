"""Defining schedules: bad input fails where the decorator is written."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from anytask import (
    ConfigurationError,
    ManagerStateError,
    MemoryStore,
    MisfirePolicy,
    OverlapPolicy,
    TaskManager,
)


def make() -> TaskManager:
    return TaskManager(store=MemoryStore())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"cron": "61 * * * *"}, "invalid cron expression", id="minute-out-of-range"),
        pytest.param({"cron": "0 25 * * *"}, "invalid cron expression", id="hour-out-of-range"),
        pytest.param({"cron": "every day"}, "expected 5 fields", id="words"),
        pytest.param({"cron": "* * * *"}, "expected 5 fields", id="four-fields"),
        pytest.param({"cron": "0 * * * * *"}, "expected 5 fields", id="six-fields"),
        pytest.param({"cron": "@reboot"}, "aliases are", id="reboot"),
        pytest.param({"cron": "0 0 * * mon-xyz"}, "invalid cron expression", id="bad-day-name"),
        pytest.param({"cron": ""}, "non-empty str", id="empty"),
        pytest.param({"cron": 5}, "non-empty str", id="not-a-str"),
        pytest.param({"cron": "0 0 30 2 *"}, "never fires", id="feb-30"),
        pytest.param({"cron": "0 0 31 4 *"}, "never fires", id="apr-31"),
        pytest.param(
            {"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "unknown timezone", id="unknown-zone"
        ),
        pytest.param(
            {"cron": "0 9 * * *", "timezone": "../../etc/passwd"},
            "unknown timezone",
            id="path-as-zone",
        ),
        pytest.param({"cron": "0 9 * * *", "timezone": ""}, "timezone", id="empty-zone"),
        pytest.param({"every": 0}, "every must be > 0", id="every-zero"),
        pytest.param({"every": -5}, "every", id="every-negative"),
        pytest.param({"every": timedelta(0)}, "every must be > 0", id="every-zero-timedelta"),
        pytest.param({"every": timedelta(seconds=-1)}, "every", id="every-negative-td"),
        pytest.param({"every": float("nan")}, "finite", id="every-nan"),
        pytest.param({"every": 1e13}, "at most 100 years", id="every-beyond-100-years"),
        pytest.param(
            {"every": 60, "jitter": 1e15}, "jitter must be at most", id="jitter-beyond-100-years"
        ),
        pytest.param(
            {"every": 60, "misfire_window": 1e12},
            "misfire_window must be at most",
            id="window-huge",
        ),
        pytest.param({"every": float("inf")}, "finite", id="every-inf"),
        pytest.param({"every": 10**400}, "every must be at most", id="every-int-beyond-float"),
        pytest.param(
            {"every": 60, "jitter": 10**400}, "jitter must be at most", id="jitter-int-huge"
        ),
        pytest.param({"every": 60, "jitter": -(10**400)}, "jitter", id="jitter-int-very-negative"),
        pytest.param(
            {"every": 60, "misfire_window": 10**400},
            "misfire_window must be at most",
            id="window-int-huge",
        ),
        pytest.param({"every": True}, "number of seconds", id="every-bool"),
        pytest.param({"every": "5m"}, "number of seconds", id="every-str"),
        pytest.param({"every": 60, "cron": "* * * * *"}, "not both", id="both"),
        pytest.param({}, "needs every=", id="neither"),
        pytest.param(
            {"every": 60, "timezone": "UTC"}, "timezone applies to cron", id="zone-on-interval"
        ),
        pytest.param(
            {"every": 60, "start_at": datetime(2025, 1, 1)}, "timezone-aware", id="naive-start"
        ),
        pytest.param({"every": 60, "jitter": -1}, "jitter", id="negative-jitter"),
        pytest.param({"every": 60, "misfire": "later"}, "misfire must be one of", id="bad-misfire"),
        pytest.param({"every": 60, "overlap": "queue"}, "overlap must be one of", id="bad-overlap"),
        pytest.param({"every": 60, "max_catch_up": 0}, "max_catch_up", id="catch-up-zero"),
        pytest.param({"every": 60, "misfire_window": 0}, "misfire_window", id="window-zero"),
        pytest.param({"every": 60, "misfire_grace": -1}, "misfire_grace", id="grace-negative"),
        pytest.param({"every": 60, "run_on_start": "yes"}, "run_on_start", id="run-on-start"),
        pytest.param(
            {"every": 60, "misfire": "catch_up"}, "overlap='allow'", id="catch-up-with-skip"
        ),
        pytest.param({"every": 60, "retries": -1}, "retries", id="task-option"),
        pytest.param({"every": 60, "id": ""}, "schedule id", id="empty-id"),
        pytest.param({"every": 60, "id": "x#control"}, "#control", id="reserved-id"),
    ],
)
def test_bad_options_fail_when_the_decorator_is_written(
    options: dict[str, Any], message: str
) -> None:
    tm = make()
    with pytest.raises(ConfigurationError, match=message) as info:
        tm.schedule(**options)  # before any function is decorated
    assert isinstance(info.value, ValueError)
    assert tm._schedules == {}


def test_the_decorator_without_arguments_is_refused() -> None:
    tm = make()
    with pytest.raises(ConfigurationError, match="needs arguments"):

        @tm.schedule
        async def job() -> None: ...


def test_the_decorator_returns_the_function_and_registers_it_as_a_task() -> None:
    tm = make()

    def digest(day: str = "today") -> str:
        return day

    assert tm.schedule(cron="0 9 * * 1-5", timezone="America/New_York")(digest) is digest
    assert digest("mon") == "mon"
    assert tm.registry.get(digest.__qualname__) is not None
    tm.add_task(digest)  # an ordinary task too
    assert [rec.name for rec in tm._inserts] == [digest.__qualname__]
    tm._inserts.clear()  # (never written: the manager does not run here)
    [sched] = tm._schedules.values()
    assert sched.id == digest.__qualname__
    assert sched.timezone == "America/New_York"
    assert sched.misfire is MisfirePolicy.RUN_ONCE
    assert sched.overlap is OverlapPolicy.SKIP


def test_name_and_id_override_the_defaults() -> None:
    tm = make()

    @tm.schedule(every=timedelta(minutes=5), name="rates.sync", id="rates-5m")
    async def sync() -> None: ...

    [(sid, sched)] = tm._schedules.items()
    assert (sid, sched.id, sched.task_name, sched.every) == (
        "rates-5m",
        "rates-5m",
        "rates.sync",
        300.0,
    )
    assert tm.registry.get("rates.sync") is not None


def test_a_task_name_used_by_another_function_is_refused() -> None:
    tm = make()

    @tm.schedule(every=300, name="rates.sync")
    async def sync() -> None: ...

    with pytest.raises(ConfigurationError, match="already used"):

        @tm.schedule(every=3600, name="rates.sync", id="other")
        async def other() -> None: ...


def test_two_schedules_of_one_function_need_distinct_ids() -> None:
    tm = make()

    async def job() -> None: ...

    tm.schedule(every=60)(job)
    tm.schedule(cron="0 * * * *", id="job-hourly")(job)
    assert set(tm._schedules) == {job.__qualname__, "job-hourly"}
    with pytest.raises(ConfigurationError, match="already used"):
        tm.schedule(cron="0 0 * * *")(job)


def test_scheduling_a_task_defined_with_other_options_is_refused() -> None:
    tm = make()

    @tm.task(retries=3)
    async def job() -> None: ...

    with pytest.raises(ConfigurationError, match="already defined with other options"):
        tm.schedule(every=60)(job)
    tm.schedule(every=60, retries=3)(job)  # the same options: one task, now scheduled
    assert list(tm._schedules) == [job.__qualname__]


@pytest.mark.anyio
async def test_defining_a_schedule_on_a_running_manager_is_refused() -> None:
    tm = make()
    async with tm:
        with pytest.raises(ManagerStateError, match="before the task manager starts"):

            @tm.schedule(every=60)
            async def late() -> None: ...


@pytest.mark.anyio
async def test_control_calls_need_a_running_manager() -> None:
    tm = make()

    @tm.schedule(every=60, id="s")
    async def job() -> None: ...

    with pytest.raises(ManagerStateError):
        await tm.pause_schedule("s")
    with pytest.raises(ManagerStateError):
        await tm.schedules()
