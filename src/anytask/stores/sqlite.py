"""A store in one SQLite file: the embedded default (``TaskManager(snapshot_db=path)``).

Built on the standard library's :mod:`sqlite3` (``aiosqlite`` does not run under trio):

* one *writer* connection, used by a thread the store owns (:class:`SerialThread`); every
  write is one ``BEGIN IMMEDIATE`` transaction, and a batch (``insert``, ``complete``,
  ``write_batch``) is one transaction of multi-row statements;
* a small pool of *reader* connections (``PRAGMA query_only``) for the async reads and
  for the synchronous :meth:`SQLiteStore.get`, which works from any thread;
* WAL journal, ``STRICT`` tables, timestamps as REAL epoch seconds, payloads as JSON text
  (never pickle), and a schema version in ``anytask_meta`` checked on open.

Several processes on one host may share one file: a claim is a single
``UPDATE ... RETURNING`` inside ``BEGIN IMMEDIATE``, so two claimers never take the same
task. Failures surface as the typed errors of :mod:`anytask._errors`.
"""

from __future__ import annotations

import builtins
import functools
import operator
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, cast

import anyio
import anyio.to_thread

from .._clock import from_ts, to_ts
from .._codec import dumps, loads
from .._errors import (
    ConfigurationError,
    SchemaVersionError,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    StoreReadOnlyError,
)
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
)
from .._threads import SerialThread
from .abc import (
    BatchResult,
    HeartbeatResult,
    RecoveryResult,
    Store,
    metrics_buckets,
    purge_filter,
)

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

T = TypeVar("T")

#: Version of the schema this module writes. A file with a higher version is refused.
SCHEMA_VERSION = 3
_MIN_SQLITE = (3, 37, 0)  # STRICT tables (3.37), RETURNING (3.35), json_each built in
_HEADER = b"SQLite format 3\x00"
_MAX_IDLE_READERS = 4
#: Of SQLite's limit on the bytes of one row (SQLITE_LIMIT_LENGTH, 1e9 by default), what
#: is kept for the columns the manager does not count against ``max_record_bytes``: the
#: id, the name, timestamps, the error type, the row's header (at most a sixteenth of a
#: lower limit).
_ROW_SLACK = 1 << 20
_SYNCHRONOUS = ("NORMAL", "FULL", "EXTRA")
_METRICS_EXACT = 20_000  # metrics percentiles are exact up to this many tasks
_METRICS_WHOLE = 1_000  # beyond it, names with at most this many are still counted whole

_BUSY, _LOCKED, _READONLY, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 6, 8, 11, 13, 14, 26

_COLUMNS = (
    "seq",
    "id",
    "name",
    "args",
    "kwargs",
    "created_at",
    "run_after",
    "status",
    "priority",
    "tags",
    "idempotency_key",
    "started_at",
    "ended_at",
    "attempts",
    "max_attempts",
    "timeout",
    "requeue_on_interrupt",
    "error",
    "error_type",
    "traceback",
    "result",
    "logs",
    "schedule_id",
    "fire_at",
    "owner",
    "lease_expires_at",
    "token",
    "cancel_requested",
    "replay_of",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM anytask_tasks"
_INSERT_HEAD = f"INSERT INTO anytask_tasks ({', '.join(_COLUMNS[1:])}) VALUES "
_INSERT_ROW = f"({', '.join('?' * (len(_COLUMNS) - 1))})"
#: A new record (pending, never run, no outcome, no logs: what ``add_task`` makes) is
#: inserted with only the columns a new record varies in, the rest as literals or NULL.
#: Binding half as many parameters makes the insert about a third cheaper.
_FRESH_COLUMNS = (
    "id",
    "name",
    "args",
    "kwargs",
    "created_at",
    "run_after",
    "priority",
    "tags",
    "idempotency_key",
    "max_attempts",
    "timeout",
    "requeue_on_interrupt",
    "schedule_id",
    "fire_at",
    "replay_of",
)
_FRESH_LITERALS = {
    "status": "'pending'",
    "attempts": "0",
    "logs": "'[]'",
    "token": "0",
    "cancel_requested": "0",
}
_FRESH_HEAD = (
    f"INSERT INTO anytask_tasks ({', '.join(_FRESH_COLUMNS + tuple(_FRESH_LITERALS))}) VALUES "
)
_FRESH_ROW = f"({', '.join(['?'] * len(_FRESH_COLUMNS) + list(_FRESH_LITERALS.values()))})"
#: A batch of new records none of which has an idempotency key, a schedule fire or a
#: replay link (what plain ``add_task`` calls make) leaves those columns out as well, to
#: be NULL: each parameter a row binds costs SQLite about a quarter of a microsecond.
_PLAIN_OMITTED = ("idempotency_key", "schedule_id", "fire_at", "replay_of")
_PLAIN_COLUMNS = tuple(c for c in _FRESH_COLUMNS if c not in _PLAIN_OMITTED)
#: a fresh row's parameters (_fresh_params) -> its plain row's
_plain_values = operator.itemgetter(*(_FRESH_COLUMNS.index(c) for c in _PLAIN_COLUMNS))
_PLAIN_HEAD = (
    f"INSERT INTO anytask_tasks ({', '.join(_PLAIN_COLUMNS + tuple(_FRESH_LITERALS))}) VALUES "
)
_PLAIN_ROW = f"({', '.join(['?'] * len(_PLAIN_COLUMNS) + list(_FRESH_LITERALS.values()))})"
#: Rows per multi-row statement (inserts: at most 28 parameters a row, far below SQLite's
#: limit of 32766).
_CHUNK = 64
#: The condition of the partial index of ended tasks (pending and running rows, the ones
#: that change all the time, stay out of it; their own partial indexes cover them).
_FINISHED = "status NOT IN ('pending', 'running')"
#: The condition of the partial index of delayed tasks: pending, and not due when created
#: (a delay, a run_at, a retry's backoff, a requeue). Tasks due at once stay out of it, so
#: that most inserts and claims do not touch it.
_DELAYED = "status = 'pending' AND run_after > created_at"
#: integrity_check option -> the PRAGMA that opening runs (None: header and schema only)
_INTEGRITY_CHECKS = {"quick": "quick_check", "full": "integrity_check", "off": None}
_STATUSES = ", ".join(f"'{s.value}'" for s in TaskStatus)
_TERMINAL_SQL = ", ".join(f"'{s.value}'" for s in sorted(TERMINAL, key=lambda s: s.value))

_SCHEMA = f"""
CREATE TABLE anytask_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE anytask_tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    args TEXT NOT NULL,
    kwargs TEXT NOT NULL,
    created_at REAL NOT NULL,
    run_after REAL NOT NULL,
    status TEXT NOT NULL CHECK (status IN ({_STATUSES})),
    priority INTEGER NOT NULL,
    tags TEXT NOT NULL,
    idempotency_key TEXT,
    started_at REAL,
    ended_at REAL,
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    timeout REAL,
    requeue_on_interrupt INTEGER NOT NULL,
    error TEXT,
    error_type TEXT,
    traceback TEXT,
    result TEXT,
    logs TEXT NOT NULL,
    schedule_id TEXT,
    fire_at REAL,
    owner TEXT,
    lease_expires_at REAL,
    token INTEGER NOT NULL,
    cancel_requested INTEGER NOT NULL,
    replay_of TEXT
) STRICT;

CREATE UNIQUE INDEX anytask_tasks_idempotency_key ON anytask_tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX anytask_tasks_fire ON anytask_tasks (schedule_id, fire_at)
    WHERE schedule_id IS NOT NULL AND fire_at IS NOT NULL;
CREATE INDEX anytask_tasks_due ON anytask_tasks (priority DESC, seq, run_after)
    WHERE status = 'pending';
CREATE INDEX anytask_tasks_delayed ON anytask_tasks (run_after)
    WHERE {_DELAYED};
CREATE INDEX anytask_tasks_owner ON anytask_tasks (owner)
    WHERE status = 'running';
CREATE INDEX anytask_tasks_finished ON anytask_tasks (status, seq)
    WHERE {_FINISHED};
CREATE INDEX anytask_tasks_name ON anytask_tasks (name, seq);
CREATE INDEX anytask_tasks_replay ON anytask_tasks (replay_of)
    WHERE replay_of IS NOT NULL;
CREATE INDEX anytask_tasks_ended ON anytask_tasks (ended_at, status, name, started_at, seq)
    WHERE ended_at IS NOT NULL;

CREATE TABLE anytask_schedules (
    schedule_id TEXT PRIMARY KEY,
    last_fire_at REAL,
    paused INTEGER NOT NULL
) STRICT;
"""

#: Every index of the schema, by name: its CREATE statement (words joined by one space,
#: as :meth:`SQLiteStore._repair_indexes` compares it with the one stored in the file).
_INDEXES = {
    words[words.index("INDEX") + 1]: " ".join(words)
    for words in (statement.split() for statement in _SCHEMA.split(";"))
    if "INDEX" in words[:3]
}

#: Schema upgrades, by the version they start from (run in order, in the opening
#: transaction).
#: 1 -> 2: the indexes that every state change touched are gone: (status, seq) now covers
#: ended tasks only, and recovery scans the running rows through the owner index.
#: 2 -> 3: the index of pending tasks by run_after covers delayed ones only.
_MIGRATIONS = {
    1: f"""
DROP INDEX IF EXISTS anytask_tasks_status;
DROP INDEX IF EXISTS anytask_tasks_lease;
CREATE INDEX IF NOT EXISTS anytask_tasks_finished ON anytask_tasks (status, seq)
    WHERE {_FINISHED};
""",
    2: f"""
DROP INDEX IF EXISTS anytask_tasks_run_after;
CREATE INDEX IF NOT EXISTS anytask_tasks_delayed ON anytask_tasks (run_after)
    WHERE {_DELAYED};
""",
}

_CLAIM = """
UPDATE anytask_tasks
SET status = 'running', owner = ?, lease_expires_at = ?, started_at = ?, ended_at = NULL,
    attempts = attempts + 1, token = token + 1, cancel_requested = 0
WHERE seq IN (
    SELECT seq FROM anytask_tasks INDEXED BY anytask_tasks_due
    WHERE status = 'pending' AND run_after <= ?
    ORDER BY priority DESC, seq ASC
    LIMIT ?
)
RETURNING seq, id, token, attempts
"""
#: The claimed rows read in full (those the store cannot build from its own memory, see
#: SQLiteStore._inserted_here), by their seq, in the claim's transaction.
_SELECT_SEQS = f"{_SELECT} WHERE seq IN (SELECT value FROM json_each(?))"
_DELETE_SEQS = "DELETE FROM anytask_tasks WHERE seq IN (SELECT value FROM json_each(?))"
#: A purge with a limit reads at most this many rows (or its limit) a transaction.
_PURGE_WINDOW = 500
#: Where a purge goes on: after the row (ended_at, seq), the rows left of its end time
#: being those up to the last seq (of the purge's statuses) that ended then; after every
#: row that ended at ended_at when seq is that last one.
_PurgeCursor = tuple[float, int, int]
#: How many records inserted here and not claimed yet the store remembers. Past this it
#: forgets them all (records claimed by another process would otherwise stay forever);
#: claims of forgotten records read them in full, as claims of any other record do.
_HERE_MAX = 20_000
#: Records whose args, kwargs and tags take more JSON text than this are not remembered
#: (with the cap above, the memory this takes stays within about 20 MB).
_HERE_PAYLOAD = 512
#: Timestamps below this round-trip exactly through a REAL column (microseconds survive
#: the float), so a remembered datetime equals the one read back.
_EXACT_TS = 3.0e9

_COMPLETE_FINAL = """
UPDATE anytask_tasks
SET status = ?, owner = NULL, lease_expires_at = NULL, cancel_requested = 0,
    logs = coalesce(?, logs), error = ?, error_type = ?, traceback = ?,
    ended_at = ?, result = ?
WHERE {key} AND token = ? AND status = 'running'
"""

#: A pending outcome (a retry, a requeue, a hand-back) of a task whose cancel was
#: requested meanwhile (by another instance) ends it cancelled instead.
_COMPLETE_RETRY = """
UPDATE anytask_tasks
SET status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'pending' END,
    owner = NULL, lease_expires_at = NULL, cancel_requested = 0,
    logs = coalesce(?, logs),
    error = CASE WHEN cancel_requested THEN 'cancelled' ELSE ? END,
    error_type = CASE WHEN cancel_requested THEN 'Cancelled' ELSE ? END,
    traceback = ?,
    ended_at = ?,
    run_after = CASE WHEN cancel_requested THEN run_after ELSE coalesce(?, run_after) END,
    attempts = coalesce(?, attempts)
WHERE {key} AND token = ? AND status = 'running'
"""
#: Final outcomes of many rows in one statement: each VALUES row holds the parameters of
#: _COMPLETE_FINAL_SEQ, in its order (status, logs, error, error_type, traceback, ended_at,
#: result, seq, id, token).
_COMPLETE_FROM = """
UPDATE anytask_tasks
SET status = v.column1, owner = NULL, lease_expires_at = NULL, cancel_requested = 0,
    logs = coalesce(v.column2, anytask_tasks.logs), error = v.column3, error_type = v.column4,
    traceback = v.column5, ended_at = v.column6, result = v.column7
FROM (VALUES {values}) AS v
WHERE anytask_tasks.seq = v.column8 AND anytask_tasks.id = v.column9
    AND anytask_tasks.token = v.column10 AND anytask_tasks.status = 'running'
RETURNING anytask_tasks.seq, anytask_tasks.id
"""


#: The most common outcome, a success with no log lines, binds only what varies: its
#: parameters are (ended_at, result, seq, id, token).
_SUCCEED_SEQ = """
UPDATE anytask_tasks
SET status = 'success', owner = NULL, lease_expires_at = NULL, cancel_requested = 0,
    error = NULL, error_type = NULL, traceback = NULL, ended_at = ?, result = ?
WHERE seq = ? AND id = ? AND token = ? AND status = 'running'
"""
_SUCCEED_FROM = """
UPDATE anytask_tasks
SET status = 'success', owner = NULL, lease_expires_at = NULL, cancel_requested = 0,
    error = NULL, error_type = NULL, traceback = NULL, ended_at = v.column1,
    result = v.column2
FROM (VALUES {values}) AS v
WHERE anytask_tasks.seq = v.column3 AND anytask_tasks.id = v.column4
    AND anytask_tasks.token = v.column5 AND anytask_tasks.status = 'running'
RETURNING anytask_tasks.seq, anytask_tasks.id
"""


@functools.cache
def _multi_complete(n: int, single: str, returning: bool = True) -> str:
    if single is _SUCCEED_SEQ:
        sql = _SUCCEED_FROM.format(values=", ".join(["(?, ?, ?, ?, ?)"] * n))
    else:
        sql = _COMPLETE_FROM.format(values=", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * n))
    return sql if returning else sql[: sql.index("RETURNING")]


# an outcome that knows its record's seq finds the row by its rowid (no lookup in the id
# index); the id must match too
_BY_SEQ, _BY_ID = "seq = ? AND id = ?", "id = ?"
_COMPLETE_FINAL_SEQ = _COMPLETE_FINAL.format(key=_BY_SEQ)
_COMPLETE_FINAL_ID = _COMPLETE_FINAL.format(key=_BY_ID)
_COMPLETE_RETRY_SEQ = _COMPLETE_RETRY.format(key=_BY_SEQ)
_COMPLETE_RETRY_ID = _COMPLETE_RETRY.format(key=_BY_ID)

_RECOVER = """
UPDATE anytask_tasks INDEXED BY anytask_tasks_owner
SET owner = NULL, lease_expires_at = NULL, cancel_requested = 0,
    status = CASE WHEN cancel_requested THEN 'cancelled'
        WHEN requeue_on_interrupt THEN 'pending' ELSE 'interrupted' END,
    run_after = CASE WHEN requeue_on_interrupt AND NOT cancel_requested THEN ?1
        ELSE run_after END,
    ended_at = CASE WHEN requeue_on_interrupt AND NOT cancel_requested THEN ended_at
        ELSE ?1 END,
    error_type = CASE WHEN cancel_requested THEN 'Cancelled'
        WHEN requeue_on_interrupt THEN error_type ELSE 'Interrupted' END,
    error = CASE WHEN cancel_requested THEN 'cancelled'
        WHEN requeue_on_interrupt THEN error ELSE ?2 END
WHERE status = 'running' AND lease_expires_at < ?1
RETURNING id, status
"""
_RECOVER_ERROR = "the instance running this task stopped before it finished"
_LEFT_PENDING_ERROR = "left pending by an earlier run (requeue_pending=False)"

_CANCEL = """
UPDATE anytask_tasks
SET status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END,
    ended_at = CASE WHEN status = 'pending' THEN ?2 ELSE ended_at END,
    cancel_requested = CASE WHEN status = 'running' THEN 1 ELSE cancel_requested END
WHERE id = ?1
RETURNING status, seq
"""

_SAVE_SCHEDULE = """
INSERT INTO anytask_schedules (schedule_id, last_fire_at, paused) VALUES (?, ?, ?)
ON CONFLICT (schedule_id) DO UPDATE SET
    last_fire_at = CASE
        WHEN anytask_schedules.last_fire_at IS NULL THEN excluded.last_fire_at
        WHEN excluded.last_fire_at IS NULL THEN anytask_schedules.last_fire_at
        ELSE max(anytask_schedules.last_fire_at, excluded.last_fire_at)
    END,
    paused = excluded.paused
"""


def _ts(value: datetime | None) -> float | None:
    return None if value is None else to_ts(value)


def _dt(value: float | None) -> datetime | None:
    return None if value is None else from_ts(value)


def _load(text: str) -> Any:
    # the empty payloads most records carry, without a trip through the decoder
    if text == "[]":
        return []
    if text == "{}":
        return {}
    return loads(text)


def _dump_list(values: Sequence[Any]) -> str:
    return dumps(list(values)) if values else "[]"


_STATUS = {s.value: s for s in TaskStatus}


def _row_to_record(row: Sequence[Any], times: dict[float, datetime] | None = None) -> TaskRecord:
    """A record from a row of ``_COLUMNS``. ``times`` caches timestamps already turned
    into datetimes (the rows of one claim share their start and lease times, and most
    records were due when created)."""
    (
        seq,
        task_id,
        name,
        args,
        kwargs,
        created_at,
        run_after,
        status,
        priority,
        tags,
        idempotency_key,
        started_at,
        ended_at,
        attempts,
        max_attempts,
        timeout,
        requeue_on_interrupt,
        error,
        error_type,
        traceback,
        result,
        logs,
        schedule_id,
        fire_at,
        owner,
        lease_expires_at,
        token,
        cancel_requested,
        replay_of,
    ) = row
    if times is None:
        times = {}

    def dt(value: float) -> datetime:
        found = times.get(value)
        if found is None:
            found = times[value] = datetime.fromtimestamp(value, UTC)
        return found

    # positional, in field order (see TaskRecord)
    return TaskRecord(
        task_id,
        name,
        _load(args),
        _load(kwargs),
        dt(created_at),
        dt(run_after),
        _STATUS[status],
        priority,
        _load(tags),
        idempotency_key,
        None if started_at is None else dt(started_at),
        None if ended_at is None else dt(ended_at),
        attempts,
        max_attempts,
        timeout,
        bool(requeue_on_interrupt),
        error,
        error_type,
        traceback,
        None if result is None else loads(result),
        _load(logs),
        schedule_id,
        None if fire_at is None else dt(fire_at),
        owner,
        None if lease_expires_at is None else dt(lease_expires_at),
        token,
        bool(cancel_requested),
        replay_of,
        seq,
    )


def _record_params(rec: TaskRecord) -> tuple[Any, ...]:
    return (
        rec.id,
        rec.name,
        dumps(rec.args) if rec.args else "[]",
        dumps(rec.kwargs) if rec.kwargs else "{}",
        to_ts(rec.created_at),
        to_ts(rec.run_after),
        rec.status.value,
        rec.priority,
        _dump_list(rec.tags),
        rec.idempotency_key,
        _ts(rec.started_at),
        _ts(rec.ended_at),
        rec.attempts,
        rec.max_attempts,
        rec.timeout,
        rec.requeue_on_interrupt,
        rec.error,
        rec.error_type,
        rec.traceback,
        None if rec.result is None else dumps(rec.result),
        _dump_list(rec.logs),
        rec.schedule_id,
        _ts(rec.fire_at),
        rec.owner,
        _ts(rec.lease_expires_at),
        rec.token,
        rec.cancel_requested,
        rec.replay_of,
    )


def _is_fresh(rec: TaskRecord) -> bool:
    """Whether ``rec`` holds nothing beyond the columns of a fresh insert."""
    return (
        rec.status is TaskStatus.PENDING
        and not rec.attempts
        and not rec.token
        and not rec.logs
        and rec.result is None
        and rec.started_at is None
        and rec.ended_at is None
        and rec.error is None
        and rec.error_type is None
        and rec.traceback is None
        and rec.owner is None
        and rec.lease_expires_at is None
        and not rec.cancel_requested
    )


def _fresh_params(rec: TaskRecord) -> tuple[Any, ...]:
    created = to_ts(rec.created_at)
    return (
        rec.id,
        rec.name,
        dumps(rec.args) if rec.args else "[]",
        dumps(rec.kwargs) if rec.kwargs else "{}",
        created,
        # (a task due at once: add_task gives both fields one datetime)
        created if rec.run_after is rec.created_at else to_ts(rec.run_after),
        rec.priority,
        _dump_list(rec.tags),
        rec.idempotency_key,
        rec.max_attempts,
        rec.timeout,
        rec.requeue_on_interrupt,
        rec.schedule_id,
        _ts(rec.fire_at),
        rec.replay_of,
    )


#: A fresh row as inserted (its parameters: its id first) and its ``created_at``,
#: ``run_after`` and ``fire_at`` as a read of the row gives them.
_Here = tuple[tuple[Any, ...], datetime, datetime, "datetime | None"]


class _Inserts(NamedTuple):
    """Encoded rows for :func:`_insert_sync`, all in one of two forms: fresh (only the
    columns of a new record) when every record of the batch is fresh, else full. For
    fresh rows, ``keep`` holds what a claim may build each record from (None: its claim
    reads it in full; see SQLiteStore._inserted_here)."""

    fresh: bool
    rows: list[tuple[Any, ...]]
    keep: list[_Here | None]


def _as_read(value: datetime, ts: float) -> datetime:
    """``value`` as reading back its timestamp ``ts`` gives it: itself when that is
    exact (a plain UTC datetime, not so far off that the float loses microseconds)."""
    if type(value) is datetime and value.tzinfo is UTC and 0.0 <= ts < _EXACT_TS:
        return value
    return from_ts(ts)


_EXACT_INT = 2**53  # ints within this become floats (a REAL column) without rounding


def _keep(rec: TaskRecord, row: tuple[Any, ...]) -> _Here | None:
    """What a claim may build ``rec`` from, or None when a read of its row could give
    other values or types than the record holds (a number stored as another type, NaN,
    a subclass), or when its payload is large."""
    timeout, key, schedule_id, replay_of = row[10], row[8], row[12], row[14]
    if (
        # (tests one by one, most common outcome first: this runs for every new task)
        type(row[0]) is not str
        or type(row[1]) is not str
        or type(row[6]) is not int
        or type(row[9]) is not int
        or type(row[11]) is not bool
        or not (
            timeout is None
            or (type(timeout) is float and timeout == timeout)
            or (type(timeout) is int and -_EXACT_INT < timeout < _EXACT_INT)
        )
        or (key is not None and type(key) is not str)
        or (schedule_id is not None and type(schedule_id) is not str)
        or (replay_of is not None and type(replay_of) is not str)
        or len(row[2]) + len(row[3]) + len(row[7]) > _HERE_PAYLOAD
    ):
        return None
    created_at = _as_read(rec.created_at, row[4])
    return (
        row,
        created_at,
        created_at if rec.run_after is rec.created_at else _as_read(rec.run_after, row[5]),
        None if rec.fire_at is None else _as_read(rec.fire_at, row[13]),
    )


def _encode_inserts(records: Sequence[TaskRecord]) -> _Inserts:
    if all(map(_is_fresh, records)):
        rows = [_fresh_params(rec) for rec in records]
        return _Inserts(True, rows, list(map(_keep, records, rows)))
    return _Inserts(False, [_record_params(rec) for rec in records], [])


def _storable(text: Any) -> bool:
    """Whether ``text`` can be bound as SQLite text. UTF-8 cannot encode a lone surrogate
    (as ``os.fsdecode`` and ``sys.argv`` make of bytes that are not UTF-8), so no stored
    value holds one: a lookup by such a string finds nothing, as in MemoryStore."""
    if type(text) is not str or text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _icontains(haystack: str | None, needle: str) -> bool:
    # Python's lower() (Unicode-aware), as in TaskQuery.matches; SQLite's is ASCII-only
    return haystack is not None and needle in haystack.lower()


def _where(query: TaskQuery, *, paged: bool) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if paged and query.cursor is not None:
        clauses.append("seq < ?")
        params.append(query.cursor)
    if query.statuses is not None:
        # literals (enum values), not parameters: the planner can then match the partial
        # index of ended tasks, whose condition is repeated word for word
        statuses = sorted(s.value for s in query.statuses)
        clauses.append(f"status IN ({', '.join(repr(v) for v in statuses)})")
        if statuses and not {"pending", "running"} & set(statuses):
            clauses.append(_FINISHED)
    if query.name is not None:
        clauses.append("name = ?")
        params.append(query.name)
    if query.tag is not None:
        clauses.append("EXISTS (SELECT 1 FROM json_each(anytask_tasks.tags) WHERE value = ?)")
        params.append(query.tag)
    if query.schedule_id is not None:
        clauses.append("schedule_id = ?")
        params.append(query.schedule_id)
    if query.replay_of is not None:
        clauses.append("replay_of = ?")
        params.append(query.replay_of)
    if query.created_after is not None:
        clauses.append("created_at >= ?")
        params.append(to_ts(query.created_after))
    if query.created_before is not None:
        clauses.append("created_at < ?")
        params.append(to_ts(query.created_before))
    if query.search:
        needle = query.search.lower()
        clauses.append("(anytask_icontains(name, ?) OR anytask_icontains(error, ?))")
        params.extend((needle, needle))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _sum_by_name(series: Sequence[Sequence[Any]]) -> dict[str, int]:
    """The timed tasks per name in the rows of the metrics series query."""
    out: dict[str, int] = {}
    for row in series:
        out[row[1]] = out.get(row[1], 0) + row[5]
    return out


def _chunks(total: int) -> list[tuple[int, int]]:
    """``(start, size)`` pieces of ``total`` rows: full chunks of ``_CHUNK``, then the
    rest in powers of two, so that a handful of statement texts (each prepared once and
    kept in the connection's statement cache) serve every batch size."""
    pieces = [(start, _CHUNK) for start in range(0, total - total % _CHUNK, _CHUNK)]
    start, size = total - total % _CHUNK, _CHUNK // 2
    while start < total:
        if total - start >= size:
            pieces.append((start, size))
            start += size
        size //= 2
    return pieces


@functools.cache
def _multi_insert(n: int, fresh: bool, returning: bool = True, plain: bool = False) -> str:
    if plain:
        head, row = _PLAIN_HEAD, _PLAIN_ROW
    else:
        head, row = (_FRESH_HEAD, _FRESH_ROW) if fresh else (_INSERT_HEAD, _INSERT_ROW)
    tail = " RETURNING seq, id" if returning else ""
    return f"{head}{', '.join([row] * n)} ON CONFLICT DO NOTHING{tail}"


def _insert_sync(conn: sqlite3.Connection, inserts: _Inserts) -> list[int | None]:
    """Insert rows (:func:`_encode_inserts`) in multi-row statements; for each, the seq
    it was given, or None when it was not inserted (a conflict on its id, idempotency key
    or schedule fire, which leaves the stored row as it is). Rows go in in order, so of
    two rows of one batch with the same key the first wins, as with one statement per
    row."""
    execute = conn.execute
    fresh, rows, _ = inserts
    if len(rows) == 1 or len({row[0] for row in rows}) < len(rows):
        # one row, or one id twice (which of them went in cannot be told by id)
        one = _multi_insert(1, fresh)
        return [next((seq for seq, _ in execute(one, row)), None) for row in rows]
    if fresh and not any(row[8] is not None or row[12] is not None for row in rows):
        # No idempotency key and no schedule fire: only a taken id could keep a row out,
        # so the count of rows written tells whether all went in, without handing every
        # row back (the rows of one statement get consecutive seqs, the last one known).
        # If one did not, the batch is undone and inserted again the long way.
        plain = all(row[13] is None and row[14] is None for row in rows)
        before = conn.total_changes
        seqs: list[int | None] = []
        execute("SAVEPOINT anytask_insert")
        for start, size in _chunks(len(rows)):
            chunk = rows[start : start + size]
            params = [
                value for row in (map(_plain_values, chunk) if plain else chunk) for value in row
            ]
            last = execute(_multi_insert(size, fresh, False, plain), params).lastrowid
            if last is not None:
                seqs.extend(range(last - size + 1, last + 1))
        all_in = conn.total_changes - before == len(rows) == len(seqs)
        if not all_in:
            execute("ROLLBACK TO anytask_insert")
        execute("RELEASE anytask_insert")
        if all_in:
            return seqs
    inserted: dict[str, int] = {}
    for start, size in _chunks(len(rows)):
        params = [value for row in rows[start : start + size] for value in row]
        statement = _multi_insert(size, fresh)
        inserted.update((task_id, seq) for seq, task_id in execute(statement, params))
    return [inserted.get(row[0]) for row in rows]


def _claim_params(
    owner: str, limit: int, now: datetime, lease_until: datetime
) -> tuple[str, float, float, float, int]:
    return (owner, to_ts(lease_until), to_ts(now), to_ts(now), limit)


class _Claim(NamedTuple):
    """What a claim's transaction hands back: ``(seq, token, attempts, remembered
    insert)`` of the records built from memory, and the full rows of the others."""

    known: list[tuple[int, int, int, _Here]]
    rows: list[Any]


_NO_CLAIM = _Claim([], [])


def _claimed(claim: _Claim, owner: str, now: datetime, lease_until: datetime) -> list[TaskRecord]:
    """The claimed records, highest priority first, then by seq. A remembered row never
    claimed before holds what its insert wrote; the claim changed only the fields set
    here."""
    times: dict[float, datetime] = {}  # one claim: one start time and one lease expiry
    claimed = [_row_to_record(row, times) for row in claim.rows]
    running = TaskStatus.RUNNING
    for seq, token, attempts, (params, created_at, run_after, fire_at) in claim.known:
        (
            task_id,
            name,
            args,
            kwargs,
            _,
            _,
            priority,
            tags,
            idempotency_key,
            max_attempts,
            timeout,
            requeue_on_interrupt,
            schedule_id,
            _,
            replay_of,
        ) = params
        claimed.append(
            TaskRecord(
                task_id,
                name,
                _load(args),
                _load(kwargs),
                created_at,
                run_after,
                running,
                priority,
                _load(tags),
                idempotency_key,
                now,
                None,
                attempts,
                max_attempts,
                None if timeout is None else float(timeout),  # (a REAL column)
                requeue_on_interrupt,
                None,
                None,
                None,
                None,
                [],
                schedule_id,
                fire_at,
                owner,
                lease_until,
                token,
                False,
                replay_of,
                seq,
            )
        )
    claimed.sort(key=lambda r: (-r.priority, r.seq))
    return claimed


def _outcome_params(outcomes: Sequence[Outcome]) -> list[tuple[str, tuple[Any, ...]]]:
    rows: list[tuple[str, tuple[Any, ...]]] = []
    for out in outcomes:
        logs = None if out.logs is None else _dump_list(out.logs)
        key: tuple[Any, ...] = (
            (out.id, out.token) if out.seq is None else (out.seq, out.id, out.token)
        )
        if out.status is TaskStatus.PENDING:
            sql = _COMPLETE_RETRY_ID if out.seq is None else _COMPLETE_RETRY_SEQ
            head: tuple[Any, ...] = (
                logs,
                out.error,
                out.error_type,
                out.traceback,
                _ts(out.ended_at),
                _ts(out.run_after),
                out.attempts,
            )
        elif (
            out.status is TaskStatus.SUCCESS
            and out.seq is not None
            and logs is None
            and out.error is None
            and out.error_type is None
            and out.traceback is None
        ):
            sql = _SUCCEED_SEQ
            head = (_ts(out.ended_at), None if out.result is None else dumps(out.result))
        else:
            sql = _COMPLETE_FINAL_ID if out.seq is None else _COMPLETE_FINAL_SEQ
            head = (
                TaskStatus(out.status).value,
                logs,
                out.error,
                out.error_type,
                out.traceback,
                _ts(out.ended_at),
                None if out.result is None else dumps(out.result),
            )
        rows.append((sql, head + key))
    return rows


def _complete_sync(
    conn: sqlite3.Connection, rows: Sequence[tuple[str, tuple[Any, ...]]]
) -> list[bool]:
    """Apply outcomes (``_outcome_params``); for each, whether it was accepted. Final
    outcomes found by ``seq`` go in multi-row ``UPDATE ... FROM (VALUES ...)`` statements,
    one run of them per statement form; the others (retries, outcomes known by id only,
    any after an earlier outcome for the same task) one by one, after them, in their
    order."""
    done = [False] * len(rows)
    batches: dict[str, list[int]] = {_SUCCEED_SEQ: [], _COMPLETE_FINAL_SEQ: []}
    rest: list[int] = []
    seen: set[str] = set()  # task ids: a row's outcomes apply in their order
    for i, (sql, params) in enumerate(rows):
        task_id = params[-2]  # (..., id, token) in every form
        batch = batches.get(sql)
        if batch is not None and task_id not in seen:
            batch.append(i)
        else:
            rest.append(i)
        seen.add(task_id)
    for sql, batch in batches.items():
        if len(batch) < 2:  # nothing to gain: one by one, in order, with the rest
            rest.extend(batch)
            continue
        # Each row of a batch names one record by its seq (and no record twice), so when
        # the count of rows changed is the batch's size, every outcome was accepted. Else
        # the batch is undone and applied again, this time handing back what it changed.
        before = conn.total_changes
        conn.execute("SAVEPOINT anytask_complete")
        for start, size in _chunks(len(batch)):
            values = [value for i in batch[start : start + size] for value in rows[i][1]]
            conn.execute(_multi_complete(size, sql, False), values)
        all_in = conn.total_changes - before == len(batch)
        if not all_in:
            conn.execute("ROLLBACK TO anytask_complete")
        conn.execute("RELEASE anytask_complete")
        if all_in:
            for i in batch:
                done[i] = True
            continue
        accepted: set[tuple[int, str]] = set()  # (seq, id) of the rows updated
        for start, size in _chunks(len(batch)):
            values = [value for i in batch[start : start + size] for value in rows[i][1]]
            accepted.update(conn.execute(_multi_complete(size, sql), values).fetchall())
        for i in batch:
            params = rows[i][1]
            done[i] = (params[-3], params[-2]) in accepted
    rest.sort()
    execute = conn.execute
    for i in rest:
        sql, params = rows[i]
        done[i] = execute(sql, params).rowcount == 1
    return done


class SQLiteStore(Store):
    """Task records in one SQLite file, shared safely by the processes of one host.

    ``synchronous`` is SQLite's ``PRAGMA synchronous`` for the writer: ``"FULL"`` (the
    default) makes every acknowledged commit survive a power loss or OS crash.
    ``"NORMAL"`` is faster in WAL mode and still survives a *process* crash (kill -9), but
    a power loss or OS crash can lose the last transactions committed before it, i.e.
    tasks whose enqueue was already acknowledged. ``"EXTRA"`` is also accepted.

    ``busy_timeout`` is how many seconds an operation waits for another connection's lock
    before failing with :class:`~anytask.StoreLockedError`.

    Opening never modifies a file it refuses: a file that is not SQLite, is damaged, or
    holds tables of another application (an SQLite database is accepted only when it is
    empty or already an anytask database) raises :class:`~anytask.StoreCorruptError`; a
    file from a newer anytask raises :class:`~anytask.SchemaVersionError`; a file or
    directory that cannot be written raises :class:`~anytask.StoreReadOnlyError`.

    ``integrity_check`` is what opening checks of an existing file before its first
    write: ``"quick"`` (the default) runs SQLite's ``PRAGMA quick_check``, which reads the
    whole file (about 0.1 s for 100,000 tasks, or 2.5 ms per MB, on a small VM), so that
    damage anywhere in it is refused before anything is written; ``"full"`` runs
    ``PRAGMA integrity_check`` (also checks that every index matches its table, about 3x
    slower); ``"off"`` checks only the header and the schema (for very large files whose
    start-up time matters more).

    ``upgrade=False`` opens a file of an older schema version as it is, for reading only:
    nothing in it changes, and every write is refused with :class:`~anytask.StoreError`.
    Upgrading the file locks out the older anytask that may still be using it, so tools
    that only look (``anytask inspect`` and ``show``) open it this way. A file of the
    current version opens as with ``upgrade=True``.
    """

    shared = True
    #: (SQLite's default limit until the store is open and its build's is read)
    max_record_bytes: int | None = 1_000_000_000 - _ROW_SLACK

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 5.0,
        integrity_check: str = "quick",
        upgrade: bool = True,
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise ConfigurationError(f"path must be a str or os.PathLike, got {path!r}")
        text = os.fspath(path)
        if not text or text == ":memory:" or text.startswith("file:"):
            raise ConfigurationError(
                f"path must be a file path, got {text!r} (use MemoryStore for memory only)"
            )
        if not isinstance(synchronous, str) or synchronous.upper() not in _SYNCHRONOUS:
            raise ConfigurationError(
                f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, got {synchronous!r}"
            )
        if (
            isinstance(busy_timeout, bool)
            or not isinstance(busy_timeout, int | float)
            or not 0 <= busy_timeout < 1e6
        ):
            raise ConfigurationError(f"busy_timeout must be seconds >= 0, got {busy_timeout!r}")
        if integrity_check not in _INTEGRITY_CHECKS:
            raise ConfigurationError(
                f"integrity_check must be one of {', '.join(_INTEGRITY_CHECKS)}, "
                f"got {integrity_check!r}"
            )
        if not isinstance(upgrade, bool):
            raise ConfigurationError(f"upgrade must be a bool, got {upgrade!r}")
        self.path = Path(text).absolute()
        self.integrity_check = integrity_check
        self.upgrade = upgrade
        # the schema version of a file opened with upgrade=False and left older (None:
        # current); writes to it are refused
        self._old_version: int | None = None
        self.synchronous = synchronous.upper()
        self.busy_timeout = float(busy_timeout)
        self._writer: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()  # the writer is used by one thread at a time
        self._checkpoint_due = False  # a write was refused for a full disk: see _checkpoint
        self._write_limiter: anyio.CapacityLimiter | None = None
        self._read_limiter: anyio.CapacityLimiter | None = None
        self._pool_lock = threading.Lock()
        self._idle_readers: list[sqlite3.Connection] = []
        self._generation = 0  # bumped by close(): readers of an older one are discarded
        # (thread, count): the thread whose users (managers, the CLI) hold the store open,
        # and how many; the last close() closes it. Its limiters belong to that thread's
        # event loop, so a user in another thread is refused while they hold it.
        self._holder: tuple[threading.Thread | None, int] = (None, 0)
        self._holder_lock = threading.Lock()
        # set once an open() or the last close() in progress ends (meanwhile the count is 0:
        # a user that came then would see the store open, and lose it to that close)
        self._opening: anyio.Event | None = None
        self._closing = False  # the one in progress is a close
        self._writer_thread = SerialThread("anytask sqlite writer")
        # Fresh records this store inserted and nobody has claimed yet, by seq (never
        # given twice, unlike ids: a purged task's id may come back): a claim then hands
        # back four columns instead of every one. Used by the writer only.
        self._inserted_here: dict[int, _Here] = {}
        self._here_added: builtins.list[int] = []  # remembered by the open transaction
        # Where the last purge that deleted its whole limit stopped, by its arguments:
        # ((ended_before, statuses, limit), where the next call goes on: see _PurgeCursor).
        self._purge_from: tuple[tuple[float, str, int], _PurgeCursor] | None = None

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # -- errors --------------------------------------------------------------------------
    def _error(self, exc: sqlite3.Error) -> StoreError:
        code = getattr(exc, "sqlite_errorcode", None)
        primary = None if code is None else code & 0xFF
        where = str(self.path)
        if primary in (_BUSY, _LOCKED):
            return StoreLockedError(
                f"{where} is locked by another connection (waited {self.busy_timeout:g}s): {exc}"
            )
        if primary == _READONLY:
            return StoreReadOnlyError(f"{where} cannot be written: {exc}")
        if primary in (_CORRUPT, _NOTADB):
            return StoreCorruptError(f"{where} is not a usable anytask database: {exc}")
        if primary == _CANTOPEN and not self._dir_writable():
            return StoreReadOnlyError(f"{where} cannot be written (directory is read-only): {exc}")
        return StoreError(f"{where}: {exc}")

    def _dir_writable(self) -> bool:
        return os.access(self.path.parent, os.W_OK | os.X_OK)

    # -- connections ---------------------------------------------------------------------
    def _connect(self, *, reader: bool) -> sqlite3.Connection:
        if reader:  # never create the file from a reader
            conn = sqlite3.connect(
                self.path.as_uri() + "?mode=rw",
                uri=True,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        else:
            conn = sqlite3.connect(
                str(self.path),
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            if reader:
                conn.execute("PRAGMA query_only = 1")
                conn.create_function("anytask_icontains", 2, _icontains, deterministic=True)
        except BaseException:
            conn.close()
            raise
        return conn

    def _borrow(self) -> tuple[sqlite3.Connection, int]:
        with self._pool_lock:
            generation = self._generation
            if self._idle_readers:
                return self._idle_readers.pop(), generation
        return self._connect(reader=True), generation

    def _give_back(self, conn: sqlite3.Connection, generation: int) -> None:
        with self._pool_lock:
            if (
                self._writer is not None  # a closed store keeps no connection open
                and generation == self._generation
                and len(self._idle_readers) < _MAX_IDLE_READERS
            ):
                self._idle_readers.append(conn)
                return
        conn.close()

    def _read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            conn, generation = self._borrow()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        try:
            result = fn(conn)
        except BaseException as exc:
            conn.close()  # in an unknown state: never reused
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc) from exc
            raise
        self._give_back(conn, generation)
        return result

    def _write_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._write_lock:
            conn = self._writer
            if conn is None:
                raise StoreError(f"{self!r} is not open")
            if self._old_version is not None:
                raise StoreError(
                    f"{self.path} has schema version {self._old_version} and was opened "
                    "with upgrade=False: it is read only"
                )
            try:
                conn.execute("BEGIN IMMEDIATE")
                self._here_added = []
                try:
                    result = fn(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    # rows inserted by the transaction are gone, and their seqs may be
                    # given to other rows: forget them
                    for seq in self._here_added:
                        self._inserted_here.pop(seq, None)
                    raise
            except sqlite3.Error as exc:
                if getattr(exc, "sqlite_errorcode", 0) & 0xFF == _FULL:
                    self._checkpoint_due = True
                raise self._error(exc) from exc
            if self._checkpoint_due:
                self._checkpoint_due = not self._checkpoint(conn)
            return result

    @staticmethod
    def _checkpoint(conn: sqlite3.Connection) -> bool:
        """After a write refused for a full disk, once writes go in again: copy what the
        WAL holds into the database, so that the next writes reuse the WAL file from its
        start instead of growing it. SQLite checkpoints by itself only once the WAL
        passes 1000 pages (4 MB), which a small disk filled by the WAL never reaches:
        room freed on it is then eaten by the WAL again, and writes keep failing until
        the store is reopened. Returns whether the whole WAL was copied (if not, the next
        write tries again)."""
        try:
            busy, wal, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            return False
        return bool(busy == 0 and wal == copied)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        limiter = self._read_limiter
        if limiter is None:
            raise StoreError(f"{self!r} is not open")
        return await anyio.to_thread.run_sync(self._read_sync, fn, limiter=limiter)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one write transaction on the store's own writer thread (see
        :class:`SerialThread`: every enqueue and group commit waits for one such round
        trip). A write always runs to its end: a committed claim reaches the caller."""
        if self._write_limiter is None:
            raise StoreError(f"{self!r} is not open")
        return cast(T, await self._writer_thread.call(lambda: self._write_sync(fn)))

    # -- lifecycle -----------------------------------------------------------------------
    async def open(self) -> None:
        """Open the store, or count one more user of a store already open in this thread
        (several managers on one event loop may share it: each :meth:`close` counts one
        off, and the last one closes it). Refused with ``ConfigurationError`` while users
        in another thread hold it: give each thread its own ``SQLiteStore`` on the file."""
        me = threading.current_thread()
        while True:
            closing_elsewhere = False
            with self._holder_lock:
                holder, count = self._holder
                if (count or self._opening is not None) and holder is not me:
                    if holder is not None and holder.is_alive() and self._closing:
                        # its last user closes it (in that thread's event loop, whose
                        # event we cannot wait on): then this thread opens it afresh
                        closing_elsewhere = True
                    elif holder is not None and holder.is_alive():
                        raise ConfigurationError(
                            f"{self!r} is in use by a manager (or other user) in another "
                            "thread; a SQLiteStore serves the managers of one event loop (give "
                            "each thread its own SQLiteStore on the same file: they share its "
                            "tasks)"
                        )
                    # that thread ended without closing it: taken over (its limiters
                    # belonged to that thread's event loop, so this one gets new ones)
                    count = 0
                    self._opening = None
                    self._closing = False
                    if self._writer is not None:
                        self._write_limiter = anyio.CapacityLimiter(1)
                        self._read_limiter = anyio.CapacityLimiter(_MAX_IDLE_READERS)
                opening = self._opening
                if closing_elsewhere:
                    pass
                elif opening is None:
                    if self._writer is not None:
                        self._holder = (me, count + 1)
                        return
                    self._opening = anyio.Event()
                    self._holder = (me, 0)
                    break
            if closing_elsewhere:
                await anyio.sleep(0.01)
                continue
            assert opening is not None
            # another user on this event loop is opening it, or closing it (then this one
            # opens it afresh)
            await opening.wait()
        try:
            await self._open_first()
        except BaseException:
            with self._holder_lock:
                self._holder = (None, 0)
                self._opening, opening = None, self._opening
            if opening is not None:
                opening.set()
            raise
        with self._holder_lock:
            self._holder = (me, 1)
            self._opening, opening = None, self._opening
        if opening is not None:
            opening.set()

    async def _open_first(self) -> None:
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise StoreError(
                f"SQLiteStore needs SQLite >= {'.'.join(map(str, _MIN_SQLITE))}, "
                f"this Python has {sqlite3.sqlite_version}"
            )
        self._write_limiter = anyio.CapacityLimiter(1)
        self._read_limiter = anyio.CapacityLimiter(_MAX_IDLE_READERS)
        try:
            await anyio.to_thread.run_sync(self._open_sync, limiter=self._write_limiter)
        except BaseException:
            self._write_limiter = self._read_limiter = None
            raise

    def _open_sync(self) -> None:
        self._precheck_file()
        # Processes opening one new file at once can deadlock on the journal-mode switch
        # and the schema creation; SQLite then answers "locked" at once instead of waiting.
        # A fresh connection after a short random pause gets through; a lock that is
        # really held still raises StoreLockedError once busy_timeout has passed.
        deadline = time.monotonic() + max(self.busy_timeout, 0.5)
        pause = 0.01
        while True:
            with self._write_lock:
                try:
                    conn = self._connect(reader=False)
                except sqlite3.Error as exc:
                    raise self._error(exc) from exc
                try:
                    self._prepare(conn)
                except StoreLockedError:
                    conn.close()
                    if time.monotonic() >= deadline:
                        raise
                except BaseException:
                    conn.close()
                    raise
                else:
                    self._writer = conn
                    return
            time.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, 0.2)

    def _precheck_file(self) -> None:
        path = self.path
        if not path.parent.is_dir():
            raise StoreError(f"cannot create {path}: directory {path.parent} does not exist")
        if path.exists():
            if not path.is_file():
                raise StoreCorruptError(f"{path} is not a regular file")
            try:
                with path.open("rb") as f:
                    header = f.read(len(_HEADER))
            except OSError as exc:
                raise StoreError(f"cannot read {path}: {exc}") from exc
            if header and header != _HEADER:
                raise StoreCorruptError(f"{path} is not an SQLite database; it was left as is")
        elif not self._dir_writable():
            raise StoreReadOnlyError(f"cannot create {path}: directory is read-only")

    def _prepare(self, conn: sqlite3.Connection) -> None:
        self._old_version = None
        # a longer row fails its write transaction, with it every write of the group
        # commit: the manager keeps records within this
        limit = conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)
        self.max_record_bytes = limit - min(_ROW_SLACK, limit // 16)
        try:
            # read only, so a refused file is never modified
            self._check_schema(conn, create=False)
            self._check_integrity(conn)
            if self._old_version is not None:
                return  # an older file opened as it is: nothing written, not even the journal
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._check_schema(conn, create=True)  # again: another process may race us
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        if str(mode).lower() != "wal":
            raise StoreError(f"{self.path}: could not switch to WAL journal mode (got {mode!r})")

    def _check_integrity(self, conn: sqlite3.Connection) -> None:
        pragma = _INTEGRITY_CHECKS[self.integrity_check]
        if pragma is None:
            return
        problems = [row[0] for row in conn.execute(f"PRAGMA {pragma}(5)")]
        if problems != ["ok"]:
            raise StoreCorruptError(
                f"{self.path} is damaged ({pragma} found: {'; '.join(map(str, problems))}); "
                "it was left as is (SQLite's '.recover' command may save what it holds)"
            )

    def _check_schema(self, conn: sqlite3.Connection, *, create: bool) -> None:
        tables = {
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
        if "anytask_meta" not in tables:
            if tables:
                raise StoreCorruptError(
                    f"{self.path} is an SQLite database of another application "
                    f"(tables: {', '.join(sorted(tables))}); it was left as is"
                )
            if create:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO anytask_meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            return
        # (a table of that name with other columns: not anytask's)
        meta_columns = {info[1] for info in conn.execute("PRAGMA table_info(anytask_meta)")}
        row: Any = None
        if {"key", "value"} <= meta_columns:
            row = conn.execute(
                "SELECT value FROM anytask_meta WHERE key = 'schema_version'"
            ).fetchone()
        try:
            version = int(row[0])
        except (TypeError, ValueError):
            raise StoreCorruptError(
                f"{self.path} has no valid anytask schema version; it was left as is"
            ) from None
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self.path} has schema version {version}, written by a newer anytask; "
                f"this version knows up to {SCHEMA_VERSION}. Upgrade anytask to open it."
            )
        missing = {"anytask_tasks", "anytask_schedules"} - tables
        if not missing:
            # Checked here, in the read-only pass: a table of another shape would only
            # fail later, once the write transaction has begun (and the journal switched)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(anytask_tasks)")}
            lacking = [c for c in _COLUMNS if c not in columns]
            if lacking:
                raise StoreCorruptError(
                    f"{self.path} holds an anytask_tasks table that is not anytask's (it has "
                    f"no column {lacking[0]!r}); it was left as is"
                )
        if missing or version < 1:
            raise StoreCorruptError(
                f"{self.path} is an incomplete anytask database "
                f"(missing: {', '.join(sorted(missing)) or 'nothing'}, version {version})"
            )
        if version < SCHEMA_VERSION and not self.upgrade:
            self._old_version = version
            return  # as it is: neither upgraded nor its indexes repaired
        if create and version < SCHEMA_VERSION:
            for step in range(version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[step].split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(
                "UPDATE anytask_meta SET value = ? WHERE key = 'schema_version'",
                (str(SCHEMA_VERSION),),
            )
        if create:
            self._repair_indexes(conn)

    @staticmethod
    def _repair_indexes(conn: sqlite3.Connection) -> None:
        """Create the indexes of the schema that the file lacks or holds in another form.
        Files of version 1 differ in more than the migrations say: two indexes changed
        while the version stayed 1 (``anytask_tasks_ended`` got its covering columns and
        ``anytask_tasks_replay`` came), so a file made before that kept the old ones through
        its upgrades. Reads the schema only, when every index is as it should be."""
        stored = {
            name: " ".join(sql.split())
            for name, sql in conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            )
        }
        for name, statement in _INDEXES.items():
            if stored.get(name) != statement:
                conn.execute(f"DROP INDEX IF EXISTS {name}")
                conn.execute(statement)

    async def close(self) -> None:
        """Count one user off (see :meth:`open`); the last one closes the store. Safe to
        call more times than :meth:`open`."""
        with self._holder_lock:
            holder, count = self._holder
            if count > 1:
                self._holder = (holder, count - 1)  # other users still work with it
                return
            if self._opening is not None:
                return  # an open or a close in progress: no user of it to count off
            # the count is 0 until the store is closed, and an open() meanwhile waits for
            # the end of this close (else it would count itself a user of a store that
            # is about to close, and find it closed)
            closing = self._opening = anyio.Event()
            self._closing = True
            self._holder = (threading.current_thread(), 0)
        try:
            await self._close_now()
        finally:
            with self._holder_lock:
                self._holder = (None, 0)
                self._opening = None
                self._closing = False
            closing.set()

    async def _close_now(self) -> None:
        with self._pool_lock:
            self._generation += 1
            idle, self._idle_readers = self._idle_readers, []
        for conn in idle:
            conn.close()
        if self._writer is None:
            return
        limiter = self._write_limiter
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._close_writer, limiter=limiter)
        self._write_limiter = self._read_limiter = None
        self._writer_thread.stop()

    def _close_writer(self) -> None:
        with self._write_lock:
            self._inserted_here.clear()
            self._purge_from = None  # (the file may be another one when opened again)
            conn, self._writer = self._writer, None
            if conn is not None:
                conn.close()

    # -- reads ---------------------------------------------------------------------------
    def get(self, task_id: str) -> TaskRecord | None:
        """The record with this id, or None. Synchronous and safe from any thread; works
        before :meth:`open` too (a missing file then reads as no record)."""
        if not self.path.exists() or not _storable(task_id):
            return None
        return self._read_sync(lambda conn: self._fetch_sync(conn, task_id))

    @staticmethod
    def _fetch_sync(conn: sqlite3.Connection, task_id: str) -> TaskRecord | None:
        try:
            row = conn.execute(f"{_SELECT} WHERE id = ?", (task_id,)).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # a fresh file no store has opened yet
                return None
            raise
        return None if row is None else _row_to_record(row)

    async def fetch(self, task_id: str) -> TaskRecord | None:
        if not _storable(task_id):
            return None
        return await self._read(lambda conn: self._fetch_sync(conn, task_id))

    async def fetch_many(self, task_ids: Sequence[str]) -> list[TaskRecord]:
        ids = [i for i in dict.fromkeys(task_ids) if _storable(i)]

        def run(conn: sqlite3.Connection) -> list[TaskRecord]:
            found: list[TaskRecord] = []
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                sql = f"{_SELECT} WHERE id IN ({', '.join('?' * len(chunk))})"
                found.extend(_row_to_record(row) for row in conn.execute(sql, chunk))
            return found

        return await self._read(run) if ids else []

    async def list(self, query: TaskQuery) -> Page:
        where, params = _where(query, paged=True)
        if not all(map(_storable, params)):  # a text no stored value holds
            return Page([], None)
        sql = f"{_SELECT}{where} ORDER BY seq DESC LIMIT ?"
        params.append(query.limit)

        def run(conn: sqlite3.Connection) -> builtins.list[TaskRecord]:
            return [_row_to_record(row) for row in conn.execute(sql, params)]

        items = await self._read(run)
        next_cursor = items[-1].seq if len(items) == query.limit else None
        return Page(items, next_cursor)

    async def count(self, query: TaskQuery | None = None) -> int:
        where, params = ("", []) if query is None else _where(query, paged=False)
        if not all(map(_storable, params)):  # a text no stored value holds
            return 0
        sql = f"SELECT count(*) FROM anytask_tasks{where}"

        def run(conn: sqlite3.Connection) -> int:
            return int(conn.execute(sql, params).fetchone()[0])

        return await self._read(run)

    async def counts(self) -> dict[TaskStatus, int]:
        def run(conn: sqlite3.Connection) -> builtins.list[tuple[str, int]]:
            # each part reads one partial index: pending, running, and the ended rest
            return conn.execute(
                "SELECT 'pending', count(*) FROM anytask_tasks WHERE status = 'pending' "
                "UNION ALL SELECT 'running', count(*) FROM anytask_tasks "
                "WHERE status = 'running' "
                f"UNION ALL SELECT status, count(*) FROM anytask_tasks WHERE {_FINISHED} "
                "GROUP BY status"
            ).fetchall()

        result = dict.fromkeys(TaskStatus, 0)
        for status, n in await self._read(run):
            result[TaskStatus(status)] = n
        return result

    async def has_unfinished(self) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            return bool(
                conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM anytask_tasks WHERE status = 'pending') "
                    "OR EXISTS (SELECT 1 FROM anytask_tasks WHERE status = 'running')"
                ).fetchone()[0]
            )

        return await self._read(run)

    async def next_run_after(self) -> datetime | None:
        """The earliest ``run_after`` of the pending tasks that were delayed. Tasks due
        when created are left out (the store's licence, see :class:`Store`): the claim
        that led the dispatcher here took every one of them it could."""

        def run(conn: sqlite3.Connection) -> float | None:
            row = conn.execute(
                "SELECT min(run_after) FROM anytask_tasks INDEXED BY anytask_tasks_delayed "
                f"WHERE {_DELAYED}"
            ).fetchone()
            return None if row is None else row[0]

        return _dt(await self._read(run))

    async def metrics(self, since: datetime, until: datetime, buckets: int) -> Metrics:
        # Aggregated in SQL over the ended_at index. Buckets: one GROUP BY. Percentiles:
        # nearest rank by window functions, exact up to _METRICS_EXACT timed tasks in the
        # window and beyond that over an even sample (see below), so that a window holding
        # 100k tasks still answers in a few tenths of a second.
        # Bucket indexes and durations in whole microseconds, as MetricsBuilder counts
        # them: a stored timestamp is within half a microsecond of its datetime, so the
        # rounded difference of two is exact (a float difference is not: 1 µs reads as
        # 0.95 µs, and a task ending on a bucket edge can land in the bucket before).
        span, starts = metrics_buckets(since, until, buckets)
        lo, hi = to_ts(since), to_ts(until)

        def run(conn: sqlite3.Connection) -> tuple[builtins.list[Any], builtins.list[Any]]:
            series = conn.execute(
                "SELECT min(CAST(CAST(round((ended_at - ?) * 1000000.0) AS INTEGER) * ? / ? "
                "AS INTEGER), ?) AS b, name, "
                "sum(status = 'success'), sum(status IN ('failed', 'interrupted')), "
                "sum(status = 'cancelled'), "
                "sum(status IN ('success', 'failed') AND started_at IS NOT NULL) "
                "FROM anytask_tasks INDEXED BY anytask_tasks_ended "
                f"WHERE ended_at >= ? AND ended_at < ? AND status IN ({_TERMINAL_SQL}) "
                "GROUP BY b, name",
                (lo, buckets, span, buckets - 1, lo, hi),
            ).fetchall()
            # beyond _METRICS_EXACT timed tasks in the window, an even sample of about that
            # many: every name with more than _METRICS_WHOLE of them is sampled (its rows
            # whose seq, through a multiplicative hash that spreads runs of seqs names
            # share by turns, is a multiple of the stride), smaller ones are kept whole, so
            # that no name drops out. Filtered before the window functions, so that a window of
            # 100k tasks costs about what 20k do.
            by_name = _sum_by_name(series)
            stride = -(-sum(by_name.values()) // _METRICS_EXACT)
            strides = (
                {name: stride for name, timed in by_name.items() if timed > _METRICS_WHOLE}
                if stride > 1
                else {}
            )
            sample = ""
            params: builtins.list[Any] = [lo, hi]
            if strides:
                cases = " ".join("WHEN ? THEN ?" for _ in strides)
                sample = (
                    " AND ((((seq & 16777215) * 2654435761) & 4294967295) >> 16) "
                    f"% (CASE name {cases} ELSE 1 END) = 0"
                )
                for name, stride in strides.items():
                    params += [name, stride]
            durations = conn.execute(
                "SELECT name, n, rn, d FROM (SELECT name, d, "
                "row_number() OVER (PARTITION BY name ORDER BY d) AS rn, "
                "count(*) OVER (PARTITION BY name) AS n FROM (SELECT name, "
                "max(CAST(round((ended_at - started_at) * 1000000.0) AS INTEGER), 0) AS d "
                "FROM anytask_tasks INDEXED BY anytask_tasks_ended "
                "WHERE ended_at >= ? AND ended_at < ? AND status IN ('success', 'failed') "
                "AND started_at IS NOT NULL" + sample + ")) "
                "WHERE rn IN ((n * 50 + 99) / 100, (n * 95 + 99) / 100, (n * 99 + 99) / 100)",
                params,
            ).fetchall()
            return series, durations

        series_rows, duration_rows = await self._read(run)
        series = [MetricsBucket(start) for start in starts]
        timed_by_name: dict[str, int] = {}
        for b, name, success, failed, other, timed in series_rows:
            bucket = series[b]
            bucket.success += success
            bucket.failed += failed
            bucket.other += other
            timed_by_name[name] = timed_by_name.get(name, 0) + timed
        ranks: dict[str, tuple[int, dict[int, float]]] = {}
        for name, n, rn, d in duration_rows:
            ranks.setdefault(name, (n, {}))[1][rn] = d / 1_000_000
        durations = [
            DurationStats(
                name, timed_by_name[name], *(at[(n * p + 99) // 100] for p in (50, 95, 99))
            )
            for name, (n, at) in sorted(ranks.items())
        ]
        return Metrics(since, until, await self.counts(), series, durations)

    # -- writes --------------------------------------------------------------------------
    async def insert(self, records: Sequence[TaskRecord]) -> builtins.list[bool]:
        if not records:
            return []
        rows = _encode_inserts(records)  # encode outside the writer
        return await self._write(lambda conn: self._insert_here(conn, rows))

    def _insert_here(self, conn: sqlite3.Connection, inserts: _Inserts) -> builtins.list[bool]:
        """Insert (writer thread), and remember the fresh rows that went in."""
        seqs = _insert_sync(conn, inserts)
        if inserts.fresh and len(inserts.rows) <= _HERE_MAX:
            here, added = self._inserted_here, self._here_added
            if len(here) + len(inserts.rows) > _HERE_MAX:
                here.clear()
            for keep, seq in zip(inserts.keep, seqs, strict=True):
                if keep is not None and seq is not None:
                    here[seq] = keep
                    added.append(seq)
        return [seq is not None for seq in seqs]

    def _claim_here(
        self, conn: sqlite3.Connection, params: tuple[str, float, float, float, int]
    ) -> _Claim:
        """Claim (writer thread). A record inserted by this store and claimed for the first
        time (the same seq and id, token 1: no claim, retry or requeue has touched it
        since its insert) is built from what the insert wrote; the others are read in
        full."""
        here = self._inserted_here
        known: builtins.list[tuple[int, int, int, _Here]] = []
        missing: builtins.list[int] = []
        for seq, task_id, token, attempts in conn.execute(_CLAIM, params).fetchall():
            remembered = here.pop(seq, None)
            if remembered is not None and token == 1 and remembered[0][0] == task_id:
                known.append((seq, token, attempts, remembered))
            else:
                missing.append(seq)
        rows = conn.execute(_SELECT_SEQS, (dumps(missing),)).fetchall() if missing else []
        return _Claim(known, rows)

    async def claim(
        self, owner: str, limit: int, now: datetime, lease_until: datetime
    ) -> builtins.list[TaskRecord]:
        if limit <= 0:
            return []
        params = _claim_params(owner, limit, now, lease_until)
        claim = await self._write(lambda conn: self._claim_here(conn, params))
        return _claimed(claim, owner, _as_read(now, params[2]), _as_read(lease_until, params[1]))

    async def complete(self, outcomes: Sequence[Outcome]) -> builtins.list[bool]:
        if not outcomes:
            return []
        rows = _outcome_params(outcomes)
        return await self._write(lambda conn: _complete_sync(conn, rows))

    async def write_batch(
        self,
        records: Sequence[TaskRecord],
        outcomes: Sequence[Outcome],
        owner: str,
        limit: int,
        now: datetime,
        lease_until: datetime,
    ) -> BatchResult:
        """Insert, complete and claim in one ``BEGIN IMMEDIATE`` transaction: one commit
        (one fsync) where the three separate calls make three."""
        inserts = _encode_inserts(records)
        completes = _outcome_params(outcomes)
        claim = _claim_params(owner, limit, now, lease_until) if limit > 0 else None
        if not inserts.rows and not completes and claim is None:
            return BatchResult()

        def run(
            conn: sqlite3.Connection,
        ) -> tuple[builtins.list[bool], builtins.list[bool], _Claim]:
            inserted = self._insert_here(conn, inserts) if inserts.rows else []
            completed = _complete_sync(conn, completes)
            claimed = _NO_CLAIM if claim is None else self._claim_here(conn, claim)
            return inserted, completed, claimed

        inserted, completed, claimed = await self._write(run)
        if claim is None:
            return BatchResult(inserted, completed, [])
        records_claimed = _claimed(
            claimed, owner, _as_read(now, claim[2]), _as_read(lease_until, claim[1])
        )
        return BatchResult(inserted, completed, records_claimed)

    async def heartbeat(
        self, owner: str, lease_until: datetime, task_ids: Collection[str] | None = None
    ) -> HeartbeatResult:
        sql = (
            "UPDATE anytask_tasks INDEXED BY anytask_tasks_owner SET lease_expires_at = ? "
            "WHERE owner = ? AND status = 'running'"
        )
        params: tuple[Any, ...] = (to_ts(lease_until), owner)
        if task_ids is not None:
            sql += " AND id IN (SELECT value FROM json_each(?))"
            params += (dumps(sorted(filter(_storable, task_ids))),)
        sql += " RETURNING id, cancel_requested"

        def run(conn: sqlite3.Connection) -> builtins.list[Any]:
            return conn.execute(sql, params).fetchall()

        hb = HeartbeatResult()
        for task_id, cancel_requested in await self._write(run):
            hb.held.add(task_id)
            if cancel_requested:
                hb.cancel_requested.add(task_id)
        return hb

    async def recover(self, now: datetime) -> RecoveryResult:
        params = (to_ts(now), _RECOVER_ERROR)

        def run(conn: sqlite3.Connection) -> builtins.list[Any]:
            return conn.execute(_RECOVER, params).fetchall()

        res = RecoveryResult()
        lists = {"pending": res.requeued, "cancelled": res.cancelled}
        for task_id, status in await self._write(run):
            lists.get(status, res.interrupted).append(task_id)
        return res

    async def cancel(self, task_id: str, now: datetime) -> TaskStatus | None:
        if not _storable(task_id):
            return None
        params = (task_id, to_ts(now))

        def run(conn: sqlite3.Connection) -> Any:
            row = conn.execute(_CANCEL, params).fetchone()
            if row is not None:
                # a pending task cancelled here is never claimed: what its insert left for
                # its claim would stay in _inserted_here (one entry per task cancelled
                # while pending, until the map filled up and was cleared)
                self._inserted_here.pop(row[1], None)
            return row

        row = await self._write(run)
        return None if row is None else TaskStatus(row[0])

    async def interrupt_pending(self, created_before: datetime, now: datetime) -> int:
        params = (to_ts(now), _LEFT_PENDING_ERROR, to_ts(created_before))

        def run(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE anytask_tasks SET status = 'interrupted', ended_at = ?, "
                "error_type = 'Interrupted', error = ? "
                "WHERE status = 'pending' AND created_at < ?",
                params,
            ).rowcount

        return await self._write(run)

    async def purge(
        self,
        ended_before: datetime,
        *,
        statuses: Collection[TaskStatus] | None = None,
        limit: int | None = None,
    ) -> int:
        """See :meth:`Store.purge`. With a ``limit``, the records are read in short
        transactions of at most ``max(limit, 500)`` rows each (records kept, such
        as replays whose task is still stored, count as read; the one that first reaches
        rows that ended at one moment also looks them all up in the index, once, and the
        ones after it read the rest of them by seq): a file holding many kept records, or
        many records that ended together, never has its write lock held for one long
        scan a call, and commits of the app get in between. Each transaction goes on
        from the last row the one before read, and the next call with the same
        arguments, while a pass goes on (it ends with a call that deletes fewer than
        ``limit``), from the last row deleted: a pass reads each kept record about once,
        not once a call. A record that becomes deletable behind
        that point during a pass (a replay whose task was deleted meanwhile) goes in the
        next pass. Should a transaction fail, the error is raised, what the ones before
        it deleted stays deleted, and the next call starts from the oldest row again (as
        after a cancellation)."""
        wanted, limit = purge_filter(statuses, limit)
        # literals (enum values): the planner then reads the ended-time index
        among = ", ".join(f"'{s.value}'" for s in sorted(wanted, key=lambda s: s.value))
        cutoff = to_ts(ended_before)
        free = (
            "replay_of IS NULL OR NOT EXISTS "
            "(SELECT 1 FROM anytask_tasks AS o WHERE o.id = anytask_tasks.replay_of)"
        )
        which = f"ended_at < ? AND status IN ({among})"
        if limit is None:
            sql = f"DELETE FROM anytask_tasks WHERE {which} AND ({free})"

            def run(conn: sqlite3.Connection) -> int:
                here = self._inserted_here
                if not here:
                    return conn.execute(sql, (cutoff,)).rowcount
                seqs = conn.execute(sql + " RETURNING seq", (cutoff,)).fetchall()
                for (seq,) in seqs:  # (never claimed here: ended elsewhere, or cancelled)
                    here.pop(seq, None)
                return len(seqs)

            return await self._write(run)

        key = (cutoff, among, limit)
        resume = self._purge_from
        after = resume[1] if resume is not None and resume[0] == key else None
        select = f"SELECT ended_at, seq, {free} FROM anytask_tasks"
        head = f"{select} WHERE {which}"
        tail = " ORDER BY ended_at, seq LIMIT ?"
        from_oldest = head + tail
        after_time = head + " AND ended_at > ?" + tail
        # The ended-time index orders the rows that ended at one moment by other columns
        # than seq: reading on from the middle of them through it reads (and sorts) all of
        # them again, each call, which many rows that ended at one moment (tasks marked
        # interrupted together at a start with requeue_pending=False) make quadratic and
        # its transactions long. The rest of them is read by seq instead, between the
        # last one read and the last one of that moment (looked up once, in the index).
        last_of_time = (
            "SELECT max(seq) FROM anytask_tasks INDEXED BY anytask_tasks_ended "
            f"WHERE ended_at = ? AND status IN ({among})"
        )
        rest_of_time = (
            f"{select} NOT INDEXED WHERE seq > ? AND seq <= ? AND ended_at = ? "
            f"AND status IN ({among}) ORDER BY seq LIMIT ?"
        )

        def read_and_delete(
            conn: sqlite3.Connection, after: _PurgeCursor | None, want: int
        ) -> tuple[builtins.list[tuple[float, int]], bool, _PurgeCursor | None]:
            """Read the next window (``want`` rows, at least ``_PURGE_WINDOW``) after
            ``after``; delete the first ``want`` rows of it that may go. Returns
            (ended_at, seq) of those deleted, whether rows may be left after the window,
            and where the next one starts (None: nothing was read)."""
            window = max(want, _PURGE_WINDOW)
            if after is not None and after[1] < after[2]:  # within the rows of one moment
                ended, seq, last = after
                rows = conn.execute(rest_of_time, (seq, last, ended, window)).fetchall()
                full = True  # (the rows that ended later are read next)
                if len(rows) < window:  # the last of them: the next window reads on after
                    rows.append((ended, last, False))  # (as if read, and kept)
                lasts = {ended: last}
            else:
                if after is None:
                    rows = conn.execute(from_oldest, (cutoff, window)).fetchall()
                else:
                    rows = conn.execute(after_time, (cutoff, after[0], window)).fetchall()
                full = len(rows) == window
                # the last seq of each end time read: rows are in (ended_at, seq) order,
                # and only the last end time may have rows past the window
                lasts = {ended: seq for ended, seq, _ in rows}
                if full:
                    ended = rows[-1][0]
                    lasts[ended] = conn.execute(last_of_time, (ended,)).fetchone()[0]
            gone = [(ended, seq) for ended, seq, deletable in rows if deletable][:want]
            if gone:
                conn.execute(_DELETE_SEQS, (dumps([seq for _, seq in gone]),))
                here = self._inserted_here
                if here:  # (never claimed here: ended elsewhere, or cancelled)
                    for _, seq in gone:
                        here.pop(seq, None)
            if len(gone) == want:  # (the rows after it in this window were not looked at)
                ended, seq = gone[-1]
            elif rows:
                ended, seq = rows[-1][0], rows[-1][1]
            else:
                return gone, full, after
            return gone, full, (ended, seq, max(lasts[ended], seq))

        deleted = 0
        while True:
            try:
                gone, full, last = await self._write(
                    functools.partial(read_and_delete, after=after, want=limit - deleted)
                )
            except BaseException:
                # (a failure or a cancellation: the next call starts over, from the oldest)
                self._purge_from = None
                raise
            deleted += len(gone)
            if deleted >= limit:
                after = last
                break
            if not full:  # nothing left before the cutoff: the pass is over
                after = None
                break
            after = last
        self._purge_from = None if after is None else (key, after)
        return deleted

    # -- schedules -----------------------------------------------------------------------
    async def schedule_states(self) -> dict[str, ScheduleState]:
        def run(conn: sqlite3.Connection) -> builtins.list[Any]:
            return conn.execute(
                "SELECT schedule_id, last_fire_at, paused FROM anytask_schedules"
            ).fetchall()

        return {
            sid: ScheduleState(sid, _dt(last), bool(paused))
            for sid, last, paused in await self._read(run)
        }

    async def save_schedule_state(self, state: ScheduleState) -> None:
        params = (state.schedule_id, _ts(state.last_fire_at), bool(state.paused))

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(_SAVE_SCHEDULE, params)

        await self._write(run)
