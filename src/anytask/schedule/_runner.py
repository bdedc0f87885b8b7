"""The scheduler loop, and the code-level control of schedules.

Single fire: each fire is inserted as an ordinary task whose id is derived from
``(schedule id, fire time)`` and which carries both; the store refuses a second record with
that pair, so of all the instances that try, exactly one inserts it. No lock, no TTL.

Persisted state per schedule, in two rows of ``Store.schedule_states()`` so that no writer
can overwrite another's field:

* row ``<id>#def:<fingerprint>``: ``last_fire_at``, the latest time up to which an
  instance handled the fires of this *definition* of the schedule (written by the loops;
  never moves backwards). The fingerprint covers what decides the fire times (interval or
  cron, time zone, start), so a redefined schedule starts afresh instead of counting the
  new definition's past fire times as missed. A schedule seen for the first time gets its
  row at once (the start time), so that a restart before its first fire still knows what
  it missed;
* row ``<id>#control``: ``paused``, and as ``last_fire_at`` the latest fire time at the
  moment of the last resume (fires that passed while paused are not run after resuming).

On start an instance resumes from the later of the two. Fire times in ``(that, now]``
that are at most ``misfire_grace`` late run; older ones were missed while no instance
could fire them, and the misfire policy decides (within ``misfire_window``).
"""

from __future__ import annotations

import hashlib
import logging
import random
import uuid
import weakref
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus as AnyioTaskStatus

from .._errors import ScheduleNotFound
from .._models import ScheduleState, TaskQuery, TaskRecord, TaskStatus
from ._definition import MisfirePolicy, OverlapPolicy, Schedule, ScheduleInfo
from ._triggers import from_us, to_us

if TYPE_CHECKING:
    from .._manager import TaskManager

__all__ = [
    "fire_id",
    "list_schedules",
    "pause_schedule",
    "resume_schedule",
    "run_schedules",
    "trigger_schedule",
]

log = logging.getLogger("anytask.schedule")

_NAMESPACE = uuid.UUID("0b7c8f52-3a49-4d8e-9d2b-5f3e1c7a9e64")
_MAX_SLEEP = 60.0  # re-read the shared state at least this often
_MAX_PER_PASS = 1000  # on-time fires handled per pass; the rest in the next pass
#: the least lateness that counts as a misfire: the loop's own wake-up takes a moment
_MIN_GRACE = 0.1
_TICK = timedelta(microseconds=1)
_BUSY = frozenset({TaskStatus.PENDING, TaskStatus.RUNNING})

_wakers: weakref.WeakKeyDictionary[TaskManager, anyio.Event] = weakref.WeakKeyDictionary()


def fire_id(schedule_id: str, fire_at: datetime) -> str:
    """The deterministic task id of one fire."""
    return str(uuid.uuid5(_NAMESPACE, f"{schedule_id}@{from_us(to_us(fire_at)).isoformat()}"))


def progress_key(sched: Schedule) -> str:
    """The state row of one definition of a schedule (see the module docstring): what
    decides its fire times, exactly (``repr`` of a float round-trips)."""
    start = "" if sched.start_at is None else to_us(sched.start_at)
    what = f"{sched.every!r}|{sched.cron}|{sched.timezone}|{start}"
    return f"{sched.id}{_DEF}{hashlib.sha256(what.encode()).hexdigest()[:16]}"


_DEF = "#def:"
_HEX = frozenset("0123456789abcdef")


def _is_progress_of(key: str, schedule_id: str) -> bool:
    """Whether ``key`` is the progress row of a definition of ``schedule_id``: exactly
    ``<id>#def:<16 hex digits>`` (the rows of a schedule named ``<id>#def:x``, whose
    keys start the same way, are not)."""
    n = len(schedule_id) + len(_DEF)
    return (
        len(key) == n + 16
        and key.startswith(_DEF, len(schedule_id))
        and key.startswith(schedule_id)
        and _HEX.issuperset(key[n:])
    )


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    return a if b is None or a >= b else b


def _record(
    tm: TaskManager, sched: Schedule, fire_at: datetime, now: datetime, run_after: datetime
) -> TaskRecord:
    defn = tm.registry.get(sched.task_name)
    assert defn is not None
    opts = defn.options
    return TaskRecord(
        id=fire_id(sched.id, fire_at),
        name=defn.name,
        args=[],
        kwargs={},
        created_at=now,
        run_after=run_after,
        priority=opts.priority,
        tags=list(opts.tags),
        max_attempts=opts.max_attempts,
        timeout=opts.timeout,
        requeue_on_interrupt=opts.requeue_on_interrupt,
        schedule_id=sched.id,
        fire_at=fire_at,
    )


async def _insert(tm: TaskManager, rec: TaskRecord) -> bool:
    [won] = await tm.store.insert([rec])
    if won and rec.status is TaskStatus.PENDING:
        tm._wake_dispatcher()
        if tm.events.active:
            tm._publish("enqueued", rec, rec.status)
    return won


class _Runner:
    def __init__(self, tm: TaskManager) -> None:
        self.tm = tm
        self.handled: dict[str, datetime] = {}  # every fire <= this is dealt with here
        # the first fire a pass judged on time and has not inserted yet (its insert
        # failed): on time it stays, however late the retry comes
        self.owed: dict[str, datetime] = {}
        self.backoff: dict[str, float] = {}  # per schedule whose last pass failed

    async def run(self, task_status: AnyioTaskStatus[None]) -> None:
        _wakers[self.tm] = wake = anyio.Event()
        task_status.started()
        backoff = 0.5
        while True:
            try:
                wait = await self.tick()
            except Exception:
                log.exception("anytask: the scheduler pass failed; retrying in %.1fs", backoff)
                wait = backoff
                backoff = min(backoff * 2, 30.0)
            else:
                backoff = 0.5
            if wait > 0:
                with anyio.move_on_after(wait):
                    await wake.wait()
            if wake.is_set():
                _wakers[self.tm] = wake = anyio.Event()

    async def tick(self) -> float:
        """Fire what is due; return the seconds until the next fire (at most a minute).
        A failure of one schedule is logged and retried with its own growing delay; the
        others go on."""
        tm = self.tm
        states = await tm.store.schedule_states()
        now = tm.clock.now()
        wake_at = now + timedelta(seconds=_MAX_SLEEP)
        for sched in list(tm._schedules.values()):
            try:
                nxt = await self._tick_one(sched, states, now)
            except Exception:
                delay = self.backoff.get(sched.id, 0.25) * 2
                self.backoff[sched.id] = min(delay, 30.0)
                log.exception(
                    "anytask: the scheduler pass failed for schedule %r; retrying in %.1fs",
                    sched.id,
                    delay,
                )
                nxt = now + timedelta(seconds=delay)
            else:
                self.backoff.pop(sched.id, None)
            if nxt is not None and nxt < wake_at:
                wake_at = nxt
        return max((wake_at - tm.clock.now()).total_seconds(), 0.0)

    async def _tick_one(
        self, sched: Schedule, states: dict[str, ScheduleState], now: datetime
    ) -> datetime | None:
        """One schedule's part of a pass; returns when it wants the next pass."""
        tm = self.tm
        key = progress_key(sched)
        progress = states.get(key)
        if progress is None and not any(_is_progress_of(k, sched.id) for k in states):
            # written by a version that kept one row per schedule: its progress holds
            # until this version writes the row of the definition
            progress = states.get(sched.id)
        handled = self.handled.get(sched.id)
        if (
            handled is None
            and progress is not None
            and progress.last_fire_at is not None
            and any(
                k != key
                and _is_progress_of(k, sched.id)
                and v.last_fire_at is not None
                and v.last_fire_at > progress.last_fire_at
                for k, v in states.items()
            )
        ):
            # another definition ran since this one last did (a rollback to an earlier
            # definition): this definition's progress is stale, start afresh
            progress = None
        own = progress.last_fire_at if progress else None
        control = states.get(sched.control_key)
        paused = control is not None and control.paused
        mark = _later(own, control.last_fire_at if control else None)
        forced: list[datetime] = []
        if handled is None:  # first pass of this instance (or its retry)
            if sched.run_on_start and not paused:
                latest = sched.trigger.last_fires(now, 1)
                if latest and (mark is None or latest[0] > mark):
                    forced = latest
            if own is None:
                # never seen (or just redefined): nothing is missed before now (not
                # even since a resume of an earlier definition), and the store says so
                # at once, so that a restart before the first fire still knows which
                # fires it missed
                await tm.store.save_schedule_state(ScheduleState(key, now, False))
                mark = now
            assert mark is not None  # (own, or now)
            handled = mark
        else:
            handled = _later(handled, mark) or handled
        if paused:
            self.handled[sched.id] = _later(handled, now) or now
            self.owed.pop(sched.id, None)
            return sched.trigger.next_after(self.handled[sched.id])
        missed, on_time = self._due(sched, handled, now)
        if on_time:
            self.owed[sched.id] = min(on_time[0], self.owed.get(sched.id, on_time[0]))
        fires = sorted(set(forced) | set(missed) | set(on_time))
        done: datetime | None = None
        for fire in fires:
            await self._fire(sched, fire, now)
            done = fire
            self.handled[sched.id] = _later(handled, fire) or fire
        self.owed.pop(sched.id, None)
        if len(fires) < _MAX_PER_PASS:
            self.handled[sched.id] = _later(handled, now) or now
        if done is not None and (mark is None or done > mark):
            await tm.store.save_schedule_state(ScheduleState(key, done, False))
        return sched.trigger.next_after(self.handled[sched.id])

    def _due(
        self, sched: Schedule, handled: datetime, now: datetime
    ) -> tuple[list[datetime], list[datetime]]:
        """The missed fires to run (by the misfire policy) and the on-time ones."""
        trigger = sched.trigger
        edge = now - timedelta(seconds=max(sched.misfire_grace, _MIN_GRACE))
        # on time: in (max(handled, edge), now], and the fire a pass judged on time whose
        # insert failed (only that one: later ones are judged as they come)
        on_time: list[datetime] = []
        owed = self.owed.get(sched.id)
        if owed is not None and handled < owed <= edge:
            on_time.append(owed)
            handled = owed
        fire = trigger.next_after(max(handled, edge))
        while fire is not None and fire <= now and len(on_time) < _MAX_PER_PASS:
            on_time.append(fire)
            fire = trigger.next_after(fire)
        # missed: in (handled, edge], more than misfire_grace late
        missed: list[datetime] = []
        first = trigger.next_after(handled)
        if first is None or first > edge:
            return missed, on_time
        if sched.misfire is MisfirePolicy.SKIP:
            log.info("anytask: schedule %r missed fires; skipping them (misfire=skip)", sched.id)
        elif sched.misfire is MisfirePolicy.RUN_ONCE and on_time:
            # the on-time run of this pass is the one run after the gap
            log.info(
                "anytask: schedule %r missed fires; its on-time fire runs for them "
                "(misfire=run_once)",
                sched.id,
            )
        else:
            n = 1 if sched.misfire is MisfirePolicy.RUN_ONCE else sched.max_catch_up
            lower = handled
            if sched.misfire_window is not None:
                lower = max(lower, now - timedelta(seconds=sched.misfire_window))
            missed = [f for f in trigger.last_fires(edge, n) if f > lower]
            if missed:
                log.info(
                    "anytask: schedule %r missed fires; running %d (misfire=%s)",
                    sched.id,
                    len(missed),
                    sched.misfire.value,
                )
        return missed, on_time[: max(_MAX_PER_PASS - len(missed), 0)]

    async def _fire(self, sched: Schedule, fire_at: datetime, now: datetime) -> None:
        tm = self.tm
        run_after = fire_at
        if sched.jitter:
            run_after = fire_at + timedelta(seconds=sched.jitter * random.random())
        rec = _record(tm, sched, fire_at, now, run_after)
        if sched.overlap is OverlapPolicy.SKIP:
            page = await tm.store.list(TaskQuery(schedule_id=sched.id, statuses=_BUSY, limit=1))
            if page.items:
                busy = page.items[0]
                rec.status = TaskStatus.CANCELLED
                rec.ended_at = now
                rec.error_type = "Skipped"
                rec.error = (
                    f"skipped: the run {busy.id} of this schedule is still "
                    f"{busy.status.value} (overlap='skip')"
                )
        if await _insert(tm, rec):
            log.debug("anytask: schedule %r fired for %s", sched.id, fire_at.isoformat())


async def run_schedules(
    tm: TaskManager, *, task_status: AnyioTaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """The scheduler loop of one manager (started inside its task group)."""
    await _Runner(tm).run(task_status)


# ---------------------------------------------------------------------- control
def _get(tm: TaskManager, schedule_id: str) -> Schedule:
    sched = tm._schedules.get(schedule_id)
    if sched is None:
        raise ScheduleNotFound(f"no schedule with id {schedule_id!r}")
    assert isinstance(sched, Schedule)
    return sched


def _wake(tm: TaskManager) -> None:
    event = _wakers.get(tm)
    if event is not None:
        event.set()


async def list_schedules(tm: TaskManager) -> list[ScheduleInfo]:
    tm._require_running("schedules")
    states = await tm.store.schedule_states()
    now = tm.clock.now()
    out = []
    for sched in tm._schedules.values():
        assert isinstance(sched, Schedule)
        control = states.get(sched.control_key)
        paused = control is not None and control.paused
        page = await tm.store.list(TaskQuery(schedule_id=sched.id, limit=1))
        last = page.items[0] if page.items else None
        out.append(
            ScheduleInfo(
                schedule=sched,
                paused=paused,
                last_fire_at=last.fire_at if last else None,
                last_task_id=last.id if last else None,
                last_status=last.status if last else None,
                next_fire_at=None if paused else sched.trigger.next_after(now),
            )
        )
    return out


async def pause_schedule(tm: TaskManager, schedule_id: str) -> None:
    sched = _get(tm, schedule_id)
    tm._require_running("pause_schedule")
    await tm.store.save_schedule_state(ScheduleState(sched.control_key, None, True))
    _wake(tm)


async def resume_schedule(tm: TaskManager, schedule_id: str) -> None:
    sched = _get(tm, schedule_id)
    tm._require_running("resume_schedule")
    control = (await tm.store.schedule_states()).get(sched.control_key)
    if control is None or not control.paused:
        # not paused: nothing to resume. Moving the mark would drop a fire that is due
        # but not inserted yet (a pass in flight, or an insert being retried)
        return
    latest = sched.trigger.last_fires(tm.clock.now(), 1)
    mark = latest[0] if latest else None
    await tm.store.save_schedule_state(ScheduleState(sched.control_key, mark, False))
    _wake(tm)


async def trigger_schedule(tm: TaskManager, schedule_id: str) -> str:
    sched = _get(tm, schedule_id)
    tm._require_running("trigger_schedule")
    now = tm.clock.now()
    # a run of its own: a fresh id, and as fire time the first microsecond from now that
    # is neither one of the schedule's fire times (whose run it would take) nor taken by
    # another trigger
    fire_at = now
    for _ in range(1000):
        if sched.trigger.next_after(fire_at - _TICK) != fire_at:
            rec = _record(tm, sched, fire_at, now, now)
            rec.id = str(uuid.uuid4())
            if await _insert(tm, rec):
                return rec.id
        fire_at += _TICK
    raise RuntimeError(f"could not find a free fire time for a run of {schedule_id!r}")
