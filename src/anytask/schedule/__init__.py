"""Interval and cron schedules.

Define them on the manager, before it starts::

    @tm.schedule(every=300)                                   # seconds or a timedelta
    async def sync_rates() -> None: ...

    @tm.schedule(cron="0 9 * * 1-5", timezone="America/New_York", retries=2)
    def daily_digest() -> None: ...

``tm.schedule(...)`` takes the task options of ``tm.task`` (``retries``, ``delay``,
``backoff``, ``max_delay``, ``retry_jitter``, ``timeout``, ``priority``,
``requeue_on_interrupt``, ``tags``, ``name``) and the schedule options ``id`` (default:
the task name), ``start_at``, ``jitter`` (seconds), ``run_on_start``, ``misfire``
(:class:`MisfirePolicy`), ``misfire_grace``, ``misfire_window``, ``max_catch_up`` and
``overlap`` (:class:`OverlapPolicy`). The function is registered as a task too and is
returned unchanged.

Control from code, while the manager runs:

* ``await tm.schedules()`` -> list of :class:`ScheduleInfo` (paused, last fire, last
  outcome, next fire);
* ``await tm.pause_schedule(id)`` / ``await tm.resume_schedule(id)`` (shared by every
  instance on the store; fires that pass while paused are not run later);
* ``await tm.trigger_schedule(id)`` -> task id of a run now (ignores pause and overlap).

Each fire is an ordinary task whose record carries ``schedule_id`` and ``fire_at`` (the
exact UTC fire time, before jitter); ``tm.list(schedule_id=id)`` is a schedule's history.
See ``docs/schedules.md`` for the DST, misfire, overlap and single-fire rules.
"""

from ._definition import MisfirePolicy as MisfirePolicy
from ._definition import OverlapPolicy as OverlapPolicy
from ._definition import Schedule as Schedule
from ._definition import ScheduleInfo as ScheduleInfo

__all__ = ["MisfirePolicy", "OverlapPolicy", "Schedule", "ScheduleInfo"]
