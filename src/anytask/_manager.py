"""TaskManager: the public face of anytask.

One manager owns one task group (see :meth:`TaskManager.run`) that holds, and never
outlives:

* the *writer*, which group-commits enqueued tasks and attempt outcomes to the store and,
  in the same transaction (:meth:`Store.write_batch`), claims due tasks for the slots
  that are free;
* the *dispatcher*, which claims due tasks when the writer has nothing to commit (and
  waits for delayed ones). One claim is in flight at a time, and it never takes more
  records than there are free slots in the ``max_concurrency`` limiter, so a task waiting
  for a slot stays ``pending``;
* ``max_concurrency`` *workers*, one slot each. A worker takes claimed records from a
  backlog (or, with an in-process store, claims the next one itself the moment it is
  free) and runs attempts back to back inside one cancel scope, which cancelling an
  attempt cancels and the worker then replaces: cancelling one attempt never touches
  another, and no scope is entered per attempt (that costs more than a no-op task). A
  worker yields to the event loop at least every ``_YIELD_EVERY`` seconds. A timeout is
  a ``fail_after`` around the one attempt;
* the *heartbeat*, which extends all of this instance's leases in one statement, picks up
  cancel requests from other instances and recovers tasks whose owner died;
* the *scheduler* for interval and cron schedules, when any are defined.
"""

from __future__ import annotations

import atexit
import builtins  # TaskManager.list shadows the builtin inside the class body
import enum
import inspect
import logging
import math
import random
import threading
import time
import traceback as tb_module
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

import anyio
from anyio.abc import TaskStatus as AnyioTaskStatus

from ._clock import Clock, LoopClock, SystemClock, from_ts, loop_clock_is_virtual, to_ts
from ._codec import check_json, clean_text, cloned, detached, json_size
from ._context import _Active, _current
from ._errors import (
    ConfigurationError,
    ManagerStateError,
    PayloadError,
    StoreError,
    TaskNotFound,
    TaskStateError,
)
from ._events import EventHub, TaskEvent
from ._ids import new_task_id
from ._models import (
    DEAD,
    MAX_WAIT,
    NO_ITEMS,
    Metrics,
    Outcome,
    Page,
    TaskOptions,
    TaskQuery,
    TaskRecord,
    TaskStatus,
    check_aware,
    check_priority,
    check_tags,
)
from ._registry import Registry, TaskDefinition
from ._threads import call_soon_in_loop, run_in_daemon_thread
from .stores.abc import Store
from .stores.memory import MemoryStore

if TYPE_CHECKING:
    from .schedule import MisfirePolicy, OverlapPolicy, ScheduleInfo

__all__ = ["RunState", "TaskAdder", "TaskManager"]

log = logging.getLogger("anytask")
#: task failures, apart from the runtime's own messages (to route or silence them alone)
failure_log = logging.getLogger("anytask.tasks")

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

#: Options of ``add_task``/``enqueue`` that are not passed to the task function.
RESERVED_KWARGS = frozenset({"priority", "delay", "run_at", "tags", "idempotency_key"})
_KEY_NAMESPACE = uuid.UUID("6f1e0c1a-5b7e-4d35-9a7c-2f0b8a6d4e11")
_NEVER = math.inf
_PENDING = TaskStatus.PENDING
_SUCCESS = TaskStatus.SUCCESS
#: Most records the writer inserts in one transaction: a huge ``add_task`` burst is
#: committed in slices, so claims and outcomes are not held up behind it.
INSERT_BATCH = 2000
#: Two creation times this close are taken as one record's, where a store did not say
#: whether an insert was a no-op (see _take_back; a store keeping times as float seconds
#: may round them by a microsecond).
_SAME_TIME = timedelta(microseconds=1)
#: Keyed and replay records whose insert the store answered, remembered for a take-back
#: (see TaskManager._insert_verdicts); the oldest are forgotten past this.
_VERDICTS_KEPT = 2_000
#: Rows a retention pass deletes per transaction.
PURGE_BATCH = 500
#: The ended statuses ``retention`` applies to (``dead_retention`` applies to the dead ones).
_KEPT_STATUSES = frozenset({TaskStatus.SUCCESS, TaskStatus.CANCELLED})

# Managers that hold tasks queued with add_task while they were not running (or that their
# store refused at a teardown), until their next start. If the process ends first, those
# tasks are lost, and the exit says so instead of losing them silently. (A manager that is
# garbage-collected with such tasks would lose them without a word, so it is held here.)
_queued_while_idle: set[TaskManager] = set()
_queued_while_idle_lock = threading.Lock()


def _warn_never_committed() -> None:
    with _queued_while_idle_lock:
        managers = list(_queued_while_idle)
        _queued_while_idle.clear()
    for tm in managers:
        with tm._lock:
            lost = [rec.id for rec in tm._inserts if id(rec) not in tm._withdrawn]
        if tm._outcomes:
            log.warning(
                "anytask: the outcomes of %d attempt(s) were never written to the store: its "
                "store refused them as the task manager stopped, and it did not run again "
                "(their tasks stay running until their leases run out; ids: %s)",
                len(tm._outcomes),
                ", ".join(out.id for out, _ in tm._outcomes[:5]),
            )
        if lost:
            shown = ", ".join(lost[:5]) + (", ..." if len(lost) > 5 else "")
            log.warning(
                "anytask: %d task(s) queued with add_task() were never written to the store "
                "and are lost: the task manager was not running when they were queued (or "
                "its store refused them as it stopped) and did not run again (ids: %s). "
                "Queue tasks while it runs (inside `async with tm:`), or start it afterwards.",
                len(lost),
                shown,
            )


atexit.register(_warn_never_committed)


async def purge_in_batches(
    store: Store, before: datetime, statuses: frozenset[TaskStatus], limit: int | None
) -> int:
    """``store.purge`` in transactions of at most ``limit`` rows (one when None), until
    nothing older is left; other writes get in between. Returns how many went."""
    total = 0
    while True:
        n = await store.purge(before, statuses=statuses, limit=limit)
        total += n
        if limit is None or n < limit:
            return total
        await anyio.lowlevel.checkpoint()


def _check_timeout(timeout: float | None) -> None:
    """``wait``/``join``'s timeout: None or a number of seconds (not NaN; a negative one
    waits not at all)."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout != timeout:
        raise ConfigurationError(f"timeout must be a number of seconds or None, got {timeout!r}")


def _derived_id(rec: TaskRecord) -> bool:
    """Whether ``rec``'s id is derived (from an idempotency key, or from the task it
    replays), so that the store may already hold another caller's task under it."""
    return rec.idempotency_key is not None or rec.replay_of is not None


async def _at_teardown(call: Callable[[], Awaitable[T]], seconds: float = 5.0) -> T:
    """``await call()`` as a teardown writes: shielded from the cancellation that may be
    tearing the manager down, and given up after ``seconds`` (``TimeoutError``)."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(seconds):
        return await call()
    raise TimeoutError(f"the store did not answer within {seconds:g} s")


def _age(option: str, value: float | timedelta | None) -> float | None:
    """A retention period in seconds (None: keep forever)."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    else:
        raise ConfigurationError(f"{option} must be seconds, a timedelta or None, got {value!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigurationError(f"{option} must be a positive duration, got {value!r}")
    return seconds


class RunState(enum.Enum):
    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


# read on every enqueue and claim: a module global is read in a few nanoseconds, an enum
# member through its class in about fifty (Python 3.11)
_RUNNING = RunState.RUNNING

_NOT_REGISTERED = "TaskNotRegistered"


class QueuedHere:
    """What one caller (the FastAPI middleware, per request) queued for the group commit
    while it was open: its records, and the commit mark that covers them all. Code the
    request started and that outlives it (a task group of the app's) keeps the context,
    so nothing is added once the caller closes it.

    With ``hold``, what ``add_task`` queues is held here (``held``) instead, until the
    caller releases it (:meth:`TaskManager._release_held`): a request's tasks start after
    its route has returned, as Starlette's background tasks do, not while it still runs
    (a task reading what the route writes would not find it yet).

    It belongs to ``manager`` (None: to any): another manager's ``add_task`` in the same
    request must not put its records here, to be released into this manager's buffer and
    store. ``outer`` is the one that was current before (an app with a ``TaskAdmin``
    mounted in another one: one per manager)."""

    __slots__ = ("held", "is_open", "manager", "mark", "outer", "records")

    def __init__(
        self,
        hold: bool = False,
        manager: TaskManager | None = None,
        outer: QueuedHere | None = None,
    ) -> None:
        self.is_open = True
        self.records: list[TaskRecord] = []
        self.mark = 0
        self.held: list[TaskRecord] | None = [] if hold else None
        self.manager = manager
        self.outer = outer


_queued_here: ContextVar[QueuedHere | None] = ContextVar("anytask_queued_here", default=None)


def _queued_for(manager: TaskManager) -> QueuedHere | None:
    """The current caller's :class:`QueuedHere` for ``manager``, if any."""
    queued = _queued_here.get()
    while queued is not None and queued.manager is not None and queued.manager is not manager:
        queued = queued.outer
    return queued


def _made_after(replay: TaskRecord, original: TaskRecord) -> bool:
    """Whether ``replay`` was stored after ``original`` (so that it replays this task, not
    an earlier one with the same id, deleted since). The store's ``seq`` (its insertion
    order) tells, whatever the clocks said: a wall clock that stepped back, or another
    instance's clock behind this one, would date a replay before its task. Creation times
    decide only when a store did not say."""
    if replay.seq and original.seq:
        return replay.seq > original.seq
    return replay.created_at >= original.created_at


def key_task_id(idempotency_key: str) -> str:
    """Tasks with an idempotency key get an id derived from it, so that the synchronous
    ``add_task`` can return the id of the first task enqueued with that key."""
    return str(uuid.uuid5(_KEY_NAMESPACE, "key:" + idempotency_key))


def replay_task_id(original_id: str, generation: int = 1) -> str:
    """The id of the replay of task ``original_id``: derived from it, so that a dead task
    is replayed at most once, by any number of callers at the same time (the second
    insert of that id is refused by the store, on every store and across processes). A
    replay that ended cancelled lets the task be replayed again: the next replay is the
    next ``generation``, with an id of its own."""
    name = f"replay:{original_id}" if generation == 1 else f"replay#{generation}:{original_id}"
    return str(uuid.uuid5(_KEY_NAMESPACE, name))


def _safe_str(exc: BaseException) -> str:
    try:
        return clean_text(str(exc))
    except BaseException:  # only text for the record: whatever str() raises stays here
        return f"<{type(exc).__name__} whose str() raised>"


def _safe_traceback(exc: BaseException) -> str:
    try:
        text = "".join(tb_module.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException:
        lines = tb_module.format_tb(exc.__traceback__)
        text = "".join(lines) + f"{type(exc).__qualname__}: {_safe_str(exc)}\n"
    return clean_text(text)


def _cut(text: str, budget: int) -> str:
    """``text`` when its UTF-8 takes at most ``budget`` bytes, else its start and a note
    of how much was left out (an error message or traceback the store cannot hold)."""
    if 4 * len(text) <= budget:
        return text
    data = text.encode("utf-8")
    if len(data) <= budget:
        return text
    kept = data[: max(budget - 200, 0)].decode("utf-8", "ignore")
    return f"{kept}\n[{len(text) - len(kept):,} more characters not stored]"


def _fit_logs(logs: list[dict[str, Any]], budget: int, now: float) -> list[dict[str, Any]]:
    """``logs`` when their JSON takes at most ``budget`` bytes, else the lines that fit
    (in order) and one saying how many did not."""
    if check_json(logs, "the logs") <= budget:
        return logs
    room = budget - 200
    kept: list[dict[str, Any]] = []
    for line in logs:
        size = json_size(line) + 1
        if size <= room:
            kept.append(line)
            room -= size
    if len(kept) == len(logs):
        return logs
    left = len(logs) - len(kept)
    dropped = f"{left} log lines not stored: the logs take more than {budget:,} bytes"
    kept.append({"ts": now, "level": "warning", "msg": dropped})
    return kept


class _InterruptInThread(Exception):
    """A ``KeyboardInterrupt`` that a sync task raised in its worker thread, carried to
    the event loop as a task error (a real Ctrl-C reaches the main thread only)."""

    def __init__(self, error: KeyboardInterrupt) -> None:
        super().__init__()
        self.error = error


class _Signal:
    """A reusable wake-up for one waiting task."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float = _NEVER) -> None:
        if not self._event.is_set():
            if timeout == _NEVER:  # no cancel scope to enter (the writer waits like this)
                await self._event.wait()
            else:
                with anyio.move_on_after(timeout):
                    await self._event.wait()
        self._event = anyio.Event()


class TaskAdder:
    """What ``Depends(tm.get_tasks)`` injects: ``add_task(fn, *args, **kwargs) -> id``,
    with the options of :meth:`TaskManager.add_task`. ``ids`` lists what it added."""

    __slots__ = ("ids", "manager")

    def __init__(self, manager: TaskManager) -> None:
        self.manager = manager
        self.ids: list[str] = []

    def add_task(self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> str:
        task_id = self.manager.add_task(fn, *args, **kwargs)
        self.ids.append(task_id)
        return task_id


class _Slot:
    """One worker. While it runs an attempt, ``record`` is that attempt's record and the
    slot is in ``TaskManager._active`` under the task id; ``scope`` is the worker's cancel
    scope, which it renews after every cancellation (one scope per run of attempts, not
    one per attempt: entering a scope costs more than a no-op task)."""

    __slots__ = ("active", "event", "reason", "record", "scope")

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.record: TaskRecord | None = None
        self.active: _Active | None = None
        self.reason: str | None = None  # "cancel", "lease" or "shutdown" once cancelled
        self.event: anyio.Event | None = None  # set to wake the worker while it is idle

    def cancel(self, reason: str) -> None:
        """Cancel the attempt running in this slot (a no-op if one was already asked)."""
        if self.reason is None:
            self.reason = reason
            self.scope.cancel()


#: Workers running attempts back to back yield to the event loop about this often between
#: them (seconds; each takes its share of it), even when the tasks never wait for
#: anything, so the rest of the program is held up for about this long at a time.
_YIELD_EVERY = 0.001


class TaskManager:
    """Durable background tasks for one app (or many instances sharing one store).

    ``TaskManager(snapshot_db="tasks.db")`` keeps tasks in a SQLite file;
    ``TaskManager(store=...)`` takes any store (``MemoryStore()`` for tests).
    With neither, tasks live in memory.
    """

    def __init__(
        self,
        snapshot_db: str | None = None,
        *,
        store: Store | None = None,
        max_concurrency: int = 16,
        requeue_pending: bool = True,
        shutdown_grace: float = 10.0,
        lease: float = 30.0,
        poll_interval: float = 0.5,
        clock: Clock | None = None,
        instance_id: str | None = None,
        unregistered_grace: float = 300.0,
        retention: float | timedelta | None = None,
        dead_retention: float | timedelta | None = None,
    ) -> None:
        if snapshot_db is not None and store is not None:
            raise ConfigurationError("pass snapshot_db or store, not both")
        # (else a wrong object fails only at start, with an AttributeError of its own)
        if store is not None and not isinstance(store, Store):
            raise ConfigurationError(
                f"store must be a Store (MemoryStore(), SQLiteStore(path), ...), got {store!r}"
            )
        if clock is not None and not isinstance(clock, Clock):
            raise ConfigurationError(
                f"clock must be a Clock (SystemClock(), LoopClock(), ...), got {clock!r}"
            )
        if instance_id is not None and (not isinstance(instance_id, str) or not instance_id):
            raise ConfigurationError(f"instance_id must be a non-empty str, got {instance_id!r}")
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise ConfigurationError(f"max_concurrency must be an int, got {max_concurrency!r}")
        if max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency must be >= 1, got {max_concurrency}")
        for option, value in (
            ("shutdown_grace", shutdown_grace),
            ("lease", lease),
            ("poll_interval", poll_interval),
            ("unregistered_grace", unregistered_grace),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigurationError(f"{option} must be a number, got {value!r}")
            zero_ok = option in ("shutdown_grace", "unregistered_grace")
            if not math.isfinite(value) or value < 0 or (not zero_ok and value == 0):
                raise ConfigurationError(f"{option} must be a positive number, got {value!r}")
        if not isinstance(requeue_pending, bool):
            raise ConfigurationError(f"requeue_pending must be a bool, got {requeue_pending!r}")
        self.retention = _age("retention", retention)
        self.dead_retention = _age("dead_retention", dead_retention)
        if store is None:
            if snapshot_db is not None:
                from .stores.sqlite import SQLiteStore

                store = SQLiteStore(snapshot_db)
            else:
                store = MemoryStore()
        self._store = store
        self.max_concurrency = max_concurrency
        self.requeue_pending = requeue_pending
        self.shutdown_grace = float(shutdown_grace)
        self.lease = float(lease)
        self.poll_interval = float(poll_interval)
        self.unregistered_grace = float(unregistered_grace)
        self._unknown_names: set[str] = set()  # warned about (see _not_registered)
        # name -> (when looked, latest end of a run of it by anyone): see _ran_elsewhere
        self._ran_checked: dict[str, tuple[float, float]] = {}
        # the default clock, and the LoopClock it becomes under a virtual clock (see
        # _pick_clock); a clock passed here, or assigned to tm.clock, is kept as it is
        self._system_clock = SystemClock()
        self._virtual_clock: LoopClock | None = None
        self.clock: Clock = clock or self._system_clock
        # a clock of its own (not the system's): task_log stamps lines by it (see _Active)
        self._own_clock = type(self.clock) is not SystemClock
        self._fixed_instance_id = instance_id
        self.instance_id = instance_id or uuid.uuid4().hex
        self.registry = Registry(durable=store.shared)
        self.events = EventHub()
        self._schedules: dict[str, Any] = {}
        self._state = RunState.IDLE
        self._lock = threading.Lock()
        # enqueue buffer (appended from any thread under _lock)
        self._inserts: list[TaskRecord] = []
        self._withdrawn: set[int] = set()  # id() of buffered records not to write
        # id() of buffered records the writer must commit in the same transaction as the
        # record after them: one enqueue_many, or one request's add_task burst, is
        # committed whole or not at all (a part committed and claimed would run although
        # its caller is told that none of it was accepted)
        self._with_next: set[int] = set()
        self._batch_writing: list[TaskRecord] = []  # taken from _inserts, being written
        # id() of keyed and replay records (whose id is derived) -> (the record, whether the
        # store inserted it or already held a task under its id): what _take_back goes by.
        # The record is held, so that its id() is not reused while it is remembered.
        self._insert_verdicts: dict[int, tuple[TaskRecord, bool]] = {}
        # id() of records whose verdict a caller is waiting for (replay_many): kept past
        # _VERDICTS_KEPT until that caller has read it (a bulk replay larger than the cap,
        # or other keyed inserts committed meanwhile, would push it out, and the creation
        # times it falls back on cannot tell two replays made in one tick apart)
        self._verdicts_wanted: set[int] = set()
        self._submitted = 0
        self._committed = 0
        self._outcomes: list[tuple[Outcome, TaskRecord]] = []
        # wait() calls in progress per task id: the last one to leave drops the task's
        # entry in _waiters (else every wait() on a task that had ended already, or that
        # timed out, left its event there for good)
        self._waiting: dict[str, int] = {}
        self._host_tg: anyio.abc.TaskGroup | None = None
        self._reset_runtime()

    def _reset_runtime(self) -> None:
        self._active: dict[str, _Slot] = {}  # task id -> the slot running it
        self._waiters: dict[str, anyio.Event] = {}
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._loop_thread: int | None = None
        self._writer_wake: _Signal | None = None
        self._spread: _Signal | None = None
        self._skip_claim = False  # see _claimed_done
        self._in_series = 0  # workers inside _run_series (they share the yield interval)
        # workers of _run_series suspended between two attempts (at the yield), and
        # whether the spreader is due to look again (see _enqueued_here)
        self._between = 0
        self._spread_armed = False
        self._dispatch_wake: _Signal | None = None
        self._committed_signal: anyio.Event | None = None
        self._changed: anyio.Event | None = None
        self._stop: anyio.Event | None = None
        self._thread_limiter: anyio.CapacityLimiter | None = None
        self._dispatcher_done: anyio.Event | None = None
        self._cutting = False  # shutdown grace is over: attempts are cancelled on sight
        self._claimed: set[str] = set()  # claimed here, not started by a worker yet
        self._cancel_soon: set[str] = set()  # of those, the ones cancelled meanwhile
        self._outer_tg: anyio.abc.TaskGroup | None = None
        self._write_error: BaseException | None = None
        self._writer_alive = False  # the writer task runs (a cancellation may end it early)
        self._writing = False
        # the outcomes of the write in flight (handed to the store, not committed yet)
        self._outs_writing: builtins.list[tuple[Outcome, TaskRecord]] = []
        self._write_failing = False  # the last write failed: the dispatcher claims alone
        # a claim is in flight (the dispatcher's or the writer's): only one at a time, so
        # that together they never take more records than there are free slots
        self._claiming = False
        # records claimed for this manager whose attempt has not ended (handed to the
        # workers or running): the slots in use, never more than max_concurrency
        self._occupied = 0
        self._workers_alive = 0  # worker tasks spawned and not ended (see _wait_unoccupied)
        # torn down by a cancellation (seen as the stop begins, or by a worker ended by
        # one, also when a stop had begun before): see _wait_unoccupied
        self._torn_down = False
        # slots kept by sync calls abandoned while their thread runs on (see _hold_slot),
        # and what identifies this run to their release
        self._stray = 0
        self._run_id = object()
        self._backlog: deque[TaskRecord] = deque()  # claimed, waiting for a worker
        self._idle: builtins.list[_Slot] = []  # workers waiting for work
        self._workers_open = False  # workers take work (False: they exit once idle)
        # an in-process store that workers claim from and complete in directly
        self._inline_store: MemoryStore | None = None
        self._lease_delta = timedelta(seconds=self.lease)
        self._detach_args = False  # see _attempt

    # ------------------------------------------------------------------ definitions
    @property
    def store(self) -> Store:
        return self._store

    @property
    def state(self) -> RunState:
        return self._state

    @overload
    def task(self, fn: F, /) -> F: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        retries: int = 0,
        delay: float = 0.0,
        backoff: float = 1.0,
        max_delay: float | None = None,
        jitter: float = 0.0,
        timeout: float | None = None,
        priority: int = 0,
        requeue_on_interrupt: bool = False,
        tags: Iterable[str] = (),
    ) -> Callable[[F], F]: ...

    def task(
        self,
        fn: F | None = None,
        /,
        *,
        name: str | None = None,
        retries: int = 0,
        delay: float = 0.0,
        backoff: float = 1.0,
        max_delay: float | None = None,
        jitter: float = 0.0,
        timeout: float | None = None,
        priority: int = 0,
        requeue_on_interrupt: bool = False,
        tags: Iterable[str] = (),
    ) -> F | Callable[[F], F]:
        """Register a task function (async or sync) with its options.

        Returns the function unchanged, so it can still be called directly.
        """
        options = TaskOptions(
            retries=retries,
            delay=delay,
            backoff=backoff,
            max_delay=max_delay,
            jitter=jitter,
            timeout=timeout,
            priority=priority,
            requeue_on_interrupt=requeue_on_interrupt,
            tags=tuple(check_tags(tags)),
        )

        def register(func: F) -> F:
            self.registry.define(func, options, name, explicit=True)
            return func

        return register(fn) if fn is not None else register

    # ------------------------------------------------------------------ schedules
    def schedule(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        every: float | timedelta | None = None,
        cron: str | None = None,
        timezone: str | None = None,
        id: str | None = None,
        name: str | None = None,
        start_at: datetime | None = None,
        jitter: float | timedelta = 0.0,
        run_on_start: bool = False,
        misfire: MisfirePolicy | str = "run_once",
        misfire_grace: float | timedelta = 1.0,
        misfire_window: float | timedelta | None = None,
        max_catch_up: int = 100,
        overlap: OverlapPolicy | str = "skip",
        retries: int = 0,
        delay: float = 0.0,
        backoff: float = 1.0,
        max_delay: float | None = None,
        retry_jitter: float = 0.0,
        timeout: float | None = None,
        priority: int = 0,
        requeue_on_interrupt: bool = False,
        tags: Iterable[str] = (),
    ) -> Callable[[F], F]:
        """Run the decorated function (async or sync) on an interval (``every=`` seconds or
        timedelta) or a cron expression (``cron=``, in ``timezone``, default UTC). See
        :mod:`anytask.schedule` for the options. Returns the function unchanged."""
        from .schedule._definition import define_schedule

        if fn is not None:
            raise ConfigurationError(
                "@tm.schedule needs arguments: @tm.schedule(every=...) or @tm.schedule(cron=...)"
            )
        task_options = TaskOptions(
            retries=retries,
            delay=delay,
            backoff=backoff,
            max_delay=max_delay,
            jitter=retry_jitter,
            timeout=timeout,
            priority=priority,
            requeue_on_interrupt=requeue_on_interrupt,
            tags=tuple(check_tags(tags)),
        )
        return define_schedule(
            self,
            schedule_id=id,
            name=name,
            task_options=task_options,
            every=every,
            cron=cron,
            timezone=timezone,
            start_at=start_at,
            jitter=jitter,
            run_on_start=run_on_start,
            misfire=misfire,
            misfire_grace=misfire_grace,
            misfire_window=misfire_window,
            max_catch_up=max_catch_up,
            overlap=overlap,
        )

    async def schedules(self) -> list[ScheduleInfo]:
        """Every schedule defined here, with its paused flag, last fire and outcome, and
        next fire time."""
        from .schedule._runner import list_schedules

        return await list_schedules(self)

    async def pause_schedule(self, schedule_id: str) -> None:
        """Stop firing a schedule (on every instance sharing the store) until resumed."""
        from .schedule._runner import pause_schedule

        await pause_schedule(self, schedule_id)

    async def resume_schedule(self, schedule_id: str) -> None:
        """Fire a paused schedule again from its next fire time."""
        from .schedule._runner import resume_schedule

        await resume_schedule(self, schedule_id)

    async def trigger_schedule(self, schedule_id: str) -> str:
        """Run a schedule's task now, as one of its fires; returns the task id."""
        from .schedule._runner import trigger_schedule

        return await trigger_schedule(self, schedule_id)

    # ------------------------------------------------------------------ enqueue
    def _build(
        self, fn: Callable[..., Any] | str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> TaskRecord:
        if not kwargs or RESERVED_KWARGS.isdisjoint(kwargs):
            return self._build_plain(fn, args, kwargs)
        return self._build_with_options(fn, args, kwargs)

    def _build_plain(
        self, fn: Callable[..., Any] | str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> TaskRecord:
        """The common case, kept short: a record with no per-call options."""
        defn = self.registry.lookup_fn(id(fn))
        if defn is None or defn.fn is not fn:
            defn = self.registry.resolve(fn)
        if args or kwargs:
            self._check_args(defn.name, args, kwargs, (), None)
        priority, tags, max_attempts, timeout, requeue = defn.record_defaults
        created = self.clock.now()
        # the arguments are copied where they nest (detached): a group commit encodes
        # them later, and the caller may change its lists and dicts meanwhile
        # positional, in field order: id, name, args, kwargs, created_at, run_after,
        # status, priority, tags, idempotency_key, started_at, ended_at, attempts,
        # max_attempts, timeout, requeue_on_interrupt, error, error_type, traceback,
        # result, logs
        return TaskRecord(
            new_task_id(),
            defn.name,
            detached(list(args)) if args else NO_ITEMS,
            detached(kwargs) if kwargs else kwargs,
            created,
            created,
            _PENDING,
            priority,
            tags,
            None,
            None,
            None,
            0,
            max_attempts,
            timeout,
            requeue,
            None,
            None,
            None,
            None,
            NO_ITEMS,
        )

    def _build_with_options(
        self, fn: Callable[..., Any] | str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> TaskRecord:
        priority = kwargs.pop("priority", None)
        delay = kwargs.pop("delay", None)
        run_at = kwargs.pop("run_at", None)
        tags = kwargs.pop("tags", None)
        key = kwargs.pop("idempotency_key", None)
        defn = self.registry.resolve(fn)
        opts = defn.options
        now = self.clock.time()
        if delay is not None and run_at is not None:
            raise ConfigurationError("pass delay or run_at, not both")
        if delay is not None:
            if isinstance(delay, timedelta):
                delay = delay.total_seconds()
            if isinstance(delay, bool) or not isinstance(delay, int | float):
                raise ConfigurationError(f"delay must be a number of seconds, got {delay!r}")
            try:
                math.isfinite(delay)
            except OverflowError:  # an int past the float range
                bits = int(delay).bit_length()
                raise ConfigurationError(
                    f"delay must be a finite number >= 0, got an int of {bits} bits"
                ) from None
            if not math.isfinite(delay) or delay < 0:
                raise ConfigurationError(f"delay must be a finite number >= 0, got {delay!r}")
            if delay > MAX_WAIT * 10:
                raise ConfigurationError(
                    f"delay must be at most {MAX_WAIT * 10:.0f} seconds (ten years), got {delay!r}"
                )
            run_ts = now + delay
        elif run_at is not None:
            check_aware("run_at", run_at)
            try:
                run_ts = max(to_ts(run_at), now)
                from_ts(run_ts)  # (one that ends past year 9999 in UTC cannot be stored)
            except (ValueError, OverflowError, OSError) as exc:
                raise ConfigurationError(f"run_at {run_at!r} is out of range: {exc}") from None
        else:
            run_ts = now
        prio = opts.priority if priority is None else check_priority(priority)
        tag_list = list(opts.tags)
        for tag in check_tags(tags):
            if tag not in tag_list:
                tag_list.append(tag)
        if key is not None and (not isinstance(key, str) or not key):
            raise ConfigurationError(f"idempotency_key must be a non-empty str, got {key!r}")
        self._check_args(defn.name, args, kwargs, tag_list, key)
        created = from_ts(now)
        return TaskRecord(
            id=key_task_id(key) if key is not None else new_task_id(),
            name=defn.name,
            args=detached(list(args)) if args else NO_ITEMS,
            kwargs=detached(kwargs),
            created_at=created,
            run_after=created if run_ts == now else from_ts(run_ts),
            priority=prio,
            tags=tag_list or NO_ITEMS,
            idempotency_key=key,
            max_attempts=opts.max_attempts,
            timeout=opts.timeout,
            requeue_on_interrupt=opts.requeue_on_interrupt,
            logs=NO_ITEMS,
        )

    def _check_args(
        self,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        tags: Sequence[str],
        key: str | None,
    ) -> None:
        """Refuse arguments that JSON would alter (:func:`check_json`), and arguments that
        (with the task's tags and idempotency key) take more than half of what the store
        holds in one record, the other half being for its outcome: stored, such a record
        would fail the group commit that holds it, and every other write with it, as long
        as it is retried. The size is first bounded cheaply, from the check's walk; only
        a bound past the limit measures the JSON."""
        size = len(args) + 1  # (the list's brackets and commas)
        for i, value in enumerate(args):
            size += check_json(value, f"argument {i} of {name}")
        for k, value in kwargs.items():
            where = f"argument {k!r} of {name}"
            # the name is stored too (a ** call takes any str): its size, its quotes, a
            # colon and a comma count, and text UTF-8 cannot encode is refused
            size += check_json(k, where) + check_json(value, where) + 2
        if key is not None:
            size += check_json(key, "idempotency_key")
        limit = self._store.max_record_bytes
        if limit is None or size + 6 * sum(map(len, tags)) <= limit // 2:
            return
        sizes = {f"argument {i}": json_size(value) for i, value in enumerate(args)}
        sizes.update((f"argument {k!r}", json_size({k: value})) for k, value in kwargs.items())
        sizes["tags"] = json_size(list(tags))
        sizes["idempotency_key"] = json_size(key)
        # what the row holds: the JSON of the list and the dict, with their brackets,
        # commas and the names of the keyword arguments (not only each value's)
        total = json_size(list(args)) + json_size(kwargs) + sizes["tags"]
        total += sizes["idempotency_key"]
        if total <= limit // 2:
            return
        biggest = max(sizes, key=sizes.__getitem__)
        raise PayloadError(
            f"the arguments of {name} take {total:,} bytes as JSON ({biggest}: "
            f"{sizes[biggest]:,}), more than the store takes for the arguments of one task "
            f"({limit // 2:,} bytes, half of its max_record_bytes)"
        )

    def _submit(self, records: list[TaskRecord], queued: QueuedHere | None = None) -> int:
        """Buffer records for the next group commit; returns the submission mark. They
        count as the current caller's (a request's), or as ``queued``'s when given: its
        response may start from code whose context is another's (an outer app's).

        With an in-process store, on the event loop thread of a running manager, and with
        nothing buffered before them (so that FIFO order holds), the records go into the
        store at once instead: there is no commit to wait for (the mark is 0)."""
        store = self._inline_store
        if (
            store is not None
            and not self._inserts
            and self._state is _RUNNING
            and threading.get_ident() == self._loop_thread
        ):
            inserted = store.insert_now(records, owned=True)
            delayed = False
            hub = self.events.active
            for rec, ok in zip(records, inserted, strict=True):
                if rec.run_after > rec.created_at:
                    delayed = True
                if hub and ok:
                    self._publish("enqueued", rec, rec.status)
            if delayed:
                self._wake_dispatcher()  # it sleeps until the earliest run_after
            self._enqueued_here(len(records))
            return 0
        if queued is None:
            queued = _queued_here.get()
            if queued is not None:  # (in a request: a function call only there)
                queued = _queued_for(self)
        if queued is not None and not queued.is_open:
            queued = None
        with self._lock:
            inserts = self._inserts
            last = inserts[-1] if inserts else None
            if queued is not None and queued.records and last is queued.records[-1]:
                self._with_next.add(id(last))  # the same request's burst goes on
            if len(records) > 1:
                self._with_next.update(id(rec) for rec in records[:-1])
            inserts.extend(records)
            self._submitted += len(records)
            mark = self._submitted
            idle = self._state is RunState.IDLE
        if idle:
            with _queued_while_idle_lock:
                _queued_while_idle.add(self)
        if queued is not None:
            queued.records.extend(records)
            queued.mark = mark
        self._wake_writer()
        return mark

    async def _withdraw(self, records: Sequence[TaskRecord]) -> list[TaskRecord]:
        """Withdraw queued records whose caller is told they were not accepted: the writer
        skips those still waiting for the group commit. They keep their place in the
        buffer, so that the positions commit marks count stay right. A write in flight
        that holds some of them is waited for (at most 10 s) first. Returns the records
        that were committed all the same (or may have been: a write still in flight)."""
        ids = {id(rec) for rec in records}
        with anyio.move_on_after(10):
            while ids & {id(rec) for rec in self._batch_writing}:
                await self._wait_changed(0.02)
        with self._lock:
            waiting = {id(rec) for rec in self._inserts}
            self._withdrawn |= ids & waiting
        return [rec for rec in records if id(rec) not in waiting]

    def _wake_writer(self) -> None:
        wake = self._writer_wake
        if wake is None:
            return  # not started: committed when the manager starts
        token = self._token  # read once: the loop thread may reset it meanwhile
        if threading.get_ident() == self._loop_thread:
            wake.set()
        elif token is not None:
            # without waiting for the loop: a thread never blocks on it (if the loop is
            # gone, the next start commits the buffer)
            call_soon_in_loop(token, wake.set)

    def add_task(self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> str:
        """Queue ``fn(*args, **kwargs)`` and return its task id at once.

        The write is committed by the next group commit, milliseconds later (``await
        tm.flush()`` waits for it). During a request of a ``TaskAdmin`` app the task is
        held until the response starts, then committed before it (see :class:`QueuedHere`).
        Safe to call from the event loop thread and from worker threads. Keyword options
        ``priority``, ``delay`` (seconds or timedelta), ``run_at`` (aware datetime),
        ``tags`` and ``idempotency_key`` configure the task instead of being passed on.
        """
        store = self._inline_store
        queued = _queued_here.get()
        if queued is not None:  # (in a request: a function call only there)
            queued = _queued_for(self)
        if (
            store is not None
            and queued is None
            and (not kwargs or RESERVED_KWARGS.isdisjoint(kwargs))
            and not self._inserts
            and self._state is _RUNNING
            and threading.get_ident() == self._loop_thread
        ):
            # the hot path of _submit for one plain record (kwargs is our own dict)
            rec = self._build_plain(fn, args, kwargs)
            if store.put_now(rec):
                if self.events.active:
                    self._publish("enqueued", rec, rec.status)
                if self._idle and not self._spread_armed:  # (armed: it looks anyway)
                    self._enqueued_here(1)
            return rec.id
        rec = self._build(fn, args, dict(kwargs))
        if queued is not None and queued.held is not None:
            with self._lock:  # (a sync route's thread, while the loop may release)
                held = queued.held
                if held is not None and queued.is_open:
                    held.append(rec)
                    return rec.id
        self._submit([rec])
        return rec.id

    def _release_held(self, queued: QueuedHere | None = None, *, last: bool = False) -> int:
        """Queue for the group commit what ``queued`` (by default the current caller's: a
        request's) held back (see :class:`QueuedHere`): the route asks for one of its
        tasks (``flush``, ``get``, ``wait``, ``cancel``), which it then finds; what it adds
        after that is held again (its route still runs). With ``last``, hold nothing
        more: its response is about to start. Returns the submission mark (0: nothing
        to wait for)."""
        if queued is None:
            queued = _queued_for(self)
        if queued is None or queued.held is None:
            return 0
        with self._lock:
            records, queued.held = queued.held, None if last else []
        return self._submit(records, queued) if records else 0

    def _drop_held(self, queued: QueuedHere) -> int:
        """Forget what a request held back and never released (it failed before its
        response started: as with Starlette's background tasks, they do not run)."""
        with self._lock:
            records, queued.held = queued.held or [], None
        return len(records)

    async def enqueue(self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> str:
        """Queue ``fn(*args, **kwargs)``; when this returns, the task is in the store."""
        self._require_running("enqueue")
        rec = self._build(fn, args, dict(kwargs))
        await self._commit_or_withdraw([rec], self._submit([rec]))
        return rec.id

    async def enqueue_many(
        self, calls: Iterable[tuple[Callable[..., Any] | str, tuple[Any, ...], dict[str, Any]]]
    ) -> list[str]:
        """Queue many ``(fn, args, kwargs)`` calls in one commit; returns their ids."""
        self._require_running("enqueue_many")
        records = [self._build(fn, tuple(args), dict(kwargs)) for fn, args, kwargs in calls]
        await self._commit_or_withdraw(records, self._submit(records))
        return [r.id for r in records]

    async def _commit_or_withdraw(self, records: builtins.list[TaskRecord], mark: int) -> None:
        """Wait for the commit of ``records``. When it cannot come (the store keeps
        failing, the manager stopped first), they are withdrawn before the error is
        raised, so that an error means that none of them will run: not even when the
        store recovers or the manager starts again. Those a write in flight committed all
        the same are cancelled (or, all of them committed, there is no error)."""
        try:
            await self._wait_committed(mark)
        except (StoreError, ManagerStateError):
            with anyio.CancelScope(shield=True):
                if await self._take_back(records):
                    return
            raise

    async def _take_back(self, records: Sequence[TaskRecord]) -> bool:
        """Make sure that none of ``records`` runs, their caller having been told that
        they were not accepted: those still queued are withdrawn (:meth:`_withdraw`), and
        those a write committed all the same are cancelled. True when a write in flight
        committed them all after all (then they stand, and nothing is cancelled)."""
        committed = await self._withdraw(records)
        if len(committed) == len(records):
            return True
        # a derived id (an idempotency key, a replay) may name another caller's accepted
        # task, the insert of this one a no-op: that task must stand
        derived = [rec for rec in committed if _derived_id(rec)]
        try:
            refused = await self._refused_inserts(derived) if derived else set()
        except Exception:
            log.exception(
                "anytask: could not tell whether tasks %s were stored by another caller; "
                "not cancelled",
                ", ".join(rec.id for rec in derived),
            )
            refused = {id(rec) for rec in derived}
        for rec in committed:
            if id(rec) in refused:
                continue
            try:
                await self._cancel_stored(rec.id)  # (not cancel(): its flush would fail too)
            except Exception:
                log.exception("anytask: could not cancel task %s, not accepted", rec.id)
        return False

    def _remember_inserts(self, records: Sequence[TaskRecord], inserted: Sequence[bool]) -> None:
        """Remember what the store said of the keyed and replay records among ``records``
        (see _insert_verdicts); nothing when it did not say."""
        if len(inserted) != len(records):
            return
        verdicts = self._insert_verdicts
        for rec, ok in zip(records, inserted, strict=True):
            if _derived_id(rec):
                verdicts[id(rec)] = (rec, bool(ok))
        excess = len(verdicts) - _VERDICTS_KEPT
        if excess > 0:
            wanted = self._verdicts_wanted
            drop: list[int] = []
            for key in verdicts:  # the oldest first
                if len(drop) >= excess:
                    break
                if key not in wanted:
                    drop.append(key)
            for key in drop:
                del verdicts[key]

    async def flush(self) -> None:
        """Wait until every task queued so far (by any thread) is committed."""
        self._check_thread("flush")
        self._release_held()
        if self._outer_tg is None:
            if self._inserts:
                raise ManagerStateError("tasks are queued but the task manager is not running")
            return
        with self._lock:
            mark = self._submitted
        await self._wait_committed(mark)

    async def _wait_committed(self, mark: int) -> None:
        while self._committed < mark:
            if self._write_error is not None:
                raise StoreError(
                    f"writing to the store keeps failing: {self._write_error}"
                ) from self._write_error
            signal = self._committed_signal
            if signal is None:
                raise ManagerStateError("the task manager stopped before the commit")
            await signal.wait()

    # ------------------------------------------------------------------ queries
    def _check_thread(self, what: str) -> None:
        """Refuse an async call made from another thread than the event loop's the manager
        runs on: its waits would use that loop's events from another loop (on trio, setting
        one crashes the manager's writer; on asyncio they hang or fail in anyio)."""
        loop_thread = self._loop_thread
        if loop_thread is not None and threading.get_ident() != loop_thread:
            raise ManagerStateError(
                f"{what}() was called from another thread than the one whose event loop runs "
                "the task manager: await it on that event loop (from another thread, with "
                "anyio.from_thread.run and that loop's token); tm.add_task() and tm.stop() "
                "may be called from any thread"
            )

    def _require_running(self, what: str) -> None:
        self._check_thread(what)
        if self._state not in (RunState.RUNNING, RunState.STOPPING) or self._outer_tg is None:
            raise ManagerStateError(
                f"{what}() needs a running task manager: use 'async with tm:' or the "
                "TaskAdmin lifespan"
            )

    async def get(self, task_id: str) -> TaskRecord | None:
        self._check_thread("get")
        mark = self._release_held()
        if mark and self._outer_tg is not None:
            # the request's tasks, let go now, are in the store once committed (a route
            # that gets the task it just added finds it)
            await self._wait_committed(mark)
        return await self._store.fetch(task_id)

    async def list(
        self,
        query: TaskQuery | None = None,
        **filters: Any,
    ) -> Page:
        """One page of tasks, newest first. Pass a :class:`TaskQuery` or its fields."""
        self._check_thread("list")
        return await self._store.list(query if query is not None else TaskQuery(**filters))

    async def counts(self) -> dict[TaskStatus, int]:
        self._check_thread("counts")
        return await self._store.counts()

    async def metrics(
        self, *, since: datetime | None = None, until: datetime | None = None, buckets: int = 30
    ) -> Metrics:
        """Ended tasks per time bucket and run time percentiles per task name over
        ``[since, until)`` (default: the last hour), computed by the store."""
        self._check_thread("metrics")
        if isinstance(buckets, bool) or not isinstance(buckets, int) or not 1 <= buckets <= 1000:
            raise ConfigurationError(f"buckets must be an int in 1..1000, got {buckets!r}")
        check_aware("since", since)
        check_aware("until", until)
        until = until or self.clock.now()
        since = since or until - timedelta(hours=1)
        if since >= until:
            raise ConfigurationError(f"since ({since}) must be before until ({until})")
        return await self._store.metrics(since, until, buckets)

    async def get_tasks(self) -> TaskAdder:
        """For ``Depends(tm.get_tasks)`` in a route: an object whose ``add_task`` queues a
        task and returns its id (async, so FastAPI calls it without a worker thread)."""
        return TaskAdder(self)

    async def wait(self, task_id: str, *, timeout: float | None = None) -> TaskRecord:
        """Wait until the task reaches a terminal status and return its record. A task
        that has ended already is returned whatever the ``timeout`` (also 0): the timeout
        bounds the waiting between the looks at the store, not the looks."""
        self._check_thread("wait")
        _check_timeout(timeout)
        if self._outer_tg is not None:
            await self.flush()
        deadline = None if timeout is None else anyio.current_time() + timeout
        self._waiting[task_id] = self._waiting.get(task_id, 0) + 1
        try:
            return await self._wait_for(task_id, deadline)
        finally:
            left = self._waiting.pop(task_id, 1) - 1
            if left > 0:
                self._waiting[task_id] = left
            else:
                self._waiters.pop(task_id, None)

    async def _wait_for(self, task_id: str, deadline: float | None) -> TaskRecord:
        looked = False
        while True:
            event = self._waiters.get(task_id)
            if event is None:
                event = self._waiters[task_id] = anyio.Event()
            try:
                rec = await self._store.fetch(task_id)
            except StoreError:
                if self._outer_tg is None and not looked:  # not running, its store not open
                    raise ManagerStateError(
                        f"wait() cannot look up task {task_id}: the task manager is not "
                        "running and its store is not open"
                    ) from None
                if self._outer_tg is None:  # it stopped while we waited (and closed its store)
                    raise ManagerStateError(
                        f"the manager stopped while task {task_id} had not ended"
                    ) from None
                raise
            looked = True
            if rec is None:
                raise TaskNotFound(f"no task with id {task_id!r}")
            if rec.status.terminal:
                return rec
            if self._outer_tg is None:
                raise ManagerStateError(
                    f"task {task_id} is {rec.status.value} and the manager is not running"
                )
            pause = self.poll_interval if self._store.shared else 5.0
            if deadline is not None:
                left = deadline - anyio.current_time()
                if left <= 0:
                    raise TimeoutError(f"task {task_id} is still {rec.status.value}")
                pause = min(pause, left)
            with anyio.move_on_after(pause):
                await event.wait()

    async def join(self, *, timeout: float | None = None) -> None:
        """Wait until no task is pending or running (including delayed retries). When
        none is, this returns whatever the ``timeout`` (also 0)."""
        self._check_thread("join")
        _check_timeout(timeout)
        idle_here = self._outer_tg is None or (
            not self._busy_here() and self._committed >= self._submitted
        )
        if idle_here and not await self._store.has_unfinished():  # (not cut by the timeout)
            return
        scope: AbstractContextManager[Any] = (
            anyio.fail_after(timeout) if timeout is not None else nullcontext()
        )
        with scope:
            while True:
                if self._outer_tg is not None:
                    await self.flush()
                    if self._busy_here():
                        # the store has unfinished work while ours is in flight: no need
                        # to ask it; wait until an attempt ends or outcomes are committed
                        await self._wait_changed(self.poll_interval if self._store.shared else 5.0)
                        continue
                try:
                    unfinished = await self._store.has_unfinished()
                except StoreError:
                    if self._outer_tg is None:  # it stopped while we waited (store closed)
                        raise ManagerStateError(
                            "the manager stopped while tasks were pending or running"
                        ) from None
                    raise
                if not unfinished:
                    return
                if self._outer_tg is None:
                    raise ManagerStateError("tasks are pending but the manager is not running")
                await self._wait_changed(self.poll_interval if self._store.shared else 5.0)

    def _busy_here(self) -> bool:
        """Attempts of this manager are running or claimed, or outcomes are not yet
        committed."""
        return bool(self._occupied or self._active or self._outcomes or self._writing)

    async def cancel(self, task_id: str) -> TaskStatus:
        """Cancel a task. Pending, or claimed by this instance and not started yet:
        cancelled at once. Running here: its cancel scope is cancelled, and the call
        returns once the attempt is recorded (``cancelled``, or how it ended if it ended
        first), or after a second if the task holds off the cancellation (it is recorded
        when it gives in). Running on another instance: that instance cancels it at its
        next heartbeat. Returns the status after the call (a terminal task is left as it
        is)."""
        self._check_thread("cancel")
        self._release_held()
        slot = self._active.get(task_id)
        if slot is not None and slot.reason is None:
            slot.cancel("cancel")
            return await self._settled(task_id)
        flush = self._outer_tg is not None and self._committed < self._submitted
        queued = False
        if flush:
            # it may have been added a moment ago: in the store first. The commit that
            # writes it may also claim it and hand it to a worker before this call goes
            # on: marked first, the worker records it cancelled instead of starting it
            with self._lock:
                queued = any(r.id == task_id for r in self._inserts) or any(
                    r.id == task_id for r in self._batch_writing
                )
            if queued:
                self._cancel_soon.add(task_id)
        status: TaskStatus | None = None
        try:
            if flush:
                await self.flush()
            status = await self._cancel_stored(task_id)
        finally:
            if queued and status is not TaskStatus.RUNNING:
                # (a worker took it already, or none will: not left marked)
                self._cancel_soon.discard(task_id)
        return status

    async def _cancel_stored(self, task_id: str) -> TaskStatus:
        """:meth:`cancel` of a task that is in the store (no flush first)."""
        now = self.clock.now()
        # (read first when somebody listens: only a task that was pending before the call
        # is one this call cancels, and its event is published from this record)
        before = await self._store.fetch(task_id) if self.events.active else None
        status = await self._store.cancel(task_id, now)
        if status is None:
            raise TaskNotFound(f"no task with id {task_id!r}")
        if status is TaskStatus.CANCELLED:
            if before is not None and before.status is _PENDING:
                # a pending task cancelled by this call (not one cancelled earlier): a
                # committed change like any other, published as "finished"
                self._publish("finished", before, TaskStatus.CANCELLED, "cancelled", now)
            self._notify_terminal([task_id])
        elif status is TaskStatus.RUNNING and self._outer_tg is not None:
            run = self._run_id
            # a claim of ours in flight may hold it: wait until it is handed over
            while self._claiming and self._run_id is run and task_id not in self._claimed:
                await self._wait_changed(0.01)
            slot = self._active.get(task_id)
            if slot is not None:  # it started while the store was asked
                # (as a task running here when the call came: the answer is how it ended)
                slot.cancel("cancel")
                return await self._settled(task_id)
            elif task_id in self._claimed:  # claimed here, not started yet
                rec = next((r for r in self._backlog if r.id == task_id), None)
                if rec is None:  # (a worker holds it: it records it instead of starting it)
                    self._cancel_soon.add(task_id)
                else:  # recorded cancelled here and now, without a worker
                    self._backlog.remove(rec)
                    self._claimed.discard(task_id)
                    self._finish(rec, self._outcome(rec, "cancel", None, None, _Active(rec)))
                return await self._settled(task_id)
            else:
                # it ended here a moment ago (its outcome may still be on its way to the
                # store: then the answer is that outcome, or cancelled, the store having
                # seen the request first, see Store.complete), or it runs on another
                # instance, which acts on the flag at its next heartbeat
                while (
                    self._outcome_pending(task_id)
                    and self._write_error is None
                    and self._run_id is run
                ):
                    await self._wait_changed(0.05)
                rec = await self._store.fetch(task_id)
                if rec is not None and rec.status.terminal:
                    return rec.status
        return status

    async def _settled(self, task_id: str) -> TaskStatus:
        """The status of a task of this instance that :meth:`cancel` has just cancelled,
        once its attempt has ended and its outcome is committed (waiting at most a
        second: a task may hold off a cancellation; it is then still ``running``)."""
        run = self._run_id
        with anyio.move_on_after(1.0):
            while (
                task_id in self._active
                or task_id in self._claimed
                or self._outcome_pending(task_id)
            ) and (self._write_error is None and self._run_id is run):
                await self._wait_changed(0.01)
        rec = await self._store.fetch(task_id)
        if rec is None:  # (purged meanwhile)
            raise TaskNotFound(f"no task with id {task_id!r}")
        return rec.status

    def _outcome_pending(self, task_id: str) -> bool:
        """An outcome of ``task_id`` was handed to the writer and is not committed yet."""
        return any(out.id == task_id for out, _ in self._outcomes) or any(
            out.id == task_id for out, _ in self._outs_writing
        )

    # ------------------------------------------------------------------ replay
    def _replay_record(self, rec: TaskRecord, generation: int = 1) -> TaskRecord:
        defn = self.registry.get(rec.name)
        now = self.clock.now()
        return TaskRecord(
            id=replay_task_id(rec.id, generation),
            name=rec.name,
            args=rec.args,
            kwargs=rec.kwargs,
            created_at=now,
            run_after=now,
            priority=rec.priority,
            tags=list(rec.tags),
            max_attempts=defn.options.max_attempts if defn else rec.max_attempts,
            timeout=defn.options.timeout if defn else rec.timeout,
            requeue_on_interrupt=(
                defn.options.requeue_on_interrupt if defn else rec.requeue_on_interrupt
            ),
            replay_of=rec.id,
        )

    async def replay(self, task_id: str) -> str:
        """Run a dead (failed or interrupted) task again as a new task; returns its id.
        The new record's ``replay_of`` names the original.

        A dead task is replayed once: replaying it again returns the id of that replay
        (pending, running, done or dead) and writes nothing, so a repeated click or
        request never runs the task twice; if that replay was cancelled, this is a new
        replay.
        To run a task again after its replay died too, replay the replay."""
        self._require_running("replay")
        rec = await self._store.fetch(task_id)
        if rec is None:
            raise TaskNotFound(f"no task with id {task_id!r}")
        if rec.status not in DEAD:
            raise TaskStateError(
                f"task {task_id} is {rec.status.value}; only failed or interrupted tasks "
                "can be replayed"
            )
        latest = (await self._latest_replays([rec])).get(task_id)
        if latest is not None and latest[1] is not None:
            return latest[1].id
        new = self._replay_record(rec, 1 if latest is None else latest[0] + 1)
        # (a replay committed meanwhile by another caller has the same id: this insert is
        # then refused, and both callers answer that replay)
        await self._wait_committed(self._submit([new]))
        return new.id

    async def replays_of(self, task_ids: Iterable[str]) -> dict[str, str]:
        """The replay of each of ``task_ids`` that has been replayed (see :meth:`replay`),
        as ``{original id: replay id}``. A task whose latest replay was cancelled is not
        in it (it can be replayed again)."""
        self._check_thread("replays_of")
        originals = await self._store.fetch_many(list(dict.fromkeys(task_ids)))
        latest = await self._latest_replays(originals)
        return {original: rec.id for original, (_, rec) in latest.items() if rec is not None}

    async def _latest_replays(
        self, originals: Iterable[TaskRecord]
    ) -> dict[str, tuple[int, TaskRecord | None]]:
        """Each of ``originals`` that has a replay: the generation of its latest replay,
        and that replay, or None when it does not stand (it was cancelled, or it was made
        before the original was created: the replay of an earlier task with the same id,
        deleted since, as ids derived from idempotency keys and replays come back)."""
        latest: dict[str, tuple[int, TaskRecord | None]] = {}
        by_id = {rec.id: rec for rec in originals}
        ids = list(by_id)
        generation = 1
        while ids:
            wanted = {replay_task_id(i, generation): i for i in ids}
            ids = []
            for rec in await self._store.fetch_many(list(wanted)):
                original = wanted[rec.id]
                stands = rec.status is not TaskStatus.CANCELLED and _made_after(
                    rec, by_id[original]
                )
                latest[original] = (generation, rec if stands else None)
                if not stands:
                    ids.append(original)
            generation += 1
        return latest

    async def _not_replayed(
        self, dead: builtins.list[TaskRecord], generations: dict[str, int]
    ) -> builtins.list[TaskRecord]:
        """The tasks of ``dead`` that have not been replayed yet (or whose latest replay
        was cancelled); ``generations`` gets the generation each one's replay takes."""
        latest = await self._latest_replays(dead)
        out = []
        for rec in dead:
            found = latest.get(rec.id)
            if found is None:
                generations[rec.id] = 1
            elif found[1] is None:
                generations[rec.id] = found[0] + 1
            else:
                continue
            out.append(rec)
        return out

    async def dead_letters(
        self,
        *,
        ids: Iterable[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 10_000,
    ) -> builtins.list[TaskRecord]:
        """Dead tasks selected by id, or created within ``[since, until)`` (at most
        ``limit``, newest first)."""
        self._check_thread("dead_letters")
        return await self._dead(ids, since, until, limit)

    async def _dead(
        self,
        ids: Iterable[str] | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
        generations: dict[str, int] | None = None,
    ) -> builtins.list[TaskRecord]:
        """:meth:`dead_letters`; with ``generations``, only those not replayed yet (for a
        window, page by page: ``limit`` counts the ones not replayed), and the generation
        of each one's replay goes into it."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ConfigurationError(f"limit must be an int >= 0, got {limit!r}")
        if ids is not None:
            if isinstance(ids, str):
                raise TypeError(f"ids must be a collection of task ids, not the str {ids!r}")
            wanted = list(dict.fromkeys(ids))
            found = {r.id: r for r in await self._store.fetch_many(wanted)}
            # unknown ids and tasks that are not dead are left out
            dead = [found[i] for i in wanted if i in found and found[i].status in DEAD]
            if generations is not None:
                dead = await self._not_replayed(dead, generations)
            return dead[:limit]
        check_aware("since", since)
        check_aware("until", until)
        out: list[TaskRecord] = []
        cursor: int | None = None
        while len(out) < limit:
            page = await self._store.list(
                TaskQuery(
                    statuses=DEAD,
                    created_after=since,
                    created_before=until,
                    limit=min(500, limit - len(out)),
                    cursor=cursor,
                )
            )
            if generations is None:
                out.extend(page.items)
            else:
                out.extend(await self._not_replayed(page.items, generations))
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        return out

    async def replay_many(
        self,
        *,
        ids: Iterable[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        dry_run: bool = False,
        limit: int = 10_000,
    ) -> builtins.list[tuple[TaskRecord, str | None]]:
        """Replay dead tasks by ids or by creation window, in one commit.

        Returns ``(original, new_id)`` pairs; with ``dry_run`` nothing is written and every
        ``new_id`` is None: the list is exactly what would be dispatched. Dead tasks that
        were replayed already are left out (see :meth:`replay`): the same bulk replay run
        again dispatches none of them a second time (only replays that have died since,
        which are dead tasks of their own). ``limit`` counts the tasks dispatched."""
        self._check_thread("replay_many")
        if ids is None and since is None and until is None:
            raise ConfigurationError("replay_many needs ids or a time window (since/until)")
        generations: dict[str, int] = {}
        dead = await self._dead(ids, since, until, limit, generations)
        if dry_run:
            return [(r, None) for r in dead]
        self._require_running("replay_many")
        news = [self._replay_record(r, generations[r.id]) for r in dead]
        if news:
            wanted = {id(n) for n in news}
            self._verdicts_wanted.update(wanted)
            try:
                await self._wait_committed(self._submit(news))
                # another caller (here or in another instance) may have replayed some of
                # them between the selection and this commit: the store refused those
                # inserts, and they are that caller's replays, not this one's (left out,
                # as if selected after it)
                refused = await self._refused_inserts(news)
            finally:
                self._verdicts_wanted.difference_update(wanted)
            if refused:
                pairs = zip(dead, news, strict=True)
                return [(r, n.id) for r, n in pairs if id(n) not in refused]
        return [(r, n.id) for r, n in zip(dead, news, strict=True)]

    async def _refused_inserts(self, records: Sequence[TaskRecord]) -> set[int]:
        """id() of the committed ``records`` (with derived ids) whose insert the store
        refused, another record holding their id. What the store said when it said it
        (two records' creation times may be equal under a coarse or virtual clock);
        otherwise the stored record tells (its creation time is not this one's)."""
        refused: set[int] = set()
        unknown: list[TaskRecord] = []
        verdicts = self._insert_verdicts
        for rec in records:
            # (read, not taken: a take-back and a bulk replay of the same records may
            # both ask; the cap forgets it)
            verdict = verdicts.get(id(rec))
            if verdict is not None and verdict[0] is rec:
                if not verdict[1]:
                    refused.add(id(rec))
            else:
                unknown.append(rec)
        if unknown:
            stored = {r.id: r for r in await self._store.fetch_many([r.id for r in unknown])}
            for rec in unknown:
                found = stored.get(rec.id)
                if found is not None and abs(found.created_at - rec.created_at) > _SAME_TIME:
                    refused.add(id(rec))
        return refused

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> TaskManager:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        try:
            await tg.start(self.run, name="anytask manager")
        except BaseException:
            # the failure came out of start(), not out of the group: close the (empty)
            # group cleanly and raise it as it is, not wrapped in an ExceptionGroup
            await tg.__aexit__(None, None, None)
            raise
        self._host_tg = tg
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg, self._host_tg = self._host_tg, None
        if tg is None:
            raise ManagerStateError(
                "the task manager's __aexit__ was called without a matching __aenter__ "
                "(use 'async with tm:', or tg.start(tm.run) with tm.stop())"
            )
        self.stop()
        if exc is not None and not isinstance(exc, anyio.get_cancelled_exc_class()):
            # the body's own error: shut down gracefully, then let it propagate as it is
            # (handing it to the task group would wrap it in an ExceptionGroup)
            await tg.__aexit__(None, None, None)
            return None
        return await tg.__aexit__(exc_type, exc, tb)

    def stop(self) -> None:
        """Ask a running manager to shut down gracefully (returns at once). Safe to call
        from any thread: from another one, the request reaches the event loop as soon as
        it gets to it."""
        stop = self._stop
        if stop is None:
            return
        token = self._token
        if threading.get_ident() == self._loop_thread or token is None:
            stop.set()
        else:
            call_soon_in_loop(token, stop.set)

    async def run(self, *, task_status: AnyioTaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the manager until :meth:`stop` is called or the caller is cancelled."""
        with self._lock:
            if self._state is not RunState.IDLE:
                raise ManagerStateError(f"the task manager is already {self._state.value}")
            self._state = RunState.STARTING
        self._reset_runtime()
        self._pick_clock()
        # from the start on, not once the store is open and recovered: a stop asked while
        # the manager starts (by another task, a thread, a signal handler) is kept, and
        # the manager stops as soon as it has started
        self._token = anyio.lowlevel.current_token()
        self._loop_thread = threading.get_ident()
        self._stop = anyio.Event()
        with _queued_while_idle_lock:  # what it holds queued is written by this run
            _queued_while_idle.discard(self)
        if self._fixed_instance_id is None:
            self.instance_id = uuid.uuid4().hex
        try:
            await self._store.open()
            try:
                await self._serve(task_status)
            finally:
                # The writer has ended with _serve: torn down by a cancellation (before or
                # during a stop), or it kept failing and the stop gave up waiting for it.
                # What it left (records queued for its next commit, outcomes it has not
                # committed) is written to the store directly (an insert the writer did
                # commit conflicts on its id, and an outcome it did commit is refused:
                # nothing is applied twice).
                await self._write_left_inserts()
                await self._write_left_outcomes()
                with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                    await self._store.close()
        finally:
            with self._lock:
                self._state = RunState.IDLE
                # the store did not take them (tasks, or outcomes of attempts that ended):
                # they wait for a next start
                if self._inserts or self._outcomes:
                    with _queued_while_idle_lock:
                        _queued_while_idle.add(self)
                waiters = [*self._waiters.values()]
                if self._committed_signal is not None:  # flush() waiters: nothing more comes
                    waiters.append(self._committed_signal)
                self._fire_changed()
                self._reset_runtime()
                self._outer_tg = None
            for event in waiters:  # wait() and join() see at once that the manager stopped
                event.set()

    def _pick_clock(self) -> None:
        """The clock of this run. The default one follows the event loop: under trio's
        ``MockClock`` the loop's time jumps ahead while the wall clock does not, so by
        the wall clock a delayed task, a retry's backoff or a schedule's next fire would
        fall due only once real time got there, and a test waiting for it would hang
        while virtual time ran on. There the manager keeps time by a ``LoopClock`` of its
        own (one for its life: a restart in the next test goes on from where it was)."""
        if self.clock is self._system_clock or self.clock is self._virtual_clock:
            if loop_clock_is_virtual():
                if self._virtual_clock is None:
                    self._virtual_clock = LoopClock()
                self.clock = self._virtual_clock
            else:
                self.clock = self._system_clock
        # (also for a clock assigned to tm.clock since the constructor)
        self._own_clock = type(self.clock) is not SystemClock

    async def _serve(self, task_status: AnyioTaskStatus[None]) -> None:
        started_at = self.clock.now()
        if self._outcomes:
            # outcomes of attempts that ended in an earlier run, which the store refused as
            # that run stopped (a full disk): written before recovery, which would take
            # their tasks (whose leases ran out meanwhile) for interrupted, or requeue them
            # to run again. Still refused: they stay queued, and this start fails as the
            # recovery would (a task some other instance recovered meanwhile refuses its
            # outcome: nothing is applied twice)
            left, self._outcomes = self._outcomes, []
            try:
                accepted = await self._store.complete([out for out, _ in left])
            except BaseException:
                self._outcomes[:0] = left
                raise
            self._after_outcomes([pair for pair, ok in zip(left, accepted, strict=False) if ok])
        await self._store.recover(started_at)
        if not self.requeue_pending:
            n = await self._store.interrupt_pending(started_at, started_at)
            if n:
                log.warning("marked %d pending task(s) from an earlier run interrupted", n)
        self._writer_wake = _Signal()
        self._dispatch_wake = _Signal()
        self._spread = _Signal()
        self._committed_signal = anyio.Event()
        self._changed = None
        self._thread_limiter = anyio.CapacityLimiter(self.max_concurrency)
        self._dispatcher_done = anyio.Event()
        stop = self._stop
        assert stop is not None  # (made by run, a stop asked meanwhile already set)
        store = self._store
        self._inline_store = store if isinstance(store, MemoryStore) and store.inline else None
        self._detach_args = isinstance(store, MemoryStore)
        self._workers_open = True
        async with anyio.create_task_group() as services:
            self._outer_tg = services
            services.start_soon(self._writer, name="anytask writer")
            services.start_soon(self._heartbeat, name="anytask heartbeat")
            if self.retention is not None or self.dead_retention is not None:
                services.start_soon(self._purge_old, name="anytask retention")
            if self._schedules:
                from .schedule._runner import run_schedules

                await services.start(run_schedules, self, name="anytask scheduler")
            if self._inserts:
                self._writer_wake.set()
            with self._lock:
                self._state = RunState.RUNNING
            async with anyio.create_task_group() as pool:
                # counted from their spawn, not their start: "none left" must not be
                # mistaken for "none started yet" (see _wait_unoccupied)
                self._workers_alive = self.max_concurrency
                for i in range(self.max_concurrency):
                    pool.start_soon(self._worker, _Slot(), name=f"anytask worker {i}")
                dispatch_scope = anyio.CancelScope()
                pool.start_soon(self._dispatcher, dispatch_scope, name="anytask dispatcher")
                pool.start_soon(self._spreader, name="anytask spreader")
                task_status.started()
                try:
                    await stop.wait()
                    if (
                        self._inline_store is not None
                        and anyio.current_effective_deadline() != -math.inf
                    ):
                        # tasks queued while a worker ran others were left for it to take
                        # (_enqueued_here); the free slots hold as many of them now, and
                        # the stop lets them finish, as if claimed when they were queued
                        # (not when the manager is being cancelled: nothing would run them)
                        self._claim_here_now(self._free_slots())
                finally:
                    if anyio.current_effective_deadline() == -math.inf:
                        self._torn_down = True  # a cancellation, not a stop
                    with self._lock:
                        self._state = RunState.STOPPING
                    dispatch_scope.cancel()
                    with anyio.CancelScope(shield=True):
                        await self._drain()
                    self._close_workers()
            # every attempt has handed its outcome to the writer; commit them all
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                while self._outcomes or self._writing or self._committed < self._submitted:
                    if self._write_error is not None or not self._writer_alive:
                        break
                    self._writer_wake.set()
                    await anyio.sleep(0.001)
            services.cancel_scope.cancel()

    async def _drain(self) -> None:
        """Give running attempts ``shutdown_grace`` to finish, then cancel the rest.

        Claimed records count from the claim on (``_occupied``), not from the moment a
        worker picks them up: a record claimed just before the stop may still wait in the
        backlog, and must neither be forgotten here nor start afterwards without a
        deadline. When the manager is being cancelled, the backlog is handed back at once
        (see _wait_unoccupied)."""
        done = self._dispatcher_done
        assert done is not None
        with anyio.move_on_after(max(self.shutdown_grace, 10.0)):
            await done.wait()  # a claim in flight has handed its records to the workers
            while self._claiming:  # the writer's claim, too
                await self._capacity_freed()
        await self._wait_unoccupied(self.shutdown_grace)
        self._cutting = True
        for slot in list(self._active.values()):
            slot.cancel("shutdown")
        await self._wait_unoccupied(1.0)
        stubborn = [
            f"{slot.record.name} ({task_id})"
            for task_id, slot in self._active.items()
            if slot.record is not None
        ]
        if stubborn:
            # cancellation is level-triggered, so only a task that shields itself or
            # catches the cancellation at every checkpoint gets here; structured
            # concurrency means the shutdown has to wait for it
            log.error(
                "anytask: shutdown waits for %d task(s) that keep running although cancelled "
                "(they shield themselves or catch every cancellation): %s",
                len(stubborn),
                ", ".join(stubborn),
            )

    async def _wait_unoccupied(self, timeout: float) -> None:
        """Wait up to ``timeout`` until no record holds a slot. Records waiting in the
        backlog are handed back instead of waited for when the manager is torn down by a
        cancellation (``_torn_down``: its workers are cancelled, and one that is still
        inside an attempt, because its task catches every cancellation, must not start
        them when that ends) or once every worker has ended (in a stop, workers end only
        after this)."""
        with anyio.move_on_after(timeout):
            while self._occupied:
                if self._backlog and (self._torn_down or not self._workers_alive):
                    await self._return_backlog()
                    continue
                await self._capacity_freed()

    async def _return_backlog(self) -> None:
        """Hand back claimed records no worker will start (the workers have ended): they
        go back to ``pending`` as they were before the claim (their attempt not counted,
        due at once), written to the store directly as the writer may have ended too."""
        records = list(self._backlog)
        self._backlog.clear()
        self._occupied -= len(records)
        for rec in records:
            self._claimed.discard(rec.id)
        now = self.clock.now()
        outs = [
            Outcome(
                rec.id,
                rec.token,
                _PENDING,
                ended_at=now,  # (a task whose cancel was asked ends cancelled, at this time)
                error=rec.error,
                error_type=rec.error_type,
                traceback=rec.traceback,
                run_after=now,
                seq=rec.seq,
                attempts=rec.attempts - 1,
            )
            for rec in records
        ]
        log.info("anytask: %d claimed task(s) that never started go back to pending", len(outs))
        accepted: builtins.list[bool] = []
        try:
            accepted = await _at_teardown(lambda: self._store.complete(outs))
        except Exception:
            # the teardown goes on; they are tried again with the outcomes left
            # (_write_left_outcomes), else their leases run out and recovery takes them
            log.exception("anytask: handing back %d claimed task(s) failed", len(outs))
            self._outcomes.extend(zip(outs, records, strict=True))
        # published and waited-for like any outcome ("retrying": back to pending, or
        # cancelled when a cancel was asked meanwhile)
        self._after_outcomes(
            [(out, rec) for out, rec, ok in zip(outs, records, accepted, strict=False) if ok]
        )

    async def _write_left_inserts(self) -> None:
        """Write the records still queued for a group commit directly: a task queued with
        ``add_task`` just before a cancellation, or after it, is not lost with the writer.
        A write the writer has in flight is waited for first: it either commits its
        records or puts them back in the queue (also when a store lets a cancellation cut
        it short). If this write fails, the records stay queued, for the next start of
        this manager."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            while self._writing:
                await self._wait_changed(0.05)
        with self._lock:
            queued = list(self._inserts)
            del self._inserts[:]
            if self._withdrawn:  # (their callers were told they were not accepted)
                withdrawn, self._withdrawn = self._withdrawn, set()
                queued = [rec for rec in queued if id(rec) not in withdrawn]
        if not queued:
            return
        try:
            inserted = await _at_teardown(lambda: self._store.insert(queued))
        except Exception:
            log.exception("anytask: writing %d queued task(s) at teardown failed", len(queued))
            with self._lock:
                self._inserts[:0] = queued
            return
        self._remember_inserts(queued, inserted)
        with self._lock:
            self._with_next.difference_update(id(rec) for rec in queued)
        self._committed = self._submitted - len(self._inserts)

    async def _write_left_outcomes(self) -> None:
        """Write the outcomes the writer has not committed directly. If this write fails,
        they stay queued, for the next start of this manager (an outcome whose lease ran
        out and that recovery took meanwhile is refused then: nothing is applied twice);
        if it never comes, their leases run out and recovery takes them."""
        left = [*self._outs_writing, *self._outcomes]
        self._outs_writing = []
        self._outcomes = []
        if not left:
            return
        try:
            await _at_teardown(lambda: self._store.complete([out for out, _ in left]))
        except Exception:
            log.exception("anytask: writing %d outcome(s) at teardown failed", len(left))
            self._outcomes[:0] = left

    async def _capacity_freed(self) -> None:
        await self._wait_changed(0.05)

    async def _wait_changed(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until an attempt ends or outcomes are committed.
        The event exists only while somebody waits, so the hot path pays nothing."""
        changed = self._changed
        if changed is None:
            changed = self._changed = anyio.Event()
        with anyio.move_on_after(timeout):
            await changed.wait()

    def _fire_changed(self) -> None:
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()

    # ------------------------------------------------------------------ writer
    async def _writer(self) -> None:
        """Group-commit inserts and outcomes; in the same transaction, claim due records
        for the slots that are free (one commit per cycle instead of three)."""
        self._writer_alive = True
        try:
            await self._write_cycles()
        finally:
            # (a write in flight runs to its end and hands its result back before the
            # writer can be cancelled, or, cancelled, puts what it held back: nothing is
            # in flight now)
            self._writer_alive = self._writing = False

    async def _write_cycles(self) -> None:
        wake = self._writer_wake
        assert wake is not None
        store = self._store
        delay = 0.05
        while True:
            if not self._inserts and not self._outcomes:
                await wake.wait()
            with self._lock:
                cut = INSERT_BATCH
                together = bool(self._with_next)
                if together:  # never cut between records committed together
                    inserts, with_next = self._inserts, self._with_next
                    while cut < len(inserts) and id(inserts[cut - 1]) in with_next:
                        cut += 1
                batch = self._inserts[:cut]
                del self._inserts[:cut]
                if together:
                    self._with_next.difference_update(id(r) for r in batch)
                mark = self._submitted - len(self._inserts)
                if self._withdrawn:  # (they count for the mark, but are not written)
                    taken = {id(r) for r in batch}
                    batch = [r for r in batch if id(r) not in self._withdrawn]
                    self._withdrawn -= taken
                # what to link again should the write fail and the batch go back
                joined = [id(r) for r in batch[:-1]] if together else []
                self._batch_writing = batch
            outs, self._outcomes = self._outcomes, []
            self._outs_writing = outs
            limit = self._claim_limit() if batch or outs else 0
            if limit:
                self._claiming = True
            self._writing = True
            claimed: builtins.list[TaskRecord] = []
            inserted: builtins.list[bool] = []
            try:
                if batch or outs:
                    now = self.clock.time()
                    # shielded when claiming: a claim that committed must reach the workers
                    with anyio.CancelScope(shield=limit > 0):
                        res = await store.write_batch(
                            batch,
                            [o for o, _ in outs],
                            self.instance_id,
                            limit,
                            from_ts(now),
                            from_ts(now + self.lease),
                        )
                    claimed, inserted = res.claimed, res.inserted
            except anyio.get_cancelled_exc_class():
                # the manager is torn down in the middle of a write that is not shielded
                # (no claim in it) and that the store lets be cancelled (a network
                # driver): whether it committed is unknown, so it is put back for the
                # teardown to write directly (_write_left_inserts, _write_left_outcomes; an
                # insert that did commit conflicts on its id, an outcome is refused)
                self._writing = False
                self._outs_writing = []
                with self._lock:
                    self._inserts[:0] = batch
                    self._batch_writing = []
                self._outcomes[:0] = outs
                raise
            except Exception as exc:
                self._writing = False
                self._outs_writing = []
                self._write_failing = True
                self._claimed_done(limit > 0)
                # put everything back in order and try again: nothing is dropped
                log.exception("anytask: store write failed; retrying in %.2fs", delay)
                with self._lock:
                    self._inserts[:0] = batch
                    self._with_next.update(joined)  # (withdrawn ones: harmless)
                    self._batch_writing = []
                self._outcomes[:0] = outs
                self._fire_changed()
                if delay >= 5.0:  # failing for a while: callers waiting on a commit raise
                    self._write_error = exc
                    # (those waiting already, too: wake them to see it)
                    signal, self._committed_signal = self._committed_signal, anyio.Event()
                    if signal is not None:
                        signal.set()
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._writing = False
            self._outs_writing = []
            self._batch_writing = []
            self._write_failing = False
            delay = 0.05
            self._write_error = None
            self._committed = mark
            if batch:
                self._remember_inserts(batch, inserted)
            if batch and self.events.active:
                if len(inserted) != len(batch):  # (a store that does not say)
                    inserted = [True] * len(batch)
                for rec, ok in zip(batch, inserted, strict=True):
                    if ok:  # (not a second insert of an idempotency key or a replay)
                        self._publish("enqueued", rec, rec.status)
            if claimed:  # before waking the callers: the tasks start a little sooner
                self._hand_claimed(claimed)
            signal, self._committed_signal = self._committed_signal, anyio.Event()
            assert signal is not None
            signal.set()
            self._claimed_done(limit > 0, exhausted=limit > 0 and len(claimed) < limit)
            if outs:
                self._after_outcomes(outs)
            else:
                self._fire_changed()

    def _free_slots(self) -> int:
        return self.max_concurrency - self._occupied - self._stray

    def _hold_slot(self) -> Callable[[], None]:
        """A sync attempt was abandoned (cancelled, timed out, cut at shutdown) while its
        thread runs on: Python cannot stop a thread, so the slot stays taken until the
        call returns. At most ``max_concurrency`` task calls then ever run at once, and
        calls that never return cannot pile up threads. Returns the release."""
        self._stray += 1
        run = self._run_id
        log.warning(
            "anytask: a sync task's thread runs on after its attempt ended; its slot stays "
            "taken until the call returns (%d such thread(s))",
            self._stray,
        )

        def release() -> None:
            if self._run_id is not run:
                return  # from an earlier run of the manager: its slots are gone already
            self._stray -= 1
            log.info("anytask: an abandoned sync task's call returned; its slot is free")
            self._wake_dispatcher()
            self._fire_changed()

        return release

    @property
    def abandoned_threads(self) -> int:
        """Sync task calls still running in their thread after their attempt ended (a
        timeout, a cancel): each keeps a slot until it returns."""
        return self._stray

    def _claim_limit(self) -> int:
        """How many records the writer may claim with its next commit: the free slots,
        unless a claim is already in flight or the manager is not (or no longer) running."""
        if self._claiming or self._state is not _RUNNING or not self._workers_open:
            return 0
        return max(self._free_slots(), 0)

    def _hand_claimed(self, claimed: builtins.list[TaskRecord]) -> None:
        """Give claimed records to the workers; each holds one slot until its attempt
        ends."""
        if not claimed:
            return
        hub = self.events.active
        self._occupied += len(claimed)
        self._backlog.extend(claimed)
        for rec in claimed:
            self._claimed.add(rec.id)
            if hub:
                self._publish("running", rec, TaskStatus.RUNNING, at=rec.started_at)
        # One worker first: it runs the records back to back until one of them waits for
        # something. The spreader, which runs after it, wakes more workers for whatever
        # is still in the backlog then. Waking one worker per record would mostly wake
        # workers that find nothing left (short tasks).
        self._wake_idle(1)
        spread = self._spread
        if spread is not None and len(claimed) > 1:
            spread.set()

    def _enqueued_here(self, n: int) -> None:
        """With an in-process store, ``n`` records were just put in it and workers are
        idle. With no worker running attempts and none woken yet, claim them for idle
        workers at once, as the writer claims with the commit of an insert (a task
        enqueued on an idle manager just before a stop is then already held, and the
        stop lets it finish). Otherwise the worker that runs attempts (or is about to)
        claims them itself as it goes on, and the spreader wakes more workers only if
        every such worker is waiting inside a task: a burst of tasks that never wait runs
        back to back in one worker, which yields the event loop once a slice instead of
        once every task of every worker (see _spreader)."""
        if self._in_series or self._backlog:
            self._arm_spread()
        else:
            self._claim_for_idle(n)

    def _arm_spread(self) -> None:
        spread = self._spread
        if not self._spread_armed and spread is not None:
            self._spread_armed = True
            spread.set()

    def _claim_for_idle(self, n: int) -> None:
        """With an in-process store: claim up to ``n`` due records at once for idle
        workers."""
        self._claim_here_now(min(n, len(self._idle)))

    def _claim_here_now(self, n: int) -> None:
        """With an in-process store: claim up to ``n`` due records (at most the free slots)
        and hand them to the workers."""
        store = self._inline_store
        assert store is not None
        n = min(n, self._free_slots())
        if n <= 0:
            return
        now = self.clock.now()
        lease_until = now + self._lease_delta
        claimed: builtins.list[TaskRecord] = []
        for _ in range(n):
            rec = store.claim_one_now(self.instance_id, now, lease_until)
            if rec is None:
                break
            claimed.append(rec)
        self._hand_claimed(claimed)

    async def _spreader(self) -> None:
        """Wake idle workers for records left in the backlog (see _hand_claimed)."""
        spread = self._spread
        assert spread is not None
        while self._workers_open:
            await spread.wait()
            # let the worker woken first run (on trio, tasks woken together run in
            # any order)
            await anyio.lowlevel.checkpoint()
            self._spread_armed = False
            self._wake_idle(len(self._backlog))
            if (
                self._inline_store is not None
                and self._idle
                and not self._between
                and self._state is _RUNNING
            ):
                # With an in-process store, due records wait in the store for a worker
                # running attempts to claim them as it goes on. None is between two
                # attempts now: each one still running attempts waits inside a task
                # (I/O, a sleep, a thread), so idle workers take the due records.
                self._claim_for_idle(len(self._idle))

    def _wake_idle(self, n: int) -> None:
        """Wake up to ``n`` idle workers."""
        idle = self._idle
        while n > 0 and idle:
            event = idle.pop().event
            assert event is not None
            event.set()
            n -= 1

    def _claimed_done(self, was_claiming: bool, exhausted: bool = False) -> None:
        """After a write cycle: end this cycle's claim and let the dispatcher look again
        (it leaves claiming to the writer while the writer has work). ``exhausted``: the
        commit's claim took fewer records than it asked for, so no more work was due; the
        dispatcher then only reads when the next delayed task is due, instead of
        claiming again (an empty write transaction that would hold up the next enqueue's
        commit)."""
        if was_claiming:
            self._claiming = False
        if self._dispatch_wake is not None:
            self._skip_claim = exhausted
            # With no free slot it could only go back to sleep: the next slot to free
            # wakes it (_finish) or brings a commit that does (this method).
            if self._free_slots() > 0:
                self._dispatch_wake.set()

    def _wake_dispatcher(self) -> None:
        """New due work may exist (a retry, a recovered task, a schedule fire...)."""
        wake = self._dispatch_wake
        if wake is not None:
            self._skip_claim = False
            wake.set()

    def _after_outcomes(self, outs: builtins.list[tuple[Outcome, TaskRecord]]) -> None:
        terminal = []
        requeued = False
        hub = self.events.active
        for out, rec in outs:
            # (a pending outcome too: the store may have turned it into "cancelled")
            terminal.append(out.id)
            if not out.status.terminal:
                requeued = True
            if hub:
                kind = "finished" if out.status.terminal else "retrying"
                self._publish(kind, rec, out.status, out.error, out.ended_at)
        if requeued:
            self._wake_dispatcher()
        self._notify_terminal(terminal)

    def _notify_terminal(self, ids: builtins.list[str]) -> None:
        if self._waiters:
            for task_id in ids:
                self._wake_waiter(task_id)
        self._fire_changed()

    def _wake_waiter(self, task_id: str) -> None:
        """Wake ``wait(task_id)`` (the task reached a terminal status)."""
        waiters = self._waiters
        if waiters:
            event = waiters.pop(task_id, None)
            if event is not None:
                event.set()

    def _publish(
        self,
        kind: str,
        rec: TaskRecord,
        status: TaskStatus,
        error: str | None = None,
        at: datetime | None = None,
    ) -> None:
        self.events.publish(
            TaskEvent(
                kind=kind,
                task_id=rec.id,
                name=rec.name,
                status=status.value,
                at=at or self.clock.now(),
                attempts=rec.attempts,
                priority=rec.priority,
                error=error,
            )
        )

    def _hand_outcome(self, out: Outcome, rec: TaskRecord) -> None:
        self._outcomes.append((out, rec))
        if self._writer_wake is not None:
            self._writer_wake.set()

    # ------------------------------------------------------------------ dispatcher
    async def _dispatcher(self, scope: anyio.CancelScope) -> None:
        wake = self._dispatch_wake
        assert wake is not None
        store = self._store
        with scope:
            try:
                await self._dispatch_loop(scope, wake, store)
            finally:
                assert self._dispatcher_done is not None
                self._dispatcher_done.set()

    async def _dispatch_loop(self, scope: anyio.CancelScope, wake: _Signal, store: Store) -> None:
        backoff = self.poll_interval  # after a failed claim: doubled per failure, up to 5 s
        while not scope.cancel_called:
            free = self._free_slots()
            if free <= 0 or self._claiming or self._writer_will_claim():
                # no slot, or a claim in flight, or the writer's next commit claims for
                # the free slots anyway (it wakes us after each commit)
                await wake.wait()
                continue
            if self._write_failing and (self._outcomes or self._outs_writing):
                # the store refuses the writer's commits (a full disk) and outcomes wait
                # for one: start no attempt whose outcome could not be recorded either
                # (a claim, a few pages, may still fit where the batch does not). The
                # writer's next commit claims again, and wakes us
                await wake.wait(self.poll_interval)
                continue
            if self._skip_claim:
                # the writer's commit just claimed and found no more due work
                self._skip_claim = False
                due = await self._next_due(store)
                await wake.wait(self._due_timeout(store, due))
                continue
            now = self.clock.time()
            self._claiming = True
            try:
                # shielded: a claim that committed must reach the workers
                with anyio.CancelScope(shield=True):
                    claimed = await store.claim(
                        self.instance_id, free, from_ts(now), from_ts(now + self.lease)
                    )
            except Exception:
                self._claiming = False
                # (a store failing for a while: a traceback per poll would flood the log)
                log.exception("anytask: claiming tasks failed; retrying in %.2fs", backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, max(self.poll_interval, 5.0))
                continue
            backoff = self.poll_interval
            try:
                self._hand_claimed(claimed)
            finally:
                self._claiming = False
            if len(claimed) == free:
                continue  # there may be more due work; claim again when a slot frees
            due = await self._next_due(store)
            await wake.wait(self._due_timeout(store, due))

    async def _next_due(self, store: Store) -> datetime | None:
        try:
            return await store.next_run_after()
        except Exception:
            log.exception("anytask: reading the next due time failed")
            return None

    def _due_timeout(self, store: Store, due: datetime | None) -> float:
        timeout = self.poll_interval if store.shared else _NEVER
        if due is not None:
            wait = max(to_ts(due) - self.clock.time(), 0.0)
            if store.shared:
                # every instance sharing the store wakes for the same due time: a little
                # jitter leaves to chance which of them claims it, not to the order they
                # were started in (a task one of them hands back, not having it
                # registered, would otherwise go back to that one every time)
                wait += random.random() * min(self.poll_interval, 0.05)
            timeout = min(timeout, wait)
        # always a checkpoint: a due record that the claim did not take (another instance
        # was faster) must not turn the dispatcher into a busy loop
        return max(timeout, 0.001)

    def _writer_will_claim(self) -> bool:
        """The writer has work queued or in flight, and will claim with its commit."""
        return (
            not self._write_failing
            and self._state is _RUNNING
            and bool(self._writing or self._outcomes or self._inserts)
        )

    # ------------------------------------------------------------------ workers
    def _take(
        self, started: datetime | None = None, lease_until: datetime | None = None
    ) -> TaskRecord | None:
        """The next record for a free worker: one claimed for it (the backlog) or, with an
        in-process store, one it claims itself at once. None when there is none.
        ``started``: the time to record as its start, when the caller has just read the
        clock (the end of the worker's attempt before); ``lease_until``: the end of its
        lease, when the caller has one from a moment ago (else ``started`` + lease)."""
        if self._backlog:
            return self._backlog.popleft()
        store = self._inline_store
        if (
            store is not None
            and self._state is _RUNNING
            and self._occupied + self._stray < self.max_concurrency
        ):
            if started is None:
                started = self.clock.now()
                lease_until = None
            if lease_until is None:
                lease_until = started + self._lease_delta
            rec = store.claim_one_now(self.instance_id, started, lease_until)
            if rec is not None:
                self._occupied += 1
                if self.events.active:
                    self._publish("running", rec, TaskStatus.RUNNING, at=started)
            return rec
        return None

    def _close_workers(self) -> None:
        """Workers exit once nothing is left for them."""
        self._workers_open = False
        self._wake_idle(len(self._idle))
        if self._spread is not None:
            self._spread.set()  # it ends

    async def _worker(self, slot: _Slot) -> None:
        try:
            while True:
                rec = self._take()
                if rec is None:
                    if not self._workers_open:
                        return
                    if self._inline_store is not None:
                        # workers claim for themselves while busy; once one is idle, the
                        # dispatcher keeps the time of the next delayed task for it
                        self._wake_dispatcher()
                    slot.event = event = anyio.Event()
                    self._idle.append(slot)  # whoever sets the event takes us off the list
                    await event.wait()
                    continue
                await self._run_series(slot, rec)
        except anyio.get_cancelled_exc_class():
            self._torn_down = True  # (a stop ends workers by returning, see _close_workers)
            raise
        finally:
            self._workers_alive -= 1
            self._fire_changed()  # (the shutdown may wait for the last one: _drain)

    async def _run_series(self, slot: _Slot, rec: TaskRecord | None) -> None:
        """Run ``rec``, then more records back to back while there are any, in one cancel
        scope. A cancelled attempt ends the series: the next one gets a fresh scope."""
        scope = slot.scope = anyio.CancelScope()
        # The attempts may never wait for anything, so the worker yields to the rest of the
        # program now and then. Workers running series take turns, so the slice of each
        # is _YIELD_EVERY shared among them: whatever else wants the event loop waits
        # about _YIELD_EVERY, not that times the number of workers.
        self._in_series += 1
        next_yield = time.perf_counter() + _YIELD_EVERY / self._in_series
        # One lease end for the claims of a slice, while their starts stay within a tenth
        # of a lease of the first one's (a slice lasts about _YIELD_EVERY, but a task may
        # take longer, and a virtual clock may jump): each lease is then at least 90% of
        # one counted from its own start, and the heartbeat renews every lease / 3.
        lease_until: datetime | None = None
        renew_after: datetime | None = None
        slot.reason = None
        try:
            with scope:
                while rec is not None:
                    ended = await self._attempt(slot, rec)
                    if slot.reason is not None:  # the scope was cancelled (_Slot.cancel)
                        break
                    if time.perf_counter() >= next_yield:
                        # (before the next claim, so that no record is claimed and left
                        # waiting meanwhile)
                        self._between += 1
                        try:
                            await anyio.lowlevel.checkpoint()
                        finally:
                            self._between -= 1
                        next_yield = time.perf_counter() + _YIELD_EVERY / self._in_series
                        ended = lease_until = renew_after = None  # time went by: read the clock
                    elif ended is not None and (renew_after is None or ended > renew_after):
                        lease_until = ended + self._lease_delta
                        renew_after = ended + self._lease_delta / 10
                    # the next attempt starts as this one ended (the clock read once)
                    rec = self._take(ended, lease_until)
        except anyio.get_cancelled_exc_class():
            # cancelled from outside: the manager is being torn down
            await self._abandon(slot)
            raise
        finally:
            self._in_series -= 1
        if slot.record is not None:  # the scope caught our cancel in the middle of an attempt
            rec, active = slot.record, slot.active
            slot.record = slot.active = None
            assert active is not None
            self._finish(rec, self._outcome(rec, slot.reason or "shutdown", None, None, active))

    async def _abandon(self, slot: _Slot) -> None:
        """Record the attempt of a worker torn down with the manager (the writer may be
        gone already, so the write goes to the store directly)."""
        rec, active = slot.record, slot.active
        if rec is None or active is None:
            return
        slot.record = slot.active = None
        self._occupied -= 1
        out = self._outcome(rec, slot.reason or "shutdown", None, None, active)
        if out is not None:
            try:
                await _at_teardown(lambda: self._store.complete([out]))
            except Exception:
                # not raised in place of the cancellation (it would crash the teardown):
                # the teardown tries it again with the outcomes left (_write_left_outcomes)
                log.exception("anytask: recording task %s at teardown failed", rec.id)
                self._outcomes.append((out, rec))

    async def _attempt(self, slot: _Slot, rec: TaskRecord) -> datetime | None:
        """One attempt of ``rec`` in the worker's scope. Returns once its outcome is handed
        on: the time it ended when it was a plain success recorded at once (else None);
        a cancellation of the scope (or from outside) propagates with ``slot.record``
        still set, for the caller to record."""
        if self._claimed:
            self._claimed.discard(rec.id)
        if self._idle and not self._spread_armed:
            # should this attempt wait for something, the spreader finds it inside the
            # attempt and gives due records to idle workers (see _enqueued_here)
            self._arm_spread()
        defn = self.registry.get(rec.name)
        if defn is None:
            if self._cancel_soon and rec.id in self._cancel_soon:
                self._cancel_soon.discard(rec.id)  # cancelled before it got here
                self._finish(rec, self._outcome(rec, "cancel", None, None, _Active(rec)))
            else:
                self._finish(rec, await self._not_registered(rec))
            return None
        slot.record = rec
        active = slot.active = _Active(rec)
        if self._own_clock:
            active.clock = self.clock
            active.loop_thread = self._loop_thread
            active.offset = self.clock.time() - time.time()
        stale = self._active.setdefault(rec.id, slot)
        if stale is not slot:
            # an attempt of ours still runs although its lease ran out and the task was
            # requeued and claimed again (by us): the new claim supersedes it, and the
            # old attempt's outcome would be refused anyway
            stale.cancel("lease")
            self._active[rec.id] = slot
        if self._cutting or self._cancel_soon:
            if self._cutting:  # claimed before the stop, picked up after the grace ran out
                slot.cancel("shutdown")
            elif rec.id in self._cancel_soon:
                self._cancel_soon.discard(rec.id)
                slot.cancel("cancel")
            if slot.reason is not None:
                # cancelled before it started: the function is not called at all (a
                # body that never awaits would run to its end in a cancelled scope). The
                # scope is cancelled, so the series ends and records the attempt by its
                # reason.
                del self._active[rec.id]
                return None
        args, kwargs = rec.args, rec.kwargs
        if (args or kwargs) and self._detach_args:
            # the in-process store hands out its own lists and dicts: a task that changes
            # its arguments must not change the stored ones (a retry or a replay would
            # see the change), as with a store that decodes them afresh
            args, kwargs = detached(args), detached(kwargs)
        ctx_token = _current.set(active)
        result: Any = None
        failure: BaseException | None = None
        deadline: anyio.CancelScope | None = None
        try:
            if rec.timeout is not None:
                with anyio.fail_after(rec.timeout) as deadline:
                    result = await self._call(defn, args, kwargs)
            elif defn.is_async:
                result = await defn.fn(*args, **kwargs)
            else:
                result = await self._call(defn, args, kwargs)
        except anyio.get_cancelled_exc_class() as exc:
            if slot.scope.cancel_called or anyio.current_effective_deadline() == -math.inf:
                raise  # our cancel (the series records it) or the manager's teardown
            # nobody cancelled us: the task raised it itself (on asyncio, awaiting a
            # future that something else cancelled). A task error like any other.
            failure = exc
        except _InterruptInThread as exc:
            failure = exc.error
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a task's error never kills the runtime
            failure = exc
        finally:
            _current.reset(ctx_token)
            newer = self._active.pop(rec.id, slot)
            if newer is not slot:  # a newer attempt replaced us: it stays
                self._active[rec.id] = newer
        slot.record = slot.active = None
        if slot.reason == "cancel":
            # tm.cancel() was asked while the call ran, and the task caught the
            # cancellation and returned, or raised something else: the cancel stands (not
            # a success, and never a retry that would run the task again), as a timeout
            # the task swallows is still a timeout
            self._finish(rec, self._outcome(rec, "cancel", None, None, active))
            return None
        if (
            failure is None
            and deadline is not None
            and deadline.cancel_called
            and slot.reason is None
        ):
            # its timeout ran out, and the task caught the cancellation and returned
            # (``except CancelledError: return partial``): still a timeout, a failure
            # (retried), as with a task that let the cancellation through. Not when the
            # attempt was cancelled too (tm.cancel, shutdown, a lost lease): a retry
            # would run a task its cancel was asked for again.
            failure = TimeoutError(
                f"timed out after {rec.timeout:g}s (the task caught the cancellation and returned)"
            )
            result = None
        if failure is not None or result is not None or active._logs or active.dropped:
            # a timeout of its own, not a TimeoutError the task raised itself
            timed_out = deadline is not None and deadline.cancel_called
            reason = "timeout" if timed_out else None
            self._finish(rec, self._outcome(rec, reason, result, failure, active))
            return None
        # a plain success: what _outcome makes of it, without its other cases
        store = self._inline_store
        if store is not None:
            # the hot path of _outcome + _finish: in the store at once
            self._occupied -= 1
            ended = self.clock.now()
            if store.succeed_now(rec, active.token, ended):
                if self._waiters:
                    self._wake_waiter(rec.id)
                if self.events.active:
                    self._publish("finished", rec, TaskStatus.SUCCESS, None, ended)
            if self._changed is not None:
                self._fire_changed()
            return ended
        self._finish(rec, Outcome(rec.id, active.token, _SUCCESS, self.clock.now(), seq=rec.seq))
        return None

    async def _ran_elsewhere(self, name: str, since: float) -> bool:
        """Whether an instance sharing the store has run a task named ``name`` (it ended
        with a success, or an error of its own) since ``since``: one that has the task
        lives, it was only busy while this one handed the task back. Read at most every
        5 s per name."""
        now = self.clock.time()
        checked = self._ran_checked.get(name)
        if checked is None or now - checked[0] >= 5.0:
            query = TaskQuery(
                name=name, statuses=frozenset({_SUCCESS, TaskStatus.FAILED}), limit=20
            )
            try:
                # shielded: a cancellation (the manager torn down) must not end the worker
                # here, between claim and outcome, with the record left running and its
                # slot taken; given up after 5 s
                page = await _at_teardown(lambda: self._store.list(query))
            except Exception:  # (the store fails: the task fails as before)
                log.exception("anytask: could not look for runs of task %r", name)
                return False
            ended = [
                to_ts(r.ended_at)
                for r in page.items
                if r.ended_at is not None and r.error_type != _NOT_REGISTERED
            ]
            checked = self._ran_checked[name] = (now, max(ended, default=-math.inf))
        return checked[1] >= since

    async def _not_registered(self, rec: TaskRecord) -> Outcome:
        """The outcome of a claimed task whose name this process has not registered.

        With a store that other processes share, one of them may have it (a rolling
        upgrade that adds a task; a plain function, registered at its first use, whose
        tasks were left pending at a restart), so the task is handed back, its attempt
        not counted, and claimed again after a growing wait (1 s, then a quarter of the
        time it has waited, at most 10 s), until it has waited ``unregistered_grace``
        seconds. Then,
        or at once with an in-process store, it fails (a dead letter, replayable)."""
        now = self.clock.time()
        ended = from_ts(now)
        # the first hand-back left a log line (a claim keeps logs, not end times): the
        # wait counts from it, as long as the task has been handed back ever since
        since = [
            line["ts"]
            for line in rec.logs
            if "unregistered_in" in line and isinstance(line.get("ts"), int | float)
        ]
        waiting_since = min(min(since), now) if since and rec.error_type == _NOT_REGISTERED else now
        waited = now - waiting_since
        if self._store.shared and (
            waited < self.unregistered_grace
            # the grace ran out, but an instance that has the task ran others of its name
            # meanwhile, and lately: it was busy (this one, idle, kept claiming them
            # first), not gone. Once it is gone, the task fails that long after its last
            # run (without "lately", a task handed back before that run would never fail)
            or await self._ran_elsewhere(
                rec.name, max(waiting_since, now - max(self.unregistered_grace, 10.0))
            )
        ):
            if rec.name not in self._unknown_names:
                self._unknown_names.add(rec.name)
                log.warning(
                    "anytask: task %r is not registered in this process; its tasks are handed "
                    "back for an instance that has it (for up to %gs, then they fail)",
                    rec.name,
                    self.unregistered_grace,
                )
            # short waits at first (the instance that has it is likely just busy, or
            # lost the race for the claim), longer ones while nobody takes it
            wait = min(max(waited / 4, 1.0), 10.0, max(self.unregistered_grace - waited, 1.0))
            logs = None
            if waited == 0:
                logs = [
                    *rec.logs,
                    {
                        "ts": now,
                        "level": "warning",
                        "msg": f"task {rec.name!r} is not registered in this instance; "
                        "handed back for an instance that has it",
                        "unregistered_in": self.instance_id,
                    },
                ]
            return Outcome(
                rec.id,
                rec.token,
                TaskStatus.PENDING,
                seq=rec.seq,
                ended_at=ended,
                run_after=from_ts(now + wait),
                logs=logs,
                error=(
                    f"task {rec.name!r} is not registered in instance {self.instance_id}; "
                    "waiting for an instance that has it"
                ),
                error_type=_NOT_REGISTERED,
                attempts=rec.attempts - 1,
            )
        if self._store.shared:
            error = (
                f"task {rec.name!r} is not registered in this process, and no instance "
                f"sharing the store ran it within {self.unregistered_grace:g}s"
            )
        else:
            error = f"task {rec.name!r} is not registered in this process"
        failure_log.error("anytask: task %s (%s) failed: %s", rec.name, rec.id, error)
        return Outcome(
            rec.id,
            rec.token,
            TaskStatus.FAILED,
            seq=rec.seq,
            ended_at=ended,
            error=error,
            error_type=_NOT_REGISTERED,
            logs=list(rec.logs),  # (an in-process record may hold a tuple: see NO_ITEMS)
        )

    def _finish(self, rec: TaskRecord, out: Outcome | None) -> None:
        """An attempt ended: free its slot and pass its outcome on (to the store at once
        when it lives in this process, else to the writer's next commit)."""
        self._occupied -= 1
        store = self._inline_store
        if store is not None:
            if out is not None:
                store.complete_now((out,))
                self._wake_waiter(rec.id)  # (a retry may have become "cancelled")
                if not out.status.terminal:  # a retry waits for its run_after
                    self._wake_dispatcher()
                if self.events.active:
                    kind = "finished" if out.status.terminal else "retrying"
                    self._publish(kind, rec, out.status, out.error, out.ended_at)
        else:
            if out is not None:
                self._hand_outcome(out, rec)
            if not self._writer_will_claim():  # else the writer wakes it after
                self._wake_dispatcher()
        self._fire_changed()

    async def _call(
        self, defn: TaskDefinition, args: builtins.list[Any], kwargs: dict[str, Any]
    ) -> Any:
        if defn.is_async:
            return await defn.fn(*args, **kwargs)
        fn = defn.fn
        assert self._thread_limiter is not None
        assert self._token is not None
        # daemon threads: an abandoned sync task never keeps the process alive (_threads.py)

        made: builtins.list[Any] = []  # a coroutine the call returned (see below)

        def call() -> Any:
            try:
                result = fn(*args, **kwargs)
            except KeyboardInterrupt as exc:
                # raised by the task's own code: no Ctrl-C is ever delivered to this
                # thread, so it is the task's error, not the process being interrupted
                return _InterruptInThread(exc)
            if inspect.iscoroutine(result):
                made.append(result)
            return result

        def close_made() -> None:
            # the attempt was abandoned (a timeout, a cancel): the coroutine the call
            # returned, or returns later, is never run; closed, it does not warn that it
            # was never awaited
            while made:
                made.pop().close()

        def abandoned() -> Callable[[], None]:
            release = self._hold_slot()

            def ended() -> None:
                close_made()
                release()

            return ended

        try:
            result = await run_in_daemon_thread(
                call,
                limiter=self._thread_limiter,
                token=self._token,
                on_abandoned=abandoned,
            )
        except BaseException:
            close_made()
            raise
        made.clear()
        if type(result) is _InterruptInThread:
            raise result
        if inspect.iscoroutine(result):
            # a plain function that hands back a coroutine: an async function behind a
            # sync decorator (functools.wraps), a lambda calling one. Its work is that
            # coroutine, run here in the event loop; dropped, the task would be recorded
            # a success whose body never ran.
            result = await result
        return result

    def _outcome(
        self,
        rec: TaskRecord,
        reason: str | None,
        result: Any,
        failure: BaseException | None,
        active: _Active,
    ) -> Outcome | None:
        now = self.clock.time()
        ended = from_ts(now)
        # the full log list when this attempt adds lines, else None (the stored one stays)
        logs = [*rec.logs, *active.logs] if active.has_logs else None
        if active.dropped:
            dropped = f"{active.dropped} log lines dropped"
            logs = logs if logs is not None else list(rec.logs)
            logs.append({"ts": now, "level": "warning", "msg": dropped})

        # what the store holds of one outcome field (see Store.max_record_bytes)
        limit = self._store.max_record_bytes
        budget = None if limit is None else limit // 8

        def made(status: TaskStatus, **fields: Any) -> Outcome:
            kept = logs
            if budget is not None and kept is not None:
                kept = _fit_logs(kept, budget, now)
            return Outcome(
                rec.id, active.token, status, seq=rec.seq, ended_at=ended, logs=kept, **fields
            )

        if reason == "lease":
            return None  # another instance owns it now; our write would be refused anyway
        if reason == "cancel":
            return made(
                TaskStatus.CANCELLED,
                error="cancelled",
                error_type="Cancelled",
            )
        if reason == "shutdown":
            if rec.requeue_on_interrupt:
                return made(
                    TaskStatus.PENDING,
                    run_after=ended,
                    error="requeued: interrupted by shutdown",
                    error_type="Interrupted",
                )
            return made(
                TaskStatus.INTERRUPTED,
                error="interrupted by shutdown before it finished",
                error_type="Interrupted",
            )
        if failure is None:
            if result is not None:
                try:
                    size = check_json(result, f"the result of {rec.name}")
                    if budget is not None and size > budget:
                        size = json_size(result)  # (the bound is past it: measure)
                        if size > budget:
                            raise PayloadError(
                                f"the result of {rec.name} takes {size:,} bytes as JSON, "
                                f"more than the store keeps of a result ({budget:,})"
                            )
                except PayloadError as exc:
                    logs = logs if logs is not None else list(rec.logs)
                    logs.append({"ts": now, "level": "warning", "msg": f"result not stored: {exc}"})
                    result = None
                else:
                    if type(result) is list or type(result) is dict:
                        # as it was at the return: the outcome is written later, and the
                        # task's code may go on changing what it returned
                        result = cloned(result)
            return made(TaskStatus.SUCCESS, result=result)
        error_type = clean_text(type(failure).__qualname__)
        if reason == "timeout" and rec.timeout is not None:
            message = _safe_str(failure) or f"timed out after {rec.timeout:g}s"
        else:
            message = _safe_str(failure)
        trace = _safe_traceback(failure)
        if budget is not None:
            message, trace = _cut(message, budget), _cut(trace, budget)
        if rec.attempts < rec.max_attempts:
            defn = self.registry.get(rec.name)
            opts = defn.options if defn is not None else TaskOptions()
            wait = opts.retry_wait(rec.attempts, random.random())
            logs = logs if logs is not None else list(rec.logs)
            logs.append(
                {
                    "ts": now,
                    "level": "warning",
                    "attempt": rec.attempts,
                    "msg": f"attempt {rec.attempts} failed ({error_type}); retrying in {wait:.3g}s",
                }
            )
            failure_log.info(
                "anytask: task %s (%s) attempt %d of %d failed (%s: %s); retrying in %.3gs",
                rec.name,
                rec.id,
                rec.attempts,
                rec.max_attempts,
                error_type,
                _cut(message, 1000),
                wait,
            )
            return made(
                TaskStatus.PENDING,
                run_after=from_ts(now + wait),
                error=message,
                error_type=error_type,
                traceback=trace,
            )
        # once per task, with its traceback (never its arguments: they may hold personal
        # data); a retry above is only a line at INFO
        failure_log.error(
            "anytask: task %s (%s) failed after %d attempt(s): %s: %s",
            rec.name,
            rec.id,
            rec.attempts,
            error_type,
            _cut(message, 1000),
            exc_info=failure,
        )
        return made(
            TaskStatus.FAILED,
            error=message,
            error_type=error_type,
            traceback=trace,
        )

    # ------------------------------------------------------------------ heartbeat
    async def _purge_old(self) -> None:
        """Delete ended tasks older than the retention periods, at start and then every
        tenth of the shorter period (at least every minute). On a shared store, in small
        transactions (a group commit waits for one of them at most); an in-process store
        does it in one pass over its records. After a failure, the next try waits twice
        as long as the last (at most a minute)."""
        rules = [
            (age, statuses)
            for age, statuses in (
                (self.retention, _KEPT_STATUSES),
                (self.dead_retention, DEAD),
            )
            if age is not None
        ]
        interval = min(max(min(age for age, _ in rules) / 10, 0.05), 60.0)
        limit = PURGE_BATCH if self._store.shared else None
        wait = interval
        while True:
            failed = False
            for age, statuses in rules:
                try:
                    await self._purge_rule(age, statuses, limit)
                except Exception:
                    failed = True
                    log.exception("anytask: deleting old tasks failed; trying again later")
            wait = min(max(wait * 2, 1.0), 60.0) if failed else interval
            await anyio.sleep(wait)

    async def _purge_rule(
        self, age: float, statuses: frozenset[TaskStatus], limit: int | None
    ) -> None:
        cutoff = self.clock.time() - age
        if cutoff <= 0:
            return  # (nothing ended before 1970)
        before = from_ts(cutoff)
        total = await purge_in_batches(self._store, before, statuses, limit)
        if total:
            log.info(
                "anytask: deleted %d %s task(s) that ended before %s",
                total,
                "/".join(sorted(s.value for s in statuses)),
                before.isoformat(),
            )

    def _held(self) -> set[str]:
        """The tasks whose leases this instance renews: those it runs or has claimed, and
        those whose outcome is on its way to the store."""
        held = {*self._active, *self._claimed}
        held.update(out.id for out, _ in self._outcomes)
        held.update(out.id for out, _ in self._outs_writing)
        return held

    async def _heartbeat(self) -> None:
        interval = max(self.lease / 3, 0.01)
        # the wall clock (lease times) against the event loop's (the heartbeat's period):
        # a forward step of the wall clock (an NTP step, a VM resumed) makes every lease
        # look expired until its owner's next heartbeat, so recovery waits one period
        # after a step, in which every live instance (which saw the step too) renews
        last_wall, last_loop = self.clock.time(), anyio.current_time()
        # recovery is never put off round after round: a store whose every write takes
        # more than half a period (a slow disk, a busy event loop, steady lock contention)
        # or a clock that keeps running ahead of the loop's would postpone recovering a
        # dead instance's tasks forever. A blocked write skips a round only after one that
        # recovered; a step, unless the round before skipped for a step too
        skipped: str | None = None
        while True:
            await anyio.sleep(interval)
            try:
                now = self.clock.time()
                loop_now = anyio.current_time()
                stepped = (now - last_wall) - (loop_now - last_loop) > interval / 4
                last_wall, last_loop = now, loop_now
                # only what this instance holds: tasks left in its name by an earlier
                # process with the same (fixed) instance id must run out and be recovered
                held = self._held()
                hb = await self._store.heartbeat(self.instance_id, from_ts(now + self.lease), held)
                blocked = anyio.current_time() - loop_now > interval / 2
                if blocked:
                    # the write waited (for another connection's lock, for the writer
                    # thread): the lease it wrote counts from before the wait and may have
                    # run out already (the recover below would take our own tasks), and
                    # the other instances' heartbeats waited as well: renew again, and
                    # give them a beat to renew before recovering anything. ``now`` stays
                    # the time ``held`` was first taken at: the lost-lease check below
                    # counts on it (a task whose claim was still in flight, as one queued
                    # behind this write, is in neither set, and started after it)
                    held |= self._held()  # also those claimed meanwhile
                    hb = await self._store.heartbeat(
                        self.instance_id, from_ts(self.clock.time() + self.lease), held
                    )
                for task_id, slot in list(self._active.items()):
                    active = slot.active
                    if slot.reason is not None or active is None:
                        continue
                    if task_id in hb.cancel_requested:
                        slot.cancel("cancel")
                    elif (
                        task_id not in hb.held
                        and active.started_at is not None
                        and (to_ts(active.started_at) < now - interval)
                    ):
                        log.warning("anytask: lost the lease of task %s; abandoning it", task_id)
                        slot.cancel("lease")
                if (stepped and skipped != "step") or (blocked and skipped is None):
                    if stepped:
                        log.warning("anytask: the wall clock stepped forward; recovery waits")
                    skipped = "step" if stepped else "blocked"
                    continue
                skipped = None
                recovered = await self._store.recover(from_ts(self.clock.time()))
                if recovered.requeued:
                    self._wake_dispatcher()
                if recovered.interrupted or recovered.cancelled:
                    self._notify_terminal(recovered.interrupted + recovered.cancelled)
            except Exception:
                log.exception("anytask: heartbeat failed; retrying")
