"""Fire times across real DST transitions, computed from a fixed ``now`` (no sleeping).

Policy: a wall time inside a spring-forward gap fires at the first instant after the gap;
a wall time that occurs twice in a fall-back hour fires once, at its first occurrence.
"""

from __future__ import annotations

import itertools
import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from anytask.schedule import Schedule


def cron(expr: str, zone: str) -> Schedule:
    return Schedule(id="s", task_name="s", cron=expr, timezone=zone)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def local_day(zone: str, day: date) -> tuple[datetime, datetime]:
    """The instants (start, end] covering one local calendar day."""
    tz = ZoneInfo(zone)
    start = datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)
    nxt = day + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).astimezone(UTC)
    return start - timedelta(microseconds=1), end - timedelta(microseconds=1)


# (zone, local date of the transition, daily wall time "minute hour", expected UTC fire)
GAPS = [
    ("America/New_York", date(2025, 3, 9), "30 2", "2025-03-09T07:00"),
    ("America/New_York", date(2026, 3, 8), "30 2", "2026-03-08T07:00"),
    ("Europe/London", date(2025, 3, 30), "30 1", "2025-03-30T01:00"),
    ("Europe/London", date(2026, 3, 29), "30 1", "2026-03-29T01:00"),
    ("Australia/Sydney", date(2025, 10, 5), "30 2", "2025-10-04T16:00"),
    ("Australia/Sydney", date(2026, 10, 4), "30 2", "2026-10-03T16:00"),
]
FOLDS = [
    ("America/New_York", date(2025, 11, 2), "30 1", "2025-11-02T05:30"),
    ("America/New_York", date(2026, 11, 1), "30 1", "2026-11-01T05:30"),
    ("Europe/London", date(2025, 10, 26), "30 1", "2025-10-26T00:30"),
    ("Europe/London", date(2026, 10, 25), "30 1", "2026-10-25T00:30"),
    ("Australia/Sydney", date(2025, 4, 6), "30 2", "2025-04-05T15:30"),
    ("Australia/Sydney", date(2026, 4, 5), "30 2", "2026-04-04T15:30"),
]


def ids(cases: list[tuple[str, date, str, str]]) -> list[str]:
    return [f"{zone.split('/')[1]}-{day.isoformat()}" for zone, day, _, _ in cases]


def week_of_daily_fires(zone: str, day: date, wall: str) -> list[datetime]:
    sched = cron(f"{wall} * * *", zone)
    now, _ = local_day(zone, day - timedelta(days=3))  # a fixed "now", 3 days before
    _, end = local_day(zone, day + timedelta(days=3))
    return sched.trigger.fires_between(now, end)


@pytest.mark.parametrize(("zone", "day", "wall", "expected"), GAPS, ids=ids(GAPS))
def test_a_wall_time_in_the_spring_forward_gap_fires_when_the_gap_ends(
    zone: str, day: date, wall: str, expected: str
) -> None:
    tz = ZoneInfo(zone)
    fires = week_of_daily_fires(zone, day, wall)
    assert [f.astimezone(tz).date() for f in fires] == [
        day + timedelta(days=d) for d in range(-3, 4)
    ]  # once on each local day
    [on_the_day] = [f for f in fires if f.astimezone(tz).date() == day]
    assert on_the_day == utc(expected)
    minute, hour = (int(x) for x in wall.split())
    wall_time = (hour, minute)
    assert all(
        (f.astimezone(tz).hour, f.astimezone(tz).minute) == wall_time
        for f in fires
        if f != on_the_day
    )
    local = on_the_day.astimezone(tz)
    assert local.utcoffset() != (on_the_day - timedelta(seconds=1)).astimezone(tz).utcoffset()


@pytest.mark.parametrize(("zone", "day", "wall", "expected"), FOLDS, ids=ids(FOLDS))
def test_a_wall_time_repeated_in_the_fall_back_hour_fires_once_at_its_first_occurrence(
    zone: str, day: date, wall: str, expected: str
) -> None:
    tz = ZoneInfo(zone)
    fires = week_of_daily_fires(zone, day, wall)
    assert [f.astimezone(tz).date() for f in fires] == [
        day + timedelta(days=d) for d in range(-3, 4)
    ]
    [on_the_day] = [f for f in fires if f.astimezone(tz).date() == day]
    assert on_the_day == utc(expected)
    second = on_the_day + timedelta(hours=1)  # the same wall time, on standard time
    assert second.astimezone(tz).replace(tzinfo=None) == on_the_day.astimezone(tz).replace(
        tzinfo=None
    )
    assert second not in fires
    minute, hour = (int(x) for x in wall.split())
    assert all((f.astimezone(tz).hour, f.astimezone(tz).minute) == (hour, minute) for f in fires)


@pytest.mark.parametrize(
    ("zone", "day", "count"),
    [
        *[(z, d, 46) for z, d, _, _ in GAPS],  # two half-hours do not exist; one fire for both
        *[(z, d, 48) for z, d, _, _ in FOLDS],  # 25 hours, but each wall time once
        ("Asia/Kolkata", date(2025, 3, 9), 48),
        ("Asia/Kolkata", date(2026, 11, 1), 48),
    ],
)
def test_fires_per_local_day_of_a_half_hourly_schedule(zone: str, day: date, count: int) -> None:
    start, end = local_day(zone, day)
    fires = cron("*/30 * * * *", zone).trigger.fires_between(start, end)
    assert len(fires) == count
    assert fires == sorted(set(fires))
    walls = [f.astimezone(ZoneInfo(zone)).replace(tzinfo=None) for f in fires]
    assert len(set(walls)) == count  # no wall time twice


@pytest.mark.parametrize("year", [2025, 2026])
def test_kolkata_has_no_transition_a_daily_schedule_is_exactly_24_hours_apart(
    year: int,
) -> None:
    sched = cron("30 2 * * *", "Asia/Kolkata")
    start = datetime(year, 1, 1, tzinfo=UTC)
    fires = sched.trigger.fires_between(start, datetime(year + 1, 1, 1, tzinfo=UTC))
    assert len(fires) == (366 if year % 4 == 0 else 365)
    assert {b - a for a, b in itertools.pairwise(fires)} == {timedelta(days=1)}
    assert {(f.hour, f.minute) for f in fires} == {(21, 0)}  # 02:30 IST = 21:00 UTC


def test_from_inside_the_repeated_hour_the_next_fire_skips_the_repeated_wall_times() -> None:
    sched = cron("*/15 * * * *", "America/New_York")
    now = utc("2025-11-02T06:10")  # 01:10 EST: the second pass of 01:xx
    assert sched.next_fire(now) == utc("2025-11-02T07:00")  # 02:00 EST
    assert sched.trigger.last_fires(now, 2) == [utc("2025-11-02T05:30"), utc("2025-11-02T05:45")]


def test_just_before_the_gap_the_next_fire_is_the_end_of_the_gap_once() -> None:
    sched = cron("*/15 * * * *", "America/New_York")
    now = utc("2025-03-09T06:59")  # 01:59 EST
    first = sched.next_fire(now)
    assert first == utc("2025-03-09T07:00")  # 03:00 EDT (02:00 .. 02:45 and 03:00 merged)
    assert first is not None
    assert sched.next_fire(first) == utc("2025-03-09T07:15")


def test_interval_schedules_count_elapsed_time_through_a_transition() -> None:
    sched = Schedule(id="s", task_name="s", every=3600)
    start, end = local_day("America/New_York", date(2025, 11, 2))
    assert len(sched.trigger.fires_between(start, end)) == 25


@pytest.mark.parametrize(
    "zone", ["America/New_York", "Europe/London", "Australia/Sydney", "Asia/Kolkata"]
)
def test_latest_fires_agree_with_the_forward_scan(zone: str) -> None:
    rng = random.Random(zone)
    sched = cron("*/20 0-4 * * *", zone)  # dense around the usual transition hours
    cases = [day for _, day, _, _ in GAPS + FOLDS]
    for _ in range(60):
        day = rng.choice(cases)
        at = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(
            seconds=rng.randrange(-86400, 2 * 86400)
        )
        forward = sched.trigger.fires_between(at - timedelta(days=2), at)
        assert sched.trigger.last_fires(at, 4) == forward[-4:]


def test_interval_fire_times_are_fixed_multiples_of_the_period() -> None:
    sched = Schedule(id="s", task_name="s", every=300)
    now = utc("2025-06-01T10:02:17")
    assert sched.next_fire(now) == utc("2025-06-01T10:05")
    assert sched.trigger.last_fires(now, 2) == [utc("2025-06-01T09:55"), utc("2025-06-01T10:00")]
    anchored = Schedule(
        id="s", task_name="s", every=timedelta(hours=1), start_at=utc("2025-06-01T10:20")
    )
    assert anchored.next_fire(now) == utc("2025-06-01T10:20")
    assert anchored.next_fire(utc("2025-06-01T10:20")) == utc("2025-06-01T11:20")
    assert anchored.trigger.last_fires(utc("2025-06-01T10:19"), 3) == []
