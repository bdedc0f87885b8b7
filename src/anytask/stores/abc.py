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
  the outcome's token; an outcome from a worker that lost its lease is refused.
* :meth:`heartbeat` extends, in one statement, the leases of every record ``owner`` runs.
* :meth:`recover` ends the leases that expired: such records go back to ``pending`` when
  ``requeue_on_interrupt`` is set and become ``interrupted`` otherwise. Live leases are
  never touched.
* Listing is paged by the store, newest first (highest ``seq`` first).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from .._models import Outcome, Page, ScheduleState, TaskQuery, TaskRecord, TaskStatus

__all__ = ["HeartbeatResult", "RecoveryResult", "Store"]


@dataclass
class HeartbeatResult:
    held: set[str] = field(default_factory=set)  # ids whose lease was extended
    cancel_requested: set[str] = field(default_factory=set)  # of those, the ones to cancel


@dataclass
class RecoveryResult:
    requeued: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)


class Store(ABC):
    #: True when other processes may change the data (the runtime then polls for work
    #: it was not told about); False for a store private to this process.
    shared: bool = True

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

    async def fetch_many(self, task_ids: Sequence[str]) -> list[TaskRecord]:
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

    @abstractmethod
    async def next_run_after(self) -> datetime | None:
        """The earliest ``run_after`` among pending records, or None when none is pending."""

    # -- writes --------------------------------------------------------------------------
    @abstractmethod
    async def insert(self, records: Sequence[TaskRecord]) -> list[bool]:
        """Insert new records in one transaction; False where a conflict kept one out."""

    @abstractmethod
    async def claim(
        self, owner: str, limit: int, now: datetime, lease_until: datetime
    ) -> list[TaskRecord]:
        """Atomically take up to ``limit`` due pending records for ``owner``."""

    @abstractmethod
    async def complete(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Apply fenced outcomes in one transaction; False where the token did not match."""

    @abstractmethod
    async def heartbeat(self, owner: str, lease_until: datetime) -> HeartbeatResult:
        """Extend the leases of every running record held by ``owner``."""

    @abstractmethod
    async def recover(self, now: datetime) -> RecoveryResult:
        """Requeue or interrupt running records whose lease expired before ``now``."""

    @abstractmethod
    async def cancel(self, task_id: str, now: datetime) -> TaskStatus | None:
        """Cancel a task: a pending one becomes ``cancelled`` at once; a running one gets
        ``cancel_requested`` (its owner cancels it at the next heartbeat). Returns the
        status after the call, or None when there is no such task."""

    @abstractmethod
    async def interrupt_pending(self, created_before: datetime, now: datetime) -> int:
        """Mark pending records created before the given time ``interrupted``."""

    @abstractmethod
    async def purge(self, ended_before: datetime) -> int:
        """Delete terminal records that ended before the given time. Returns how many."""

    # -- schedules -----------------------------------------------------------------------
    @abstractmethod
    async def schedule_states(self) -> dict[str, ScheduleState]:
        """The persisted state of every schedule."""

    @abstractmethod
    async def save_schedule_state(self, state: ScheduleState) -> None:
        """Insert or update a schedule's state. ``last_fire_at`` never moves backwards."""
