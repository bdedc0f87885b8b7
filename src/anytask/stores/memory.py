"""A store that keeps everything in this process's memory.

Nothing survives the process: use it for tests and for apps that accept losing tasks on
restart. It is pure async code without threads, so it runs under a virtual clock (trio's
``MockClock``). Payloads are still JSON round-tripped, so a task sees the same arguments it
would see from a persistent store.
"""

from __future__ import annotations

import builtins
import heapq
import threading
from bisect import insort
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import datetime

from .._codec import cloned, detached, dumps, loads
from .._errors import ConfigurationError
from .._models import (
    TERMINAL,
    Metrics,
    Outcome,
    Page,
    ScheduleState,
    TaskQuery,
    TaskRecord,
    TaskStatus,
)
from .abc import HeartbeatResult, MetricsBuilder, RecoveryResult, Store, purge_filter

__all__ = ["MemoryStore", "detached"]

_holder_lock = threading.Lock()  # MemoryStore._holder, changed by open() and close()
_PENDING = TaskStatus.PENDING
_RUNNING = TaskStatus.RUNNING
_SUCCESS = TaskStatus.SUCCESS


def _snapshot(rec: TaskRecord) -> TaskRecord:
    """A copy of a record that shares no list or dict with it, nested ones included: what
    the store hands out and what it keeps of what it is handed (as a store that encodes
    every value does, changing one in place never changes the other)."""
    snap = rec.copy()
    snap.args = cloned(rec.args) if rec.args else []
    snap.kwargs = cloned(rec.kwargs)
    snap.tags = list(rec.tags)
    snap.logs = cloned(rec.logs) if rec.logs else []
    if type(rec.result) in (list, dict):
        snap.result = cloned(rec.result)
    return snap


class _Due:
    """The due pending records, in claim order: highest priority first, then by ``seq``
    (FIFO among equals).

    A record arriving in ``seq`` order, as every new one does, goes to the end of its
    priority's queue: constant time to add and to take, where a heap of every due record
    costs a logarithmic sift on each. One arriving out of order (a retry or a delayed task
    that became due after younger ones) goes to a small heap beside the queues, and the
    two are merged when taking. Records that stopped being pending while they waited (a
    cancel) are dropped when they come up."""

    __slots__ = ("_fifo", "_late", "_prios", "_rows")

    _KEEP_EMPTY = 8  # empty priority queues kept (so that one priority does not churn)

    def __init__(self, rows: dict[str, TaskRecord]) -> None:
        self._rows = rows
        self._fifo: dict[int, deque[TaskRecord]] = {}
        self._prios: builtins.list[int] = []  # the keys of _fifo, highest first
        self._late: builtins.list[tuple[int, int, str]] = []  # heap of (-priority, seq, id)

    def add(self, rec: TaskRecord) -> None:
        prio = rec.priority
        queue = self._fifo.get(prio)
        if queue is None:
            self._new_queue(prio).append(rec)
        elif queue and queue[-1].seq > rec.seq:
            heapq.heappush(self._late, (-prio, rec.seq, rec.id))
        else:
            queue.append(rec)

    def _new_queue(self, prio: int) -> deque[TaskRecord]:
        fifo, prios = self._fifo, self._prios
        if len(prios) >= self._KEEP_EMPTY:
            for p in [p for p in prios if not fifo[p]]:
                del fifo[p]
                prios.remove(p)
        queue = fifo[prio] = deque()
        insort(prios, prio, key=lambda p: -p)
        return queue

    def _late_head(self) -> tuple[int, int, str] | None:
        late, rows = self._late, self._rows
        while late:
            head = late[0]
            rec = rows.get(head[2])
            # (the same seq: not a later record that took a purged record's id)
            if rec is not None and rec.seq == head[1] and rec.status is _PENDING:
                return head
            heapq.heappop(late)  # no longer pending
        return None

    def _head(self) -> deque[TaskRecord] | None:
        """The queue whose first record comes next; None when the late heap's first does
        (its first entry is then a pending record), or when nothing is due."""
        late = self._late_head() if self._late else None
        fifo = self._fifo
        for prio in self._prios:
            queue = fifo[prio]
            while queue:
                rec = queue[0]
                if rec.status is _PENDING:
                    if late is not None and (late[0], late[1]) < (-prio, rec.seq):
                        return None
                    return queue
                queue.popleft()  # no longer pending
        return None

    def pop(self) -> TaskRecord | None:
        if not self._late:  # the common case, kept short
            fifo = self._fifo
            for prio in self._prios:
                queue = fifo[prio]
                while queue:
                    rec = queue.popleft()
                    if rec.status is _PENDING:
                        return rec
            return None
        head = self._head()
        if head is not None:
            return head.popleft()
        return self._rows[heapq.heappop(self._late)[2]] if self._late else None

    def peek(self) -> TaskRecord | None:
        queue = self._head()
        if queue is not None:
            return queue[0]
        return self._rows[self._late[0][2]] if self._late else None


class MemoryStore(Store):
    """Task records in this process's memory, used from one event loop's thread at a
    time: several managers on one event loop may share a store, but while any of them
    runs, a manager in another thread cannot open it (:class:`ConfigurationError`; its
    claims would race with theirs). Once they have all stopped, or their thread has
    ended, a manager in another thread may take it over. :meth:`get` may be called from
    any thread."""

    shared = False

    @property
    def inline(self) -> bool:
        """The runtime may call :meth:`insert_now`, :meth:`claim_one_now` and
        :meth:`complete_now` from its event loop thread instead of the async methods.
        False for a subclass that overrides what those bypass (a test double that slows
        down or counts claims, say), so that its overrides always run."""
        cls = type(self)
        return (
            cls.insert is MemoryStore.insert
            and cls.claim is MemoryStore.claim
            and cls.complete is MemoryStore.complete
            and cls.write_batch is MemoryStore.write_batch
        )

    def __init__(self) -> None:
        # (thread, count): the thread whose managers hold the store open, and how many (the
        # Thread object, not its ident: the system reuses the idents of ended threads)
        self._holder: tuple[threading.Thread | None, int] = (None, 0)
        self._rows: dict[str, TaskRecord] = {}
        self._keys: dict[str, str] = {}
        self._fires: set[tuple[str, datetime]] = set()
        self._ready = _Due(self._rows)
        self._fifo = self._ready._fifo  # for the hot paths
        self._delayed: builtins.list[tuple[datetime, int, str]] = []  # (run_after, seq, id)
        self._running: dict[str, TaskRecord] = {}
        self._schedules: dict[str, ScheduleState] = {}
        self._seq = 0
        # records per final status; the running ones are _running, and the pending ones
        # all the others (so that a claim and a start change no count)
        self._counts: dict[TaskStatus, int] = dict.fromkeys(TERMINAL, 0)

    async def open(self) -> None:
        me = threading.current_thread()
        with _holder_lock:
            holder, count = self._holder
            if count and holder is not me:
                if holder is not None and holder.is_alive():
                    raise ConfigurationError(
                        f"this MemoryStore is in use by {count} running manager(s) in another"
                        " thread; a MemoryStore serves the managers of one event loop (give"
                        " each thread its own store, or use a SQLiteStore to share tasks)"
                    )
                count = 0  # that thread ended without closing it
            self._holder = (me, count + 1)

    async def close(self) -> None:
        with _holder_lock:
            holder, count = self._holder
            if count and holder is threading.current_thread():
                self._holder = (holder, count - 1)

    # -- helpers -------------------------------------------------------------------------
    def _enqueue(self, rec: TaskRecord) -> None:
        heapq.heappush(self._delayed, (rec.run_after, rec.seq, rec.id))

    def _promote(self, now: datetime) -> None:
        delayed, ready, rows = self._delayed, self._ready, self._rows
        while delayed and delayed[0][0] <= now:
            run_after, _, task_id = heapq.heappop(delayed)
            rec = rows.get(task_id)
            if rec is not None and rec.status is _PENDING and rec.run_after == run_after:
                ready.add(rec)

    # -- reads ---------------------------------------------------------------------------
    def get(self, task_id: str) -> TaskRecord | None:
        rec = self._rows.get(task_id)
        return None if rec is None else _snapshot(rec)

    async def fetch(self, task_id: str) -> TaskRecord | None:
        return self.get(task_id)

    async def fetch_many(self, task_ids: Sequence[str]) -> builtins.list[TaskRecord]:
        rows = self._rows
        return [_snapshot(rows[i]) for i in task_ids if i in rows]

    async def list(self, query: TaskQuery) -> Page:
        items: builtins.list[TaskRecord] = []
        for rec in reversed(self._rows.values()):  # (in seq order: the order of insertion)
            if query.matches(rec):
                items.append(_snapshot(rec))
                if len(items) == query.limit:
                    break
        next_cursor = items[-1].seq if len(items) == query.limit else None
        return Page(items, next_cursor)

    async def count(self, query: TaskQuery | None = None) -> int:
        if query is None:
            return len(self._rows)
        if query.cursor is not None:  # the count covers every page
            query = replace(query, cursor=None)
        return sum(1 for rec in self._rows.values() if query.matches(rec))

    async def counts(self) -> dict[TaskStatus, int]:
        running = len(self._running)
        ended = self._counts
        pending = len(self._rows) - running - sum(ended.values())
        return {s: ended.get(s, pending if s is _PENDING else running) for s in TaskStatus}

    async def has_unfinished(self) -> bool:
        return len(self._rows) > sum(self._counts.values())

    def _move(self, rec: TaskRecord, status: TaskStatus) -> None:
        counts = self._counts
        if rec.status in counts:
            counts[rec.status] -= 1
        if status in counts:
            counts[status] += 1
        rec.status = status

    async def metrics(self, since: datetime, until: datetime, buckets: int) -> Metrics:
        builder = MetricsBuilder(since, until, buckets)
        for rec in self._rows.values():  # one pass, no copies
            builder.add(rec)
        return builder.build(await self.counts())

    async def next_run_after(self) -> datetime | None:
        rows = self._rows
        due = self._ready.peek()
        if due is not None:
            return due.run_after  # already due
        delayed = self._delayed
        while delayed:
            run_after, _, task_id = delayed[0]
            rec = rows.get(task_id)
            if rec is not None and rec.status is _PENDING and rec.run_after == run_after:
                return run_after
            heapq.heappop(delayed)  # stale entry
        return None

    # -- writes --------------------------------------------------------------------------
    async def insert(self, records: Sequence[TaskRecord]) -> builtins.list[bool]:
        return self.insert_now(records)

    def insert_now(
        self, records: Sequence[TaskRecord], *, owned: bool = False
    ) -> builtins.list[bool]:
        """:meth:`insert`, synchronously. ``owned``: the caller hands the records over
        (it built them and keeps no reference it will change), so they are stored as they
        are instead of copied; nested values in the payload are still copied."""
        result: builtins.list[bool] = []
        rows, keys, fires = self._rows, self._keys, self._fires
        for src in records:
            fire = (src.schedule_id, src.fire_at) if src.schedule_id and src.fire_at else None
            if (
                src.id in rows
                or (src.idempotency_key is not None and src.idempotency_key in keys)
                or (fire is not None and fire in fires)
            ):
                result.append(False)
                continue
            if owned:
                rec = src
                if rec.args:
                    rec.args = cloned(rec.args)
                if rec.kwargs:
                    rec.kwargs = cloned(rec.kwargs)
            else:
                rec = _snapshot(src)
            self._seq += 1
            rec.seq = self._seq
            rows[rec.id] = rec
            if rec.status in self._counts:
                self._counts[rec.status] += 1
            if rec.idempotency_key is not None:
                keys[rec.idempotency_key] = rec.id
            if fire is not None:
                fires.add(fire)
            if rec.status is _PENDING:
                if rec.run_after <= rec.created_at:  # due at once: straight to the ready heap
                    self._ready.add(rec)
                else:
                    self._enqueue(rec)
            elif rec.status is _RUNNING:
                self._running[rec.id] = rec
            result.append(True)
        return result

    def put_now(self, rec: TaskRecord) -> bool:
        """Insert one new record that is pending and due at once, with no idempotency key
        and no schedule fire (what a plain ``add_task`` builds), handing it over as
        :meth:`insert_now` with ``owned=True`` does. False if its id exists."""
        if self._rows.setdefault(rec.id, rec) is not rec:
            return False  # the id exists (and the stored record stays)
        if rec.args:
            rec.args = cloned(rec.args)
        if rec.kwargs:
            rec.kwargs = cloned(rec.kwargs)
        self._seq += 1
        rec.seq = self._seq
        queue = self._fifo.get(rec.priority)
        if queue is not None:
            queue.append(rec)  # its seq is the highest yet: in order (_Due.add, inlined)
        else:
            self._ready.add(rec)
        return True

    def succeed_now(self, rec: TaskRecord, token: int, ended_at: datetime) -> bool:
        """Record the success (no result, no new log lines) of the attempt holding
        ``token`` on the record ``rec`` (the stored one or a copy). The same as completing
        with such an :class:`Outcome`, for the hot path."""
        row = self._rows.get(rec.id)
        if row is None or row.status is not _RUNNING or row.token != token or row.seq != rec.seq:
            return False
        rec = row
        del self._running[rec.id]
        self._counts[_SUCCESS] += 1
        rec.status = _SUCCESS
        rec.owner = None
        rec.lease_expires_at = None
        rec.cancel_requested = False
        rec.error = rec.error_type = rec.traceback = None
        rec.ended_at = ended_at
        rec.result = None
        return True

    def claim_one_now(self, owner: str, now: datetime, lease_until: datetime) -> TaskRecord | None:
        """Claim the next due record, synchronously, and return the stored record itself
        (not a copy): the caller must only read it. For a runtime in the same thread."""
        if self._delayed:
            self._promote(now)
        ready = self._ready
        while True:
            if not ready._late and ready._prios:  # _Due.pop's common case, inlined
                queue = self._fifo[ready._prios[0]]
                rec = queue.popleft() if queue else ready.pop()
            else:
                rec = ready.pop()
            if rec is None:
                return None
            if rec.status is not _PENDING:
                continue  # (no longer pending: dropped)
            if rec.run_after > now:  # asked with an earlier "now": not due for it yet
                self._enqueue(rec)
                continue
            rec.status = _RUNNING
            rec.owner = owner
            rec.lease_expires_at = lease_until
            rec.started_at = now
            rec.ended_at = None
            rec.attempts += 1
            rec.token += 1
            rec.cancel_requested = False
            self._running[rec.id] = rec
            return rec

    async def claim(
        self, owner: str, limit: int, now: datetime, lease_until: datetime
    ) -> builtins.list[TaskRecord]:
        claimed: builtins.list[TaskRecord] = []
        while len(claimed) < limit:
            rec = self.claim_one_now(owner, now, lease_until)
            if rec is None:
                break
            claimed.append(_snapshot(rec))
        return claimed

    async def complete(self, outcomes: Sequence[Outcome]) -> builtins.list[bool]:
        return self.complete_now(outcomes)

    def complete_now(self, outcomes: Sequence[Outcome]) -> builtins.list[bool]:
        """:meth:`complete`, synchronously."""
        result: builtins.list[bool] = []
        rows, running = self._rows, self._running
        for out in outcomes:
            rec = rows.get(out.id)
            if (
                rec is None
                or rec.status is not _RUNNING
                or rec.token != out.token
                or (out.seq is not None and rec.seq != out.seq)  # (an id that came back)
            ):
                result.append(False)
                continue
            # the copies first: nothing below may fail half way through a record
            logs = None if out.logs is None else cloned(out.logs)
            value = None if out.result is None else loads(dumps(out.result))
            del running[out.id]
            cancel = out.status is _PENDING and rec.cancel_requested
            # (a retry, requeue or hand-back of a task whose cancel was requested meanwhile
            # ends it cancelled: see Store.complete)
            self._move(rec, TaskStatus.CANCELLED if cancel else out.status)
            rec.owner = None
            rec.lease_expires_at = None
            rec.cancel_requested = False
            if logs is not None:
                rec.logs = logs
            rec.error, rec.error_type, rec.traceback = out.error, out.error_type, out.traceback
            if out.status is _PENDING:
                if out.attempts is not None:
                    rec.attempts = out.attempts
                rec.ended_at = out.ended_at
                if cancel:
                    rec.error, rec.error_type = "cancelled", "Cancelled"
                else:
                    rec.run_after = out.run_after or rec.run_after
                    self._enqueue(rec)
            else:
                rec.ended_at = out.ended_at
                rec.result = value
            result.append(True)
        return result

    async def heartbeat(
        self, owner: str, lease_until: datetime, task_ids: Collection[str] | None = None
    ) -> HeartbeatResult:
        hb = HeartbeatResult()
        for rec in self._running.values():
            if rec.owner == owner and (task_ids is None or rec.id in task_ids):
                rec.lease_expires_at = lease_until
                hb.held.add(rec.id)
                if rec.cancel_requested:
                    hb.cancel_requested.add(rec.id)
        return hb

    async def recover(self, now: datetime) -> RecoveryResult:
        res = RecoveryResult()
        expired = [
            r
            for r in self._running.values()
            if r.lease_expires_at is not None and r.lease_expires_at < now
        ]
        for rec in expired:
            del self._running[rec.id]
            rec.owner = None
            rec.lease_expires_at = None
            asked, rec.cancel_requested = rec.cancel_requested, False
            if asked:  # the request outlives the instance that ran the task
                self._move(rec, TaskStatus.CANCELLED)
                rec.ended_at = now
                rec.error_type = "Cancelled"
                rec.error = "cancelled"
                res.cancelled.append(rec.id)
            elif rec.requeue_on_interrupt:
                self._move(rec, _PENDING)
                rec.run_after = now
                self._enqueue(rec)
                res.requeued.append(rec.id)
            else:
                self._move(rec, TaskStatus.INTERRUPTED)
                rec.ended_at = now
                rec.error_type = "Interrupted"
                rec.error = "the instance running this task stopped before it finished"
                res.interrupted.append(rec.id)
        return res

    async def cancel(self, task_id: str, now: datetime) -> TaskStatus | None:
        rec = self._rows.get(task_id)
        if rec is None:
            return None
        if rec.status is _PENDING:
            self._move(rec, TaskStatus.CANCELLED)
            rec.ended_at = now
        elif rec.status is _RUNNING:
            rec.cancel_requested = True
        return rec.status

    async def interrupt_pending(self, created_before: datetime, now: datetime) -> int:
        n = 0
        for rec in self._rows.values():
            if rec.status is _PENDING and rec.created_at < created_before:
                self._move(rec, TaskStatus.INTERRUPTED)
                rec.ended_at = now
                rec.error_type = "Interrupted"
                rec.error = "left pending by an earlier run (requeue_pending=False)"
                n += 1
        return n

    async def purge(
        self,
        ended_before: datetime,
        *,
        statuses: Collection[TaskStatus] | None = None,
        limit: int | None = None,
    ) -> int:
        wanted, limit = purge_filter(statuses, limit)
        rows = self._rows
        gone = [
            rec
            for rec in rows.values()
            if rec.status in wanted
            and rec.ended_at is not None
            and rec.ended_at < ended_before
            and (rec.replay_of is None or rec.replay_of not in rows)
        ]
        if limit is not None and len(gone) > limit:
            gone.sort(key=lambda rec: (rec.ended_at, rec.seq))
            del gone[limit:]
        for rec in gone:
            del self._rows[rec.id]
            self._counts[rec.status] -= 1
            if rec.idempotency_key is not None:
                self._keys.pop(rec.idempotency_key, None)
            if rec.schedule_id is not None and rec.fire_at is not None:
                self._fires.discard((rec.schedule_id, rec.fire_at))
        return len(gone)

    # -- schedules -----------------------------------------------------------------------
    async def schedule_states(self) -> dict[str, ScheduleState]:
        return {
            k: ScheduleState(v.schedule_id, v.last_fire_at, v.paused)
            for k, v in self._schedules.items()
        }

    async def save_schedule_state(self, state: ScheduleState) -> None:
        old = self._schedules.get(state.schedule_id)
        last = state.last_fire_at
        if (
            old is not None
            and old.last_fire_at is not None
            and (last is None or last < old.last_fire_at)
        ):
            last = old.last_fire_at
        self._schedules[state.schedule_id] = ScheduleState(state.schedule_id, last, state.paused)
