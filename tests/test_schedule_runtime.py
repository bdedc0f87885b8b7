"""Schedules running inside a manager, in virtual time (trio MockClock + LoopClock)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
import trio.testing

from anytask import (
    LoopClock,
    MemoryStore,
    ScheduleNotFound,
    StoreError,
    TaskManager,
    TaskQuery,
    TaskRecord,
    TaskStatus,
    get_task_context,
)
from anytask._models import ScheduleState
from anytask.schedule._runner import fire_id

pytestmark = pytest.mark.anyio

T0 = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday, 00:00 UTC


@pytest.fixture
def anyio_backend() -> Any:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


def make(store: MemoryStore | None = None, clock: LoopClock | None = None) -> TaskManager:
    return TaskManager(
        store=store if store is not None else MemoryStore(),
        clock=clock or LoopClock(T0.timestamp()),
        shutdown_grace=1.0,
        lease=600.0,  # fewer heartbeats: virtual weeks pass faster
    )


async def sleep_until(tm: TaskManager, when: datetime) -> None:
    await anyio.sleep((when - tm.clock.now()).total_seconds())


async def records(tm: TaskManager, schedule_id: str) -> list[TaskRecord]:
    out: list[TaskRecord] = []
    cursor = None
    while True:
        page = await tm.store.list(TaskQuery(schedule_id=schedule_id, limit=1000, cursor=cursor))
        out.extend(page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return sorted(out, key=lambda r: (r.fire_at, r.seq))


def at(*seconds: float) -> list[datetime]:
    return [T0 + timedelta(seconds=s) for s in seconds]


def fires(recs: Sequence[TaskRecord]) -> list[datetime | None]:
    return [r.fire_at for r in recs]


async def test_a_week_of_every_five_minutes_fires_exactly_on_each_slot() -> None:
    tm = make()
    ran: list[datetime] = []

    @tm.schedule(cron="*/5 * * * *")
    async def tick() -> None:
        ran.append(tm.clock.now())

    async with tm:
        await sleep_until(tm, T0 + timedelta(days=7, seconds=1))
        await tm.join()
    expected = [T0 + timedelta(minutes=5 * k) for k in range(1, 7 * 24 * 12 + 1)]
    recs = await records(tm, tick.__qualname__)
    assert fires(recs) == expected
    assert ran == expected  # each one ran on time, once
    assert all(r.status is TaskStatus.SUCCESS for r in recs)
    assert all(r.id == fire_id(r.schedule_id or "", r.fire_at) for r in recs if r.fire_at)


class LaggingStore(MemoryStore):
    """Never shows an instance the progress another one saved: only the insert conflict
    keeps a fire single. Counts fire inserts and their results."""

    def __init__(self) -> None:
        super().__init__()
        self.fire_attempts: list[bool] = []

    async def save_schedule_state(self, state: ScheduleState) -> None:
        pass  # progress saved by one instance never reaches the other

    async def insert(self, records: Sequence[TaskRecord]) -> list[bool]:
        result = await super().insert(records)
        self.fire_attempts += [ok for r, ok in zip(records, result, strict=True) if r.fire_at]
        return result


async def test_two_instances_on_one_store_fire_each_time_once() -> None:
    store, clock = LaggingStore(), LoopClock(T0.timestamp())
    managers = [make(store, clock) for _ in range(2)]
    for tm in managers:

        @tm.schedule(every=60, id="shared")
        async def job() -> None:
            pass

    async with managers[0], managers[1]:
        await sleep_until(managers[0], T0 + timedelta(hours=1, seconds=1))
        await managers[0].join()
    recs = await records(managers[0], "shared")
    assert fires(recs) == at(*range(60, 3601, 60))
    assert all(r.status is TaskStatus.SUCCESS for r in recs)
    assert sorted(store.fire_attempts) == [False] * 60 + [True] * 60  # both tried each fire


async def test_interval_fire_times_follow_the_schedule_not_the_run_length() -> None:
    tm = make()

    @tm.schedule(every=timedelta(seconds=90), overlap="allow", id="slow")
    async def slow() -> None:
        await anyio.sleep(37)  # would drift by 37 s per run if timed from the end

    async with tm:
        await sleep_until(tm, T0 + timedelta(hours=1, seconds=1))
    recs = await records(tm, "slow")
    assert fires(recs) == at(*range(90, 3601, 90))
    assert all(r.started_at == r.fire_at for r in recs)


async def test_jitter_delays_each_run_within_bounds_and_keeps_the_fire_time() -> None:
    tm = make()

    @tm.schedule(every=60, jitter=20, id="spread")
    async def spread() -> None:
        pass

    async with tm:
        await sleep_until(tm, T0 + timedelta(hours=2, seconds=30))
        await tm.join()
    recs = await records(tm, "spread")
    assert fires(recs) == at(*range(60, 7201, 60))
    delays = [(r.run_after - r.fire_at).total_seconds() for r in recs if r.fire_at]
    assert all(0 <= d <= 20 for d in delays)
    assert len({round(d, 3) for d in delays}) > 50  # actually random, not a constant
    assert all(r.started_at is not None and r.started_at >= r.run_after for r in recs)


# Down from 601 s to 4230 s: the fires at 660 ... 4200 s are missed.


@pytest.mark.parametrize(
    ("options", "expected_missed"),
    [
        pytest.param({"misfire": "skip"}, [], id="skip"),
        pytest.param({"misfire": "run_once"}, [4200], id="run_once"),
        pytest.param(
            {"misfire": "catch_up", "max_catch_up": 5, "overlap": "allow"},
            [3960, 4020, 4080, 4140, 4200],
            id="catch_up_5",
        ),
        pytest.param({"misfire": "run_once", "misfire_window": 10}, [], id="run_once_outside"),
        pytest.param(
            {"misfire": "catch_up", "misfire_window": 600, "overlap": "allow"},
            list(range(3660, 4201, 60)),
            id="catch_up_within_window",
        ),
    ],
)
async def test_misfire_policy_after_downtime(
    options: dict[str, Any], expected_missed: list[int]
) -> None:
    store, clock = MemoryStore(), LoopClock(T0.timestamp())

    def define(tm: TaskManager) -> None:
        @tm.schedule(every=60, id="rates", **options)
        async def sync_rates() -> None:
            pass

    first = make(store, clock)
    define(first)
    async with first:
        await sleep_until(first, T0 + timedelta(seconds=601))
    await anyio.sleep(4230 - 601)  # every instance is down
    second = make(store, clock)
    define(second)
    async with second:
        await sleep_until(second, T0 + timedelta(seconds=4290))
        await second.join()
    recs = await records(second, "rates")
    assert fires(recs) == at(*range(60, 601, 60), *expected_missed, 4260)
    assert all(r.status is TaskStatus.SUCCESS for r in recs)


async def test_a_fire_less_than_the_grace_late_is_not_a_misfire() -> None:
    store, clock = MemoryStore(), LoopClock(T0.timestamp())

    def define(tm: TaskManager) -> None:
        @tm.schedule(every=60, id="s", misfire="skip", misfire_grace=5)
        async def job() -> None:
            pass

    first = make(store, clock)
    define(first)
    async with first:
        await sleep_until(first, T0 + timedelta(seconds=61))
    await anyio.sleep(62)  # restart at 123 s: the 120 s fire is 3 s late
    second = make(store, clock)
    define(second)
    async with second:
        await anyio.sleep(1)
        await second.join()
    assert fires(await records(second, "s")) == at(60, 120)


async def test_restart_right_after_a_fire_neither_repeats_nor_skips() -> None:
    store, clock = MemoryStore(), LoopClock(T0.timestamp())
    for stop_at in (121, 250):
        tm = make(store, clock)

        @tm.schedule(every=60, id="s", misfire="catch_up", overlap="allow")
        async def job() -> None:
            pass

        async with tm:
            await sleep_until(tm, T0 + timedelta(seconds=stop_at))
            await tm.join()
    assert fires(await records(tm, "s")) == at(60, 120, 180, 240)


async def test_overlap_skip_records_skipped_fires_and_allow_runs_them_together() -> None:
    running = 0
    peak = {"skip": 0, "allow": 0}
    results: dict[str, list[TaskRecord]] = {}
    for policy in ("skip", "allow"):
        tm = make()

        @tm.schedule(every=60, id="long", overlap=policy)
        async def long_job() -> None:
            nonlocal running
            running += 1
            peak[policy] = max(peak[policy], running)  # noqa: B023 - read at once
            try:
                await anyio.sleep(150)
            finally:
                running -= 1

        async with tm:
            await sleep_until(tm, T0 + timedelta(seconds=301))
            results[policy] = await records(tm, "long")
    skipped = [r for r in results["skip"] if r.error_type == "Skipped"]
    assert fires(results["skip"]) == at(60, 120, 180, 240, 300)
    assert fires(skipped) == at(120, 180, 300)
    assert all(r.status is TaskStatus.CANCELLED and r.attempts == 0 for r in skipped)
    assert peak == {"skip": 1, "allow": 3}
    assert not [r for r in results["allow"] if r.error_type == "Skipped"]


async def test_pause_stops_fires_on_every_pass_and_resume_does_not_run_the_paused_ones() -> None:
    tm = make()

    @tm.schedule(every=60, id="job")
    async def job() -> None:
        pass

    async with tm:
        await sleep_until(tm, T0 + timedelta(seconds=90))
        await tm.pause_schedule("job")
        [info] = await tm.schedules()
        assert info.paused
        assert info.next_fire_at is None
        await sleep_until(tm, T0 + timedelta(seconds=400))
        await tm.resume_schedule("job")
        [info] = await tm.schedules()
        assert not info.paused
        assert info.next_fire_at == T0 + timedelta(seconds=420)
        await sleep_until(tm, T0 + timedelta(seconds=500))
    assert fires(await records(tm, "job")) == at(60, 420, 480)


async def test_pause_is_shared_through_the_store() -> None:
    store, clock = MemoryStore(), LoopClock(T0.timestamp())
    tm = make(store, clock)

    @tm.schedule(every=60, id="job")
    async def job() -> None:
        pass

    async with tm:
        await sleep_until(tm, T0 + timedelta(seconds=90))
        # as if another instance paused it: only the store changes
        await store.save_schedule_state(ScheduleState("job#control", None, True))
        await sleep_until(tm, T0 + timedelta(seconds=300))
    assert fires(await records(tm, "job")) == at(60)


async def test_schedules_lists_last_fire_outcome_and_next_fire() -> None:
    tm = make()

    @tm.schedule(cron="0 * * * *", id="hourly")
    async def hourly() -> None:
        raise RuntimeError("boom")

    @tm.schedule(every=600, id="often")
    async def often() -> None:
        pass

    async with tm:
        before = {i.id: i for i in await tm.schedules()}
        await sleep_until(tm, T0 + timedelta(minutes=65))
        await tm.join()
        after = {i.id: i for i in await tm.schedules()}
    assert before["hourly"].last_fire_at is None
    assert before["hourly"].next_fire_at == T0 + timedelta(hours=1)
    assert after["hourly"].last_fire_at == T0 + timedelta(hours=1)
    assert after["hourly"].last_status is TaskStatus.FAILED
    assert after["hourly"].next_fire_at == T0 + timedelta(hours=2)
    assert after["often"].last_fire_at == T0 + timedelta(minutes=60)
    assert after["often"].last_status is TaskStatus.SUCCESS
    assert after["often"].next_fire_at == T0 + timedelta(minutes=70)
    assert after["often"].schedule.every == 600.0


async def test_trigger_runs_now_as_a_fire_of_the_schedule() -> None:
    tm = make()
    seen: list[tuple[str | None, datetime | None]] = []

    @tm.schedule(cron="0 9 * * 1-5", timezone="America/New_York", id="digest")
    def digest() -> None:  # sync functions are scheduled too
        ctx = get_task_context()
        seen.append((ctx.schedule_id, ctx.fire_at))

    async with tm:
        await anyio.sleep(10)
        task_id = await tm.trigger_schedule("digest")
        rec = await tm.wait(task_id)
        with pytest.raises(ScheduleNotFound):
            await tm.trigger_schedule("nope")
    assert rec.status is TaskStatus.SUCCESS
    assert rec.schedule_id == "digest"
    assert rec.fire_at == T0 + timedelta(seconds=10)
    assert seen == [("digest", T0 + timedelta(seconds=10))]


async def test_retries_apply_to_each_fire() -> None:
    tm = make()
    calls = 0

    @tm.schedule(every=3600, retries=2, delay=10, id="flaky")
    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ValueError("not yet")

    async with tm:
        await sleep_until(tm, T0 + timedelta(hours=1, minutes=1))
    [rec] = await records(tm, "flaky")
    assert rec.status is TaskStatus.SUCCESS
    assert rec.attempts == 3


async def test_run_on_start_fires_the_latest_slot_once() -> None:
    store, clock = MemoryStore(), LoopClock((T0 + timedelta(minutes=30)).timestamp())
    for _ in range(2):  # the second start finds the slot already fired
        tm = make(store, clock)

        @tm.schedule(every=3600, id="warm", run_on_start=True)
        async def warm() -> None:
            pass

        async with tm:
            await anyio.sleep(5)
            await tm.join()
    assert fires(await records(tm, "warm")) == at(0)


async def test_without_run_on_start_a_first_start_waits_for_the_next_slot() -> None:
    tm = make(clock=LoopClock((T0 + timedelta(minutes=30)).timestamp()))

    @tm.schedule(every=3600, id="cold")
    async def cold() -> None:
        pass

    async with tm:
        await anyio.sleep(29 * 60)
        assert await records(tm, "cold") == []
        await anyio.sleep(61)
    assert fires(await records(tm, "cold")) == at(3600)


class FlakyStore(MemoryStore):
    """Fails the scheduler's reads a few times, and one fire insert."""

    def __init__(self) -> None:
        super().__init__()
        self.state_failures = 3
        self.insert_failures = 1

    async def schedule_states(self) -> dict[str, ScheduleState]:
        if self.state_failures:
            self.state_failures -= 1
            raise StoreError("database is locked")
        return await super().schedule_states()

    async def insert(self, records: Sequence[TaskRecord]) -> list[bool]:
        if self.insert_failures and any(r.schedule_id for r in records):
            self.insert_failures -= 1
            raise StoreError("disk I/O error")
        return await super().insert(records)


async def test_store_errors_in_the_loop_are_logged_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore()
    tm = make(store)

    @tm.schedule(every=60, id="s")
    async def job() -> None:
        pass

    with caplog.at_level(logging.ERROR, logger="anytask.schedule"):
        async with tm:
            await sleep_until(tm, T0 + timedelta(seconds=181))
            await tm.join()
    assert fires(await records(tm, "s")) == at(60, 120, 180)  # the failed insert retried
    failures = [r for r in caplog.records if "scheduler pass failed" in r.getMessage()]
    assert len(failures) == 4


async def test_a_restart_before_the_first_fire_still_runs_the_missed_fire() -> None:
    # the instance runs from 10:00 to 11:00 (no fire due), everything is down over the
    # next day's 09:00 fire, and the restart at 10:00 must know it missed that fire
    start = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)
    store, clock = MemoryStore(), LoopClock(start.timestamp())

    def define(tm: TaskManager) -> None:
        @tm.schedule(cron="0 9 * * *", id="daily")  # misfire="run_once" by default
        async def daily() -> None:
            pass

    first = make(store, clock)
    define(first)
    async with first:
        await anyio.sleep(3600)
    assert await records(first, "daily") == []
    await anyio.sleep(23 * 3600)
    second = make(store, clock)
    define(second)
    async with second:
        await anyio.sleep(60)
        await second.join()
    assert fires(await records(second, "daily")) == [datetime(2025, 1, 7, 9, 0, tzinfo=UTC)]


async def test_run_once_after_downtime_lets_the_on_time_fire_stand_for_the_missed_ones() -> None:
    # down from 601 s to 4260.5 s: 4260 is on time (0.5 s late), 3660..4200 were missed.
    # The one run after the gap is the on-time one; it is not recorded as skipped because
    # of a catch-up run inserted just before it (overlap="skip" is the default)
    store, clock = MemoryStore(), LoopClock(T0.timestamp())

    def define(tm: TaskManager) -> None:
        @tm.schedule(every=60, id="rates")
        async def rates() -> None:
            pass

    first = make(store, clock)
    define(first)
    async with first:
        await sleep_until(first, T0 + timedelta(seconds=601))
    await anyio.sleep(4260.5 - 601)
    second = make(store, clock)
    define(second)
    async with second:
        await anyio.sleep(5)
        await second.join()
    recs = await records(second, "rates")
    assert fires(recs) == at(*range(60, 601, 60), 4260)
    assert all(r.status is TaskStatus.SUCCESS for r in recs)


class SlowFailingInsertStore(MemoryStore):
    """The first fire insert waits 2 s and then fails (a lock held elsewhere)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    async def insert(self, records: Sequence[TaskRecord]) -> list[bool]:
        if self.failures and any(r.schedule_id for r in records):
            self.failures -= 1
            await anyio.sleep(2)
            raise StoreError("database is locked")
        return await super().insert(records)


@pytest.mark.parametrize("policy", ["skip", "run_once"])
async def test_a_fire_whose_insert_failed_is_still_on_time_when_retried(policy: str) -> None:
    tm = make(SlowFailingInsertStore())

    @tm.schedule(every=60, id="s", misfire=policy)
    async def job() -> None:
        pass

    async with tm:
        await sleep_until(tm, T0 + timedelta(seconds=150))
        await tm.join()
    assert fires(await records(tm, "s")) == at(60, 120)


def test_the_wake_up_of_the_loop_itself_is_no_misfire() -> None:
    # misfire_grace=0 with misfire="skip": the loop wakes a moment after the fire time
    # (in real time it always does); that fire is on time, not missed
    from anytask.schedule._definition import Schedule
    from anytask.schedule._runner import _Runner

    sched = Schedule(id="s", task_name="job", every=60, misfire="skip", misfire_grace=0)
    runner = _Runner(make())
    missed, on_time = runner._due(sched, T0, T0 + timedelta(seconds=60.05))
    assert (missed, on_time) == ([], at(60))
    missed, on_time = runner._due(sched, T0, T0 + timedelta(seconds=61))
    assert (missed, on_time) == ([], [])  # a second late: missed, and skipped


async def test_a_redefined_schedule_starts_afresh() -> None:
    # a redeploy with no downtime changes every=3600 to every=60: the new definition's
    # fire times since the last hourly fire were not missed (nobody was down)
    store, clock = MemoryStore(), LoopClock((T0 - timedelta(seconds=10)).timestamp())
    first = make(store, clock)

    @first.schedule(every=3600, id="sync", misfire="catch_up", overlap="allow")
    async def sync() -> None:
        pass

    async with first:
        await sleep_until(first, T0 + timedelta(minutes=59, seconds=50))
    second = make(store, clock)
    second.schedule(every=60, id="sync", misfire="catch_up", overlap="allow")(sync)
    async with second:
        await sleep_until(second, T0 + timedelta(minutes=61, seconds=5))
        await second.join()
    assert fires(await records(second, "sync")) == at(0, 3600, 3660)


class OneBadScheduleStore(MemoryStore):
    """Every insert of the schedule "bad" fails."""

    async def insert(self, records: Sequence[TaskRecord]) -> list[bool]:
        if any(r.schedule_id == "bad" for r in records):
            raise StoreError("disk I/O error")
        return await super().insert(records)


async def test_one_failing_schedule_does_not_hold_up_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tm = make(OneBadScheduleStore())

    @tm.schedule(every=60, id="bad")
    async def bad() -> None:
        pass

    @tm.schedule(every=60, id="good")
    async def good() -> None:
        pass

    with caplog.at_level(logging.ERROR, logger="anytask.schedule"):
        async with tm:
            await sleep_until(tm, T0 + timedelta(seconds=241))
            await tm.join()
    recs = await records(tm, "good")
    assert fires(recs) == at(60, 120, 180, 240)
    assert all(r.created_at == r.fire_at for r in recs)  # each on time, not after a retry
    assert await records(tm, "bad") == []
    assert any("schedule 'bad'" in r.getMessage() for r in caplog.records)


async def test_triggers_are_runs_of_their_own() -> None:
    # two triggers at one instant, and one at the exact instant of a fire: each is a run
    # of its own, and the fire keeps its own run too
    tm = make(clock=LoopClock((T0 + timedelta(seconds=30)).timestamp()))
    runs: list[datetime | None] = []

    @tm.schedule(every=60, id="s", overlap="allow")  # (skip would skip the fire or not,
    async def job() -> None:  # by which of the two comes first at 60 s)
        runs.append(get_task_context().fire_at)

    async with tm:
        a = await tm.trigger_schedule("s")
        b = await tm.trigger_schedule("s")
        assert a != b
        await sleep_until(tm, T0 + timedelta(seconds=60))
        c = await tm.trigger_schedule("s")
        await sleep_until(tm, T0 + timedelta(seconds=61))
        await tm.join()
    recs = {r.id: r for r in await records(tm, "s")}
    assert {a, b, c} <= set(recs)
    assert recs[c].fire_at != T0 + timedelta(seconds=60)
    assert T0 + timedelta(seconds=60) in runs  # the fire ran as well
    assert len(runs) == 4
    assert all(r.status is TaskStatus.SUCCESS for r in recs.values())


class OutageStore(MemoryStore):
    """Fire inserts fail until ``until`` (virtual time, seconds since T0)."""

    def __init__(self, clock: LoopClock, until: float) -> None:
        super().__init__()
        self.clock = clock
        self.until = until

    async def insert(self, records: Sequence[TaskRecord]) -> list[bool]:
        now = (self.clock.now() - T0).total_seconds()
        if now < self.until and any(r.schedule_id for r in records):
            raise StoreError("database is locked")
        return await super().insert(records)


async def test_after_an_outage_only_the_fire_whose_insert_failed_stays_on_time() -> None:
    # inserts fail from 10 s to 20 s; with misfire="skip" the fire at 10 s (judged on
    # time, then failed) still runs once the store is back, but the ones that passed
    # during the outage were missed and are skipped: no burst of late runs
    clock = LoopClock(T0.timestamp())
    store = OutageStore(clock, until=20.0)
    tm = make(store, clock)

    @tm.schedule(every=10, id="s", misfire="skip")
    async def job() -> None:
        pass

    async with tm:
        await sleep_until(tm, T0 + timedelta(seconds=45))
        await tm.join()
    recs = await records(tm, "s")
    assert fires(recs) == at(10, 30, 40)
    late = [r for r in recs if (r.created_at - r.fire_at).total_seconds() > 1]
    assert fires(late) == at(10)


async def test_progress_written_by_the_previous_version_is_kept() -> None:
    # the previous version kept one row per schedule, under its id: an upgrade that
    # comes after downtime still runs the fires missed meanwhile
    store, clock = MemoryStore(), LoopClock((T0 + timedelta(seconds=305)).timestamp())
    await store.save_schedule_state(ScheduleState("s", T0 + timedelta(seconds=60), False))
    tm = make(store, clock)

    @tm.schedule(every=60, id="s", misfire="catch_up", overlap="allow")
    async def job() -> None:
        pass

    async with tm:
        await anyio.sleep(1)
        await tm.join()
    assert fires(await records(tm, "s")) == at(120, 180, 240, 300)


def test_every_definition_of_the_fire_times_has_its_own_progress() -> None:
    from anytask.schedule._definition import Schedule
    from anytask.schedule._runner import progress_key

    def key(**options: Any) -> str:
        return progress_key(Schedule(id="s", task_name="job", **options))

    assert key(every=1234567) != key(every=1234568)
    assert key(every=86400.25) != key(every=86400.2)
    assert key(cron="0 9 * * *") != key(cron="0 9 * * *", timezone="Europe/Berlin")
    assert key(every=60) != key(every=60, start_at=T0 + timedelta(seconds=1))
    assert key(every=60, jitter=5, misfire="skip") == key(every=60)  # times unchanged


async def test_a_redefinition_after_a_pause_and_resume_still_starts_afresh() -> None:
    # the resume left its mark (the latest hourly fire then) in the control row; a later
    # redeploy with new fire times and no downtime must not count the new definition's
    # fire times since that resume as missed
    store, clock = MemoryStore(), LoopClock((T0 - timedelta(seconds=10)).timestamp())

    async def sync() -> None:
        pass

    first = make(store, clock)
    first.schedule(every=3600, id="sync", misfire="catch_up", overlap="allow")(sync)
    async with first:
        await sleep_until(first, T0 + timedelta(seconds=100))
        await first.pause_schedule("sync")
        await first.resume_schedule("sync")
        await sleep_until(first, T0 + timedelta(hours=5, seconds=100))
    second = make(store, clock)
    second.schedule(every=607, id="sync", misfire="catch_up", overlap="allow")(sync)
    async with second:
        await sleep_until(second, T0 + timedelta(hours=5, seconds=200))
        await second.join()
    recs = await records(second, "sync")
    assert fires(recs) == at(*range(0, 5 * 3600 + 1, 3600))  # no fire of every=607 yet
    assert all(r.created_at == r.fire_at for r in recs)


async def test_a_rollback_to_an_earlier_definition_starts_afresh() -> None:
    # A (hourly) runs, B (hourly at :30) replaces it for hours, A comes back with no
    # downtime: A's fire times while B ran were not missed
    store, clock = MemoryStore(), LoopClock((T0 - timedelta(seconds=10)).timestamp())

    async def sync() -> None:
        pass

    def deploy(**definition: Any) -> TaskManager:
        tm = make(store, clock)
        tm.schedule(id="sync", misfire="catch_up", overlap="allow", **definition)(sync)
        return tm

    for definition, until in [
        ({"every": 3600}, 100),
        ({"every": 3600, "start_at": T0 + timedelta(seconds=1800)}, 5 * 3600 + 100),
        ({"every": 3600}, 5 * 3600 + 200),
    ]:
        tm = deploy(**definition)
        async with tm:
            await sleep_until(tm, T0 + timedelta(seconds=until))
            await tm.join()
    recs = await records(tm, "sync")
    assert fires(recs) == at(0, *range(1800, 5 * 3600, 3600))
    assert all(r.created_at == r.fire_at for r in recs)


async def test_a_definition_back_after_downtime_of_its_own_still_runs_missed_fires() -> None:
    # the rollback rule must not weaken the normal restart: the same definition, down
    # over a fire, still runs it (its own progress is the newest)
    store, clock = MemoryStore(), LoopClock(T0.timestamp())

    async def job() -> None:
        pass

    for until in (130, 400):
        tm = make(store, clock)
        tm.schedule(every=60, id="s", misfire="catch_up", overlap="allow")(job)
        async with tm:
            await sleep_until(tm, T0 + timedelta(seconds=until))
            await tm.join()
        await anyio.sleep(100)
    assert fires(await records(tm, "s")) == at(*range(60, 400, 60))


class SlowStatesStore(MemoryStore):
    async def schedule_states(self) -> dict[str, ScheduleState]:
        await anyio.sleep(0.5)  # a busy store: the pass that fires at 60 s reads late
        return await super().schedule_states()


async def test_resuming_a_schedule_that_is_not_paused_drops_no_fire() -> None:
    tm = make(SlowStatesStore())

    @tm.schedule(every=60, id="s")
    async def job() -> None:
        pass

    async with tm:
        await sleep_until(tm, T0 + timedelta(seconds=60.2))  # the 60 s pass is in flight
        await tm.resume_schedule("s")
        await sleep_until(tm, T0 + timedelta(seconds=190))
        await tm.join()
    assert fires(await records(tm, "s")) == at(60, 120, 180)


async def test_a_schedule_whose_id_extends_another_one_leaves_its_progress_alone() -> None:
    # "s#def:x" is a legal id; the progress rows of "s#def:x" start with "s#def:" and
    # must not pass for another definition of "s" (which then started afresh and skipped
    # the fires it missed while down)
    store, clock = MemoryStore(), LoopClock(T0.timestamp())

    async def job() -> None:
        pass

    for until, ids in [(130, ("s", "s#def:x")), (400, ("s#def:x",)), (430, ("s", "s#def:x"))]:
        tm = make(store, clock)
        for sid in ids:
            tm.schedule(every=60, id=sid, misfire="catch_up", overlap="allow")(job)
        async with tm:
            await sleep_until(tm, T0 + timedelta(seconds=until))
            await tm.join()
    assert fires(await records(tm, "s")) == at(*range(60, 430, 60))
    assert fires(await records(tm, "s#def:x")) == at(*range(60, 430, 60))
