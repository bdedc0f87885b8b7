"""The store contract.

A store is the single source of truth for task records; the runtime holds nothing a
crash could lose. Every method is one atomic step in the backing database. Methods are
``async`` except :meth:`Store.get`, which is synchronous so that plain sync code (a sync
FastAPI route, a script) can read a record, as in ``tm.store.get(task_id)``.

Rules every implementation follows (and ``tests/test_store_contract.py`` checks):

* :meth:`insert` writes a batch in one transaction. A record whose id, idempotency key or
  (schedule id, fire time) already exists is not written; its slot in the result is
  ``False``. That conflict is the only lock used for idempotency and schedule fires.
* :meth:`claim` atomically moves up to ``limit`` due pending records (``run_after <= now``)
  to ``running``, highest priority first and FIFO (by ``seq``) among equals, setting the
  owner, lease expiry, ``started_at``, ``attempts + 1`` and a new fencing ``token``.
* :meth:`complete` applies an :class:`Outcome` only while the record is ``running`` with
  the outcome's token; an outcome from a worker that lost its lease is refused. A
  ``pending`` outcome (a retry, a requeue, a hand-back) sets ``run_after`` when given, and
  ``attempts`` when given (a task handed back unrun does not use up an attempt); on a
  record whose cancel was requested meanwhile (``cancel`` of a running task), it makes
  the record ``cancelled`` instead, so that the request is not lost.
* :meth:`write_batch` does an insert, a complete and a claim, in that order; a store that
  can runs all three in one transaction (one commit instead of three).
* :meth:`heartbeat` extends, in one statement, the leases of every record ``owner`` runs.
* :meth:`recover` ends the leases that expired: such records go back to ``pending`` when
  ``requeue_on_interrupt`` is set and become ``interrupted`` otherwise. Live leases are
  never touched.
* Listing is paged by the store, newest first (highest ``seq`` first).
* Records handed out are snapshots, and what the store keeps of a record or an outcome it
  is handed is its own: neither shares a list or dict, nested ones included, with the
  caller.
"""

from __future__ import annotations

import builtins
import math
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .._errors import ConfigurationError
from .._models import (
    TERMINAL,
    DurationStats,
    Metrics,
    MetricsBucket,
    Outcome,
    Page,
    ScheduleState,
    TaskQuery,
    TaskRecord,
    TaskStatus,
    check_aware,
)

__all__ = ["BatchResult", "HeartbeatResult", "MetricsBuilder", "RecoveryResult", "Store"]

#: How many records the generic :meth:`Store.metrics` reads at most.
METRICS_SCAN_LIMIT = 50_000


class MetricsBuilder:
    """Accumulates ended tasks into buckets and per-name durations (shared by stores that
    compute metrics in Python)."""

    def __init__(self, since: datetime, until: datetime, buckets: int) -> None:
        self.since, self.until = since, until
        self.span, starts = metrics_buckets(since, until, buckets)
        self.buckets = buckets
        self.series = [MetricsBucket(start) for start in starts]
        self.durations: dict[str, list[float]] = {}

    def add(self, rec: TaskRecord) -> None:
        ended = rec.ended_at
        if ended is None or not rec.status.terminal or not self.since <= ended < self.until:
            return
        i = min(micros(ended - self.since) * self.buckets // self.span, self.buckets - 1)
        bucket = self.series[i]
        if rec.status is TaskStatus.SUCCESS:
            bucket.success += 1
        elif rec.status.dead:
            bucket.failed += 1
        else:
            bucket.other += 1
        duration = rec.duration
        if duration is not None and rec.status in (TaskStatus.SUCCESS, TaskStatus.FAILED):
            self.durations.setdefault(rec.name, []).append(duration)

    def build(self, counts: dict[TaskStatus, int]) -> Metrics:
        stats = []
        for name, values in sorted(self.durations.items()):
            values.sort()
            stats.append(
                DurationStats(name, len(values), *(percentile(values, p) for p in (50, 95, 99)))
            )
        return Metrics(self.since, self.until, counts, self.series, stats)


def micros(delta: timedelta) -> int:
    """A timedelta as a whole number of microseconds (exact, no float on the way)."""
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def metrics_buckets(
    since: datetime, until: datetime, buckets: int
) -> tuple[int, builtins.list[datetime]]:
    """Check :meth:`Store.metrics`'s arguments; the window's span in microseconds (at
    least 1) and the start of each bucket. Bucket ``i`` holds the tasks that ended
    ``d`` microseconds after ``since`` with ``d * buckets // span == i``: it starts at
    ``since`` plus ``ceil(span * i / buckets)`` microseconds. Exact integer arithmetic,
    so that every store puts a task ending on a bucket edge in the same bucket."""
    check_aware("since", since)
    check_aware("until", until)
    if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
        raise ConfigurationError(f"buckets must be an int >= 1, got {buckets!r}")
    span = max(micros(until - since), 1)
    starts = [since + timedelta(microseconds=-(-span * i // buckets)) for i in range(buckets)]
    return span, starts


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty sequence."""
    return ordered[min(len(ordered) - 1, max(math.ceil(p / 100 * len(ordered)) - 1, 0))]


@dataclass
class HeartbeatResult:
    held: set[str] = field(default_factory=set)  # ids whose lease was extended
    cancel_requested: set[str] = field(default_factory=set)  # of those, the ones to cancel


@dataclass
class BatchResult:
    inserted: builtins.list[bool] = field(default_factory=list)  # as :meth:`Store.insert`
    completed: builtins.list[bool] = field(default_factory=list)  # as :meth:`Store.complete`
    claimed: builtins.list[TaskRecord] = field(default_factory=list)  # as :meth:`Store.claim`


@dataclass
class RecoveryResult:
    requeued: builtins.list[str] = field(default_factory=list)
    interrupted: builtins.list[str] = field(default_factory=list)
    #: tasks whose cancel was requested before their instance stopped: ``cancelled``
    cancelled: builtins.list[str] = field(default_factory=list)


def purge_filter(
    statuses: Collection[TaskStatus] | None, limit: int | None
) -> tuple[frozenset[TaskStatus], int | None]:
    """Check :meth:`Store.purge`'s options; the statuses to delete and the limit."""
    wanted = TERMINAL if statuses is None else frozenset(TaskStatus(s) for s in statuses)
    if not wanted <= TERMINAL:
        names = ", ".join(sorted(s.value for s in wanted - TERMINAL))
        raise ValueError(f"purge deletes ended tasks only, not {names}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be an int >= 1 or None, got {limit!r}")
    return wanted, limit


class Store(ABC):
    #: True when other processes may change the data (the runtime then polls for work
    #: it was not told about); False for a store private to this process.
    shared: bool = True
    #: The most bytes one record may hold in this store, or None when there is no such
    #: limit. The manager keeps each record within it: arguments that take more than half
    #: of it (as JSON) are refused at enqueue, and a result, error, traceback or log list
    #: longer than an eighth of it is not stored whole (see ``docs/stores.md``). A record
    #: over the limit would fail the group commit that holds it, and with it every other
    #: write, for as long as it is retried.
    max_record_bytes: int | None = None

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect, create or migrate the schema. Called once by the manager."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Safe to call twice."""

    # -- reads ---------------------------------------------------------------------------
    @abstractmethod
    def get(self, task_id: str) -> TaskRecord | None:
        """Synchronous read of one record (safe from any thread)."""

    @abstractmethod
    async def fetch(self, task_id: str) -> TaskRecord | None:
        """The record with this id, or None."""

    async def fetch_many(self, task_ids: Sequence[str]) -> builtins.list[TaskRecord]:
        """Records for the ids that exist, in no particular order."""
        found = [await self.fetch(i) for i in task_ids]
        return [r for r in found if r is not None]

    @abstractmethod
    async def list(self, query: TaskQuery) -> Page:
        """One page of records matching ``query``, newest first."""

    @abstractmethod
    async def count(self, query: TaskQuery | None = None) -> int:
        """How many records match ``query`` (limit and cursor ignored)."""

    @abstractmethod
    async def counts(self) -> dict[TaskStatus, int]:
        """Number of records in each status (every status present, zeros included)."""

    async def has_unfinished(self) -> bool:
        """Whether any record is pending or running (``join()`` asks this; stores answer
        it without counting every status)."""
        counts = await self.counts()
        return counts[TaskStatus.PENDING] > 0 or counts[TaskStatus.RUNNING] > 0

    @abstractmethod
    async def next_run_after(self) -> datetime | None:
        """The earliest ``run_after`` among pending records, or None when none is pending.

        The dispatcher asks this after a claim that found no more due records, to learn
        when to claim again. A store may therefore leave out records that were due when
        created (``run_after`` not after ``created_at``): the claim took every one of them
        it could, and a record inserted since then comes with a claim of its own."""

    async def metrics(self, since: datetime, until: datetime, buckets: int) -> Metrics:
        """Tasks that ended in ``[since, until)``, in ``buckets`` equal time buckets, with
        run time percentiles per task name. This generic version pages through
        :meth:`list` (at most ``METRICS_SCAN_LIMIT`` records); stores override it."""
        builder = MetricsBuilder(since, until, buckets)
        cursor: int | None = None
        for _ in range(METRICS_SCAN_LIMIT // 1000):
            page = await self.list(TaskQuery(limit=1000, cursor=cursor))
            for rec in page.items:
                builder.add(rec)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        return builder.build(await self.counts())

    # -- writes --------------------------------------------------------------------------
    @abstractmethod
    async def insert(self, records: Sequence[TaskRecord]) -> builtins.list[bool]:
        """Insert new records in one transaction; False where a conflict kept one out.

        Records the runtime builds may hold a tuple where a field is typed as a list
        (``args``, ``tags``, ``logs`` when empty, and a task's default ``tags``): read
        them as sequences. What a store hands out holds lists."""

    @abstractmethod
    async def claim(
        self, owner: str, limit: int, now: datetime, lease_until: datetime
    ) -> builtins.list[TaskRecord]:
        """Atomically take up to ``limit`` due pending records for ``owner``."""

    @abstractmethod
    async def complete(self, outcomes: Sequence[Outcome]) -> builtins.list[bool]:
        """Apply fenced outcomes in one transaction; False where the token did not match."""

    async def write_batch(
        self,
        records: Sequence[TaskRecord],
        outcomes: Sequence[Outcome],
        owner: str,
        limit: int,
        now: datetime,
        lease_until: datetime,
    ) -> BatchResult:
        """:meth:`insert` the records, :meth:`complete` the outcomes, then :meth:`claim`
        up to ``limit`` due records (none when ``limit`` is 0). This generic version makes
        the three calls (each atomic); a store overrides it to make them one transaction,
        so that the runtime commits outcomes and takes the next tasks in one commit."""
        inserted = await self.insert(records) if records else []
        completed = await self.complete(outcomes) if outcomes else []
        claimed = await self.claim(owner, limit, now, lease_until) if limit > 0 else []
        return BatchResult(inserted, completed, claimed)

    @abstractmethod
    async def heartbeat(
        self, owner: str, lease_until: datetime, task_ids: Collection[str] | None = None
    ) -> HeartbeatResult:
        """Extend the leases of the running records held by ``owner``: of those among
        ``task_ids`` when given (the tasks the calling instance knows it holds), else of
        all of them. With ids, records left in the same owner's name by an earlier process
        (killed, then started again with the same instance id), or held by another live
        process that shares the id, are not renewed: a dead process's run out and are
        recovered."""

    @abstractmethod
    async def recover(self, now: datetime) -> RecoveryResult:
        """Requeue or interrupt running records whose lease expired before ``now``. One
        whose cancel was requested (``cancel_requested``) ends ``cancelled`` instead, at
        ``now``: the request outlives the instance that was running the task."""

    @abstractmethod
    async def cancel(self, task_id: str, now: datetime) -> TaskStatus | None:
        """Cancel a task: a pending one becomes ``cancelled`` at once; a running one gets
        ``cancel_requested`` (its owner cancels it at the next heartbeat). Returns the
        status after the call, or None when there is no such task."""

    @abstractmethod
    async def interrupt_pending(self, created_before: datetime, now: datetime) -> int:
        """Mark pending records created before the given time ``interrupted``."""

    @abstractmethod
    async def purge(
        self,
        ended_before: datetime,
        *,
        statuses: Collection[TaskStatus] | None = None,
        limit: int | None = None,
    ) -> int:
        """Delete terminal records that ended before the given time: of ``statuses`` (all
        the terminal ones when None), the earliest ended first (then by ``seq``), at most
        ``limit`` of them (all when None), in one transaction (with a ``limit``, a store may
        use several short ones instead). Returns how many. A replay stays while the task
        it replays is stored (its record is how that task is known to have been replayed,
        see ``TaskManager.replay``). A status that is not terminal, or a ``limit`` below
        1, raises ``ValueError``.

        Calls with the same arguments that each delete ``limit`` records, one after the
        other, make a pass, which the first call that deletes fewer ends. A store may
        continue a pass where its last call stopped instead of reading again the records
        that call kept; a record that becomes deletable behind that point during the pass
        (a replay whose task was deleted) then goes in the next pass."""

    # -- schedules -----------------------------------------------------------------------
    @abstractmethod
    async def schedule_states(self) -> dict[str, ScheduleState]:
        """The persisted state of every schedule."""

    @abstractmethod
    async def save_schedule_state(self, state: ScheduleState) -> None:
        """Insert or update a schedule's state. ``last_fire_at`` never moves backwards."""
