"""SQLiteStore beyond the shared contract: durability on disk, typed errors, concurrency."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from anytask import (
    ConfigurationError,
    SchemaVersionError,
    SQLiteStore,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    StoreReadOnlyError,
    TaskManager,
    TaskRecord,
    TaskStatus,
)
from anytask._models import Outcome, ScheduleState, TaskQuery
from anytask.stores.sqlite import SCHEMA_VERSION

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
LEASE_UNTIL = T0 + LEASE


def make(**fields: Any) -> TaskRecord:
    fields.setdefault("id", uuid.uuid4().hex)
    fields.setdefault("name", "job")
    fields.setdefault("args", [])
    fields.setdefault("kwargs", {})
    fields.setdefault("created_at", T0)
    fields.setdefault("run_after", T0)
    return TaskRecord(**fields)


def sidecars(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


# -- persistence -----------------------------------------------------------------------


async def test_records_and_schedules_survive_close_and_reopen(db_path: str) -> None:
    store = SQLiteStore(db_path)
    await store.open()
    await store.insert([make(id=f"a{i}") for i in range(3)])
    await store.save_schedule_state(ScheduleState("nightly", T0))
    await store.close()

    again = SQLiteStore(db_path)
    await again.open()
    try:
        await again.insert([make(id="b0")])
        claimed = await again.claim("w", 10, T0, LEASE_UNTIL)
        assert [r.id for r in claimed] == ["a0", "a1", "a2", "b0"]  # FIFO across restarts
        assert await again.schedule_states() == {"nightly": ScheduleState("nightly", T0)}
    finally:
        await again.close()


async def test_seq_never_goes_back_after_a_purge(db_path: str) -> None:
    store = SQLiteStore(db_path)
    await store.open()
    await store.insert([make(id="old", status=TaskStatus.SUCCESS, ended_at=T0)])
    old = await store.fetch("old")
    assert old is not None
    assert await store.purge(T0 + timedelta(seconds=1)) == 1
    await store.close()
    await store.open()  # the same instance opens again after close
    try:
        await store.insert([make(id="new")])
        new = await store.fetch("new")
        assert new is not None
        assert new.seq > old.seq  # list cursors stay valid
    finally:
        await store.close()
        await store.close()  # closing twice is harmless


async def test_task_manager_snapshot_db_keeps_results(db_path: str) -> None:
    tm = TaskManager(snapshot_db=db_path)

    @tm.task()
    async def add(a: int, b: int) -> int:
        return a + b

    async with tm:
        first = await tm.enqueue(add, 2, 3)
        assert (await tm.wait(first, timeout=10)).status is TaskStatus.SUCCESS
    async with tm:  # run, stop, run again on the same file
        second = await tm.enqueue(add, 4, 5)
        assert (await tm.wait(second, timeout=10)).status is TaskStatus.SUCCESS

    fresh = SQLiteStore(db_path)  # never opened: the sync get still reads
    results = [rec.result for rec in map(fresh.get, (first, second)) if rec is not None]
    assert results == [5, 9]


async def test_a_cancelled_claim_still_hands_back_what_it_took(db_path: str) -> None:
    store = SQLiteStore(db_path, busy_timeout=5)
    await store.open()
    await store.insert([make() for _ in range(3)])
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # the claim waits for this lock in its thread
    got: list[TaskRecord] = []
    scope = anyio.CancelScope()

    async def claimer() -> None:
        with scope:
            got.extend(await store.claim("w", 10, T0, LEASE_UNTIL))

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(claimer)
            await anyio.sleep(0.1)
            scope.cancel()  # cancelled while the claim is under way...
            await anyio.sleep(0.1)
            blocker.execute("ROLLBACK")  # ...which then commits
    finally:
        blocker.close()
    counts = await store.counts()
    await store.close()
    assert len(got) == 3
    assert counts[TaskStatus.RUNNING] == 3


# -- sync get --------------------------------------------------------------------------


async def test_the_writer_thread_ends_with_close_and_writes_fail_after(db_path: str) -> None:
    store = SQLiteStore(db_path)
    await store.open()
    await store.insert([make(id="a")])
    thread = store._writer_thread.thread
    assert thread is not None
    assert thread.is_alive()
    assert thread.daemon  # never keeps the process alive
    await store.close()
    await anyio.to_thread.run_sync(thread.join, 5)
    assert not thread.is_alive()
    with pytest.raises(StoreError, match="not open"):
        await store.insert([make(id="b")])


async def test_sync_get_works_from_plain_threads(db_path: str) -> None:
    store = SQLiteStore(db_path)
    await store.open()
    ids = [f"t{i}" for i in range(20)]
    await store.insert([make(id=i) for i in ids])
    seen: list[str] = []
    lock = threading.Lock()

    def reader() -> None:
        for task_id in ids:
            rec = store.get(task_id)
            assert rec is not None
            with lock:
                seen.append(rec.id)

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        await anyio.to_thread.run_sync(t.join)
    await store.close()
    assert sorted(seen) == sorted(ids * 6)


def test_sync_get_on_a_missing_file_is_none_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    assert SQLiteStore(path).get("x") is None
    assert not path.exists()


# -- schema and pragmas ----------------------------------------------------------------


async def test_wal_strict_and_synchronous_are_on(db_path: str) -> None:
    store = SQLiteStore(db_path)
    await store.open()
    await store.close()
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        sql = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
        for table in ("anytask_meta", "anytask_tasks", "anytask_schedules"):
            assert sql[table].rstrip().endswith("STRICT")
        with pytest.raises(sqlite3.IntegrityError, match="cannot store TEXT"):
            conn.execute(
                "INSERT INTO anytask_tasks (id, name, args, kwargs, created_at, run_after,"
                " status, priority, tags, attempts, max_attempts, requeue_on_interrupt,"
                " logs, token, cancel_requested) VALUES"
                " ('x', 'n', '[]', '{}', 0, 0, 'pending', 'high', '[]', 0, 1, 0, '[]', 0, 0)"
            )
    finally:
        conn.close()


@pytest.mark.parametrize(("synchronous", "level"), [("FULL", 2), ("normal", 1)])
async def test_synchronous_setting_reaches_the_writer(
    db_path: str, synchronous: str, level: int
) -> None:
    store = SQLiteStore(db_path, synchronous=synchronous)
    await store.open()
    try:
        writer = store._writer
        assert writer is not None
        assert writer.execute("PRAGMA synchronous").fetchone()[0] == level
    finally:
        await store.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"path": ":memory:"},
        {"path": ""},
        {"path": "x.db", "synchronous": "OFF"},
        {"path": "x.db", "busy_timeout": -1},
        {"path": "x.db", "busy_timeout": "5"},
    ],
)
def test_bad_options_fail_at_construction(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        SQLiteStore(**kwargs)


# -- typed errors; refused files are never modified ------------------------------------


def _real_db_bytes(tmp_path: Path) -> bytes:
    src = tmp_path / "src" / "real.db"
    src.parent.mkdir()

    async def build() -> None:
        store = SQLiteStore(src)
        await store.open()
        await store.insert([make() for _ in range(50)])
        await store.close()

    anyio.run(build)
    return src.read_bytes()


@pytest.mark.parametrize("kind", ["garbage", "header-only", "damaged-page"])
def test_corrupt_file_is_refused_and_left_untouched(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "db" / "tasks.db"
    path.parent.mkdir()
    if kind == "garbage":
        data = os.urandom(8192)
    elif kind == "header-only":
        data = b"SQLite format 3\x00" + b"\xff" * 4080
    else:
        real = bytearray(_real_db_bytes(tmp_path))
        real[100:4096] = b"\xa5" * (4096 - 100)  # the schema page
        data = bytes(real)
    path.write_bytes(data)

    async def open_it() -> None:
        await SQLiteStore(path).open()

    with pytest.raises(StoreCorruptError):
        anyio.run(open_it)
    assert path.read_bytes() == data
    assert sidecars(path) == []


def test_damage_deep_in_the_file_is_refused_before_any_write(tmp_path: Path) -> None:
    # the header and the schema are fine; garbage sits in the pages of the task rows
    src = tmp_path / "src.db"

    async def build() -> None:
        store = SQLiteStore(src)
        await store.open()
        await store.insert([make(args=["x" * 500]) for _ in range(400)])
        await store.close()

    anyio.run(build)
    data = bytearray(src.read_bytes())
    assert len(data) > 40 * 4096
    page = len(data) // 2 // 4096 * 4096  # two whole pages in the middle, zeroed
    data[page : page + 8192] = bytes(8192)
    path = tmp_path / "db" / "tasks.db"
    path.parent.mkdir()
    path.write_bytes(bytes(data))

    async def open_it(check: str) -> None:
        store = SQLiteStore(path, integrity_check=check)
        await store.open()
        await store.close()

    for check in ("quick", "full"):
        # (the check reports the damage, or SQLite stops it as malformed)
        with pytest.raises(StoreCorruptError, match=r"damaged|malformed"):
            anyio.run(open_it, check)
        assert path.read_bytes() == data
        assert sidecars(path) == []
    anyio.run(open_it, "off")  # what catches it is the check: without it, the file opens


def test_integrity_check_option_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="integrity_check"):
        SQLiteStore(tmp_path / "t.db", integrity_check="fast")


def test_sqlite_file_of_another_application_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
    conn.execute("INSERT INTO users (email) VALUES ('a@b.c')")
    conn.commit()
    conn.close()
    data = path.read_bytes()

    async def open_it() -> None:
        await SQLiteStore(path).open()

    with pytest.raises(StoreCorruptError, match="another application"):
        anyio.run(open_it)
    assert path.read_bytes() == data


async def test_empty_file_becomes_an_anytask_database(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    store = SQLiteStore(path)
    await store.open()
    try:
        assert await store.insert([make(id="x")]) == [True]
    finally:
        await store.close()


def test_newer_schema_version_is_refused_and_left_untouched(db_path: str) -> None:
    async def create() -> None:
        store = SQLiteStore(db_path)
        await store.open()
        await store.close()

    anyio.run(create)
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE anytask_meta SET value = '999' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    data = Path(db_path).read_bytes()

    async def open_it() -> None:
        await SQLiteStore(db_path).open()

    with pytest.raises(SchemaVersionError, match="999"):
        anyio.run(open_it)
    assert Path(db_path).read_bytes() == data


def _indexes(db_path: str) -> set[str]:
    conn = sqlite3.connect(db_path)
    try:
        return {
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'anytask_%'"
            )
        }
    finally:
        conn.close()


# what each older version had that the current one does not (and lacks what it has)
_OLD_SCHEMAS = {
    # version 1: two indexes on every state change, all pending tasks by run_after
    1: """
        DROP INDEX anytask_tasks_finished;
        DROP INDEX anytask_tasks_delayed;
        CREATE INDEX anytask_tasks_status ON anytask_tasks (status, seq);
        CREATE INDEX anytask_tasks_lease ON anytask_tasks (lease_expires_at)
            WHERE status = 'running';
        CREATE INDEX anytask_tasks_run_after ON anytask_tasks (run_after)
            WHERE status = 'pending';
        UPDATE anytask_meta SET value = '1' WHERE key = 'schema_version';
    """,
    # version 2: all pending tasks by run_after
    2: """
        DROP INDEX anytask_tasks_delayed;
        CREATE INDEX anytask_tasks_run_after ON anytask_tasks (run_after)
            WHERE status = 'pending';
        UPDATE anytask_meta SET value = '2' WHERE key = 'schema_version';
    """,
}


@pytest.mark.parametrize("old", sorted(_OLD_SCHEMAS))
def test_an_older_file_is_upgraded_in_place_and_keeps_its_tasks(db_path: str, old: int) -> None:
    async def create() -> None:
        store = SQLiteStore(db_path)
        await store.open()
        await store.insert([make(id=f"t{i}", priority=i % 2) for i in range(4)])
        await store.insert([make(id="later", run_after=T0 + timedelta(seconds=60))])
        [done] = await store.claim("w", 1, T0, LEASE_UNTIL)
        await store.complete([Outcome(done.id, done.token, TaskStatus.FAILED, ended_at=T0)])
        await store.close()

    anyio.run(create)
    conn = sqlite3.connect(db_path)
    conn.executescript(_OLD_SCHEMAS[old])
    conn.close()

    async def reopen() -> None:
        store = SQLiteStore(db_path)
        await store.open()
        try:
            counts = await store.counts()
            assert counts[TaskStatus.PENDING] == 4
            assert counts[TaskStatus.FAILED] == 1
            dead = await store.list(TaskQuery(statuses=frozenset({TaskStatus.FAILED})))
            assert [r.id for r in dead.items] == ["t1"]
            assert await store.next_run_after() == T0 + timedelta(seconds=60)  # the new index
            claimed = await store.claim("w", 10, T0, LEASE_UNTIL)
            assert [r.id for r in claimed] == ["t3", "t0", "t2"]  # priority, then FIFO
        finally:
            await store.close()

    anyio.run(reopen)
    conn = sqlite3.connect(db_path)
    (version,) = conn.execute(
        "SELECT value FROM anytask_meta WHERE key = 'schema_version'"
    ).fetchone()
    conn.close()
    assert int(version) == SCHEMA_VERSION == 3
    indexes = _indexes(db_path)
    assert {"anytask_tasks_finished", "anytask_tasks_delayed"} <= indexes
    assert not {"anytask_tasks_status", "anytask_tasks_lease", "anytask_tasks_run_after"} & indexes


def _index_sql(db_path: str) -> dict[str, str]:
    conn = sqlite3.connect(db_path)
    try:
        return {
            name: " ".join(sql.split())
            for name, sql in conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            )
        }
    finally:
        conn.close()


# The first files of version 1 (before the version's covering ended-time index and its
# replay index, which came while the version stayed 1)
_FIRST_V1_INDEXES = """
    DROP INDEX anytask_tasks_replay;
    DROP INDEX anytask_tasks_ended;
    CREATE INDEX anytask_tasks_ended ON anytask_tasks (ended_at) WHERE ended_at IS NOT NULL;
"""


@pytest.mark.parametrize("stored_version", [1, 3])
def test_a_file_of_the_first_version_1_gets_every_index_a_new_file_has(
    tmp_path: Path, stored_version: int
) -> None:
    # stored_version 3: such a file that an earlier release already upgraded
    fresh, old = str(tmp_path / "fresh.db"), str(tmp_path / "old.db")

    async def create(path: str) -> None:
        store = SQLiteStore(path)
        await store.open()
        await store.insert([make(id="d", status=TaskStatus.FAILED, ended_at=T0)])
        await store.close()

    anyio.run(create, fresh)
    anyio.run(create, old)
    conn = sqlite3.connect(old)
    conn.executescript(_OLD_SCHEMAS[1] if stored_version == 1 else "")
    conn.executescript(_FIRST_V1_INDEXES)
    conn.close()
    assert _index_sql(old) != _index_sql(fresh)

    async def reopen() -> None:
        store = SQLiteStore(old)
        await store.open()
        try:
            assert [r.id for r in (await store.list(TaskQuery())).items] == ["d"]
        finally:
            await store.close()

    anyio.run(reopen)
    assert _index_sql(old) == _index_sql(fresh)


@pytest.mark.parametrize("old", [None, *sorted(_OLD_SCHEMAS)])
def test_opening_a_file_whose_indexes_are_current_changes_no_schema(
    tmp_path: Path, old: int | None
) -> None:
    # The index check at open rebuilds only what differs: a new file, or an old one once
    # upgraded, is opened without touching its schema (a rebuild of a large file's
    # indexes at every start would cost seconds).
    path = str(tmp_path / "current.db")

    async def open_close() -> None:
        store = SQLiteStore(path)
        await store.open()
        await store.insert([make(id="d", status=TaskStatus.FAILED, ended_at=T0)])
        await store.close()

    def schema_cookie() -> int:
        conn = sqlite3.connect(path)
        try:
            (cookie,) = conn.execute("PRAGMA schema_version").fetchone()
        finally:
            conn.close()
        return int(cookie)

    anyio.run(open_close)
    if old is not None:
        conn = sqlite3.connect(path)
        conn.executescript(_OLD_SCHEMAS[old])
        conn.close()
        anyio.run(open_close)  # the upgrade
    cookie = schema_cookie()
    anyio.run(open_close)
    assert schema_cookie() == cookie


def test_missing_directory_is_an_error_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "tasks.db"

    async def open_it() -> None:
        await SQLiteStore(path).open()

    with pytest.raises(StoreError, match="does not exist"):
        anyio.run(open_it)
    assert not path.parent.exists()


async def test_locked_database_raises_store_locked(db_path: str) -> None:
    store = SQLiteStore(db_path, busy_timeout=0.2)
    await store.open()
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreLockedError):
            await store.insert([make()])
        late = SQLiteStore(db_path, busy_timeout=0.2)
        with pytest.raises(StoreLockedError):
            await late.open()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    try:
        assert await store.insert([make()]) == [True]  # usable again once released
    finally:
        await store.close()


_AS_NOBODY = textwrap.dedent(
    """
    import json, os, sys
    import anyio, anyio._backends._asyncio
    from anytask.stores.sqlite import SQLiteStore
    if os.geteuid() == 0:  # root ignores file modes: drop to nobody to test them
        os.setgid(65534)
        os.setuid(65534)

    async def main(path):
        store = SQLiteStore(path)
        try:
            await store.open()
        except Exception as exc:
            return type(exc).__name__
        await store.close()
        return "opened"

    print(json.dumps([anyio.run(main, p) for p in sys.argv[1:]]))
    """
)


def test_read_only_file_or_directory_raises_store_read_only(tmp_path: Path) -> None:
    base = tmp_path / "ro"
    ro_dir, ro_file_dir = base / "dir", base / "file"
    ro_file_dir.mkdir(parents=True)
    ro_dir.mkdir()
    ro_file = ro_file_dir / "tasks.db"

    async def create() -> None:
        store = SQLiteStore(ro_file)
        await store.open()
        await store.close()

    anyio.run(create)
    data = ro_file.read_bytes()
    ro_file.chmod(0o444)
    ro_dir.chmod(0o555)
    for p in (tmp_path, *base.parents):  # let an unprivileged user reach the files
        if p != Path("/") and p.stat().st_uid == os.geteuid():
            p.chmod(p.stat().st_mode | 0o011)
    base.chmod(0o755)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _AS_NOBODY, str(ro_dir / "tasks.db"), str(ro_file)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        ro_dir.chmod(0o755)
        ro_file.chmod(0o644)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [StoreReadOnlyError.__name__] * 2
    assert not (ro_dir / "tasks.db").exists()
    assert ro_file.read_bytes() == data


# -- several writers on one file -------------------------------------------------------


async def test_two_stores_on_one_file_never_double_claim(db_path: str) -> None:
    stores = [SQLiteStore(db_path), SQLiteStore(db_path)]
    for store in stores:
        await store.open()
    try:
        ids = [uuid.uuid4().hex for _ in range(2000)]
        for i in range(0, len(ids), 500):
            await stores[0].insert([make(id=x) for x in ids[i : i + 500]])
        taken: list[list[str]] = [[], []]

        async def claimer(n: int) -> None:
            while batch := await stores[n].claim(f"w{n}", 25, T0, LEASE_UNTIL):
                taken[n].extend(r.id for r in batch)

        async with anyio.create_task_group() as tg:
            tg.start_soon(claimer, 0)
            tg.start_soon(claimer, 1)
    finally:
        for store in stores:
            await store.close()
    assert not set(taken[0]) & set(taken[1])
    assert sorted(taken[0] + taken[1]) == sorted(ids)


_CLAIMER = textwrap.dedent(
    """
    import json, os, sys, time
    from datetime import UTC, datetime, timedelta
    import anyio
    from anytask.stores.sqlite import SQLiteStore

    async def main(path, owner, go):
        store = SQLiteStore(path)
        await store.open()
        print("ready", flush=True)
        while not os.path.exists(go):
            time.sleep(0.001)
        now = datetime.now(UTC)
        taken = []
        while batch := await store.claim(owner, 5, now, now + timedelta(seconds=60)):
            taken.extend(r.id for r in batch)
        await store.close()
        print(json.dumps(taken), flush=True)

    anyio.run(main, *sys.argv[1:])
    """
)


def test_two_processes_on_one_file_never_double_claim(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    go = tmp_path / "go"
    ids = [uuid.uuid4().hex for _ in range(2000)]
    now = datetime.now(UTC)

    async def fill() -> None:
        store = SQLiteStore(path)
        await store.open()
        await store.insert([make(id=x, created_at=now, run_after=now) for x in ids])
        await store.close()

    anyio.run(fill)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, str(path), f"p{n}", str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        go.touch()
        results = [proc.communicate(timeout=60) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    taken = []
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        taken.append(json.loads(out))
    assert not set(taken[0]) & set(taken[1])
    assert sorted(taken[0] + taken[1]) == sorted(ids)


_OPEN_AND_CLOSE = """
import sys, anyio
from anytask.stores.sqlite import SQLiteStore

async def main():
    store = SQLiteStore(sys.argv[1], busy_timeout=2)
    await store.open()
    await store.close()

anyio.run(main)
"""


def test_processes_opening_one_new_file_at_once_all_get_in(tmp_path: Path) -> None:
    # two connections switching a new file to WAL and creating the schema at once can
    # deadlock; SQLite then says "locked" at once: open() must retry, not fail
    script = tmp_path / "open_and_close.py"
    script.write_text(_OPEN_AND_CLOSE)
    failures = []
    for i in range(40):
        path = str(tmp_path / f"race{i}.db")
        procs = [
            subprocess.Popen([sys.executable, str(script), path], stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            if proc.returncode != 0:
                failures.append(err.strip().splitlines()[-1])
    assert failures == []


# -- what a claim hands out ---------------------------------------------------------------


def _fields(rec: TaskRecord) -> dict[str, Any]:
    return {f.name: getattr(rec, f.name) for f in dataclasses.fields(rec)}


def _varied(i: int) -> TaskRecord:
    """Records that differ in every field a claim hands out."""
    return make(
        id=f"v{i}",
        name=f"job{i % 3}",
        args=[i, {"nested": [i, "x"]}, None, 1.5] if i % 2 else [],
        kwargs={"k": [i], "s": "é"} if i % 3 else {},
        created_at=T0 + timedelta(microseconds=i),
        run_after=T0 - timedelta(seconds=i),
        priority=i % 4 - 1,
        tags=["a", f"t{i}"] if i % 2 else [],
        idempotency_key=f"key{i}" if i % 5 == 0 else None,
        max_attempts=1 + i % 3,
        timeout=None if i % 2 else 2.5,
        requeue_on_interrupt=bool(i % 2),
        schedule_id="every-minute" if i % 7 == 0 else None,
        fire_at=T0 + timedelta(minutes=i) if i % 7 == 0 else None,
        replay_of="old" if i % 4 == 0 else None,
        token=i % 2,
        attempts=i % 2,
    )


async def test_a_claimed_record_equals_its_row_in_the_file(db_path: str) -> None:
    store, other = SQLiteStore(db_path), SQLiteStore(db_path)
    await store.open()
    await other.open()
    try:
        await store.insert([_varied(i) for i in range(0, 40, 2)])
        await other.insert([_varied(i) for i in range(1, 40, 2)])
        later = T0 + timedelta(seconds=5)
        claimed = await store.claim("me", 100, later, later + timedelta(seconds=30))
        assert len(claimed) == 40
        # priority, then FIFO
        assert [(r.priority, r.seq) for r in claimed] == sorted(
            ((r.priority, r.seq) for r in claimed), key=lambda p: (-p[0], p[1])
        )
        for rec in claimed:
            stored = await store.fetch(rec.id)
            assert stored is not None
            assert _fields(rec) == _fields(stored), rec.id
            assert rec.status is TaskStatus.RUNNING
            assert rec.owner == "me"
            assert rec.started_at == later
    finally:
        await store.close()
        await other.close()


async def test_a_task_claimed_again_is_read_back_from_the_file(db_path: str) -> None:
    store = SQLiteStore(db_path)
    await store.open()
    try:
        payload = [1, 2]  # the caller's own list
        await store.insert([make(id="r", args=[payload])])
        [first] = await store.claim("me", 1, T0, LEASE_UNTIL)
        first.args[0].append(3)  # the task changes its argument
        assert payload == [1, 2]  # not the caller's
        retry = Outcome(
            "r",
            first.token,
            TaskStatus.PENDING,
            error="boom",
            error_type="ValueError",
            ended_at=T0,
            run_after=T0,
            logs=["tried once"],
            seq=first.seq,
        )
        assert await store.complete([retry]) == [True]
        [second] = await store.claim("me", 1, T0, LEASE_UNTIL)
        assert second.args == [[1, 2]]  # what was enqueued, not what the task made of it
        assert (second.attempts, second.error, second.logs) == (2, "boom", ["tried once"])
        stored = await store.fetch("r")
        assert stored is not None
        assert _fields(second) == _fields(stored)
    finally:
        await store.close()


async def test_a_task_changed_by_another_store_is_claimed_as_it_now_is(
    db_path: str,
) -> None:
    store, other = SQLiteStore(db_path), SQLiteStore(db_path)
    await store.open()
    await other.open()
    try:
        await store.insert([make(id="a"), make(id="b")])
        # another process claims "a" and gives it back for a retry, cancels "b"
        [a] = await other.claim("them", 1, T0, LEASE_UNTIL)
        out = Outcome("a", a.token, TaskStatus.PENDING, error="again", ended_at=T0, seq=a.seq)
        assert await other.complete([out]) == [True]
        assert await other.cancel("b", T0) is TaskStatus.CANCELLED
        claimed = await store.claim("me", 5, T0, LEASE_UNTIL)
        assert [r.id for r in claimed] == ["a"]
        assert (claimed[0].attempts, claimed[0].token, claimed[0].error) == (2, 2, "again")
    finally:
        await store.close()
        await other.close()


# -- multi-row statements --------------------------------------------------------------


async def test_batched_inserts_and_outcomes_answer_as_one_statement_per_row(
    db_path: str,
) -> None:
    """Inserts and outcomes go in multi-row statements; what each row gets (inserted or
    not, accepted or not) and the rows left behind are those of the in-memory store,
    which applies them one by one."""
    from anytask import MemoryStore

    sqlite_store = SQLiteStore(db_path)
    await sqlite_store.open()
    stores: list[Any] = [MemoryStore(), sqlite_store]
    answers: list[Any] = []
    rows: list[Any] = []
    try:
        for store in stores:
            await store.insert([make(id="old", idempotency_key="k-old")])
            batch = [make(id=f"n{i}", priority=i % 3) for i in range(150)]  # chunks: 64+64+16+4+2
            batch[10] = make(id="dup-key-1", idempotency_key="k1")
            batch[20] = make(id="dup-key-2", idempotency_key="k1")  # same key in the batch
            batch[30] = make(id="old")  # an id already stored
            batch[40] = make(id="reuses-old-key", idempotency_key="k-old")
            batch[50] = make(id="n51")  # the same id twice in the batch
            inserted = await store.insert(batch)
            claimed = await store.claim("me", 200, T0, LEASE_UNTIL)
            by_id = {r.id: r for r in claimed}
            outcomes = []
            for i, rec in enumerate(sorted(claimed, key=lambda r: r.id)):
                if i % 10 == 0:
                    outcomes.append(Outcome(rec.id, rec.token + 1, TaskStatus.SUCCESS, seq=rec.seq))
                elif i % 10 == 1:
                    outcomes.append(
                        Outcome(rec.id, rec.token, TaskStatus.PENDING, error="again", seq=rec.seq)
                    )
                elif i % 10 == 2:
                    outcomes.append(Outcome(rec.id, rec.token, TaskStatus.FAILED, error="x"))
                else:
                    outcomes.append(
                        Outcome(
                            rec.id,
                            rec.token,
                            TaskStatus.SUCCESS,
                            result={"i": i},
                            logs=["done"] if i % 2 else None,
                            ended_at=T0,
                            seq=rec.seq,
                        )
                    )
            for task_id in ("n3", "n4", "n5"):  # a second outcome for a row: the first counts
                rec = by_id[task_id]
                outcomes.append(Outcome(task_id, rec.token, TaskStatus.FAILED, seq=rec.seq))
            completed = await store.complete(outcomes)
            answers.append((inserted, [o.id for o in outcomes], completed))
            page = await store.list(TaskQuery(limit=1000))
            rows.append(
                sorted((r.id, r.status, r.error, r.result, r.logs, r.attempts) for r in page.items)
            )
    finally:
        await sqlite_store.close()
    assert answers[0] == answers[1]
    assert rows[0] == rows[1]
    inserted, _, completed = answers[1]
    assert inserted.count(False) == 4
    assert True in completed
    assert False in completed


async def test_a_task_inserted_and_claimed_in_one_commit_equals_its_row(db_path: str) -> None:
    store = SQLiteStore(db_path)
    await store.open()
    try:
        records = [_varied(i) for i in range(6)]
        res = await store.write_batch(records, [], "me", 4, T0, LEASE_UNTIL)
        assert res.inserted == [True] * 6
        assert len(res.claimed) == 4
        for rec in res.claimed:
            stored = await store.fetch(rec.id)
            assert stored is not None
            assert _fields(rec) == _fields(stored)
        assert all(r.status is TaskStatus.PENDING for r in records)  # the caller's: untouched
    finally:
        await store.close()


async def test_delayed_tasks_and_retries_run_when_due_not_at_the_next_poll(db_path: str) -> None:
    """The dispatcher learns when to claim again from the delayed-tasks index; with a poll
    interval of 30 s, anything that waited for a poll would miss the deadline below."""
    tm = TaskManager(snapshot_db=db_path, poll_interval=30.0)
    calls: list[str] = []

    @tm.task(retries=1, delay=0.3)
    async def flaky() -> str:
        calls.append("flaky")
        if calls.count("flaky") == 1:
            raise RuntimeError("first try")
        return "ok"

    @tm.task
    async def plain(i: int) -> int:
        return i

    async with tm:
        with anyio.fail_after(5):
            later = await tm.enqueue(plain, 1, delay=0.4)
            retried = await tm.enqueue(flaky)
            now_ids = [await tm.enqueue(plain, i) for i in range(5)]
            for task_id in now_ids:
                assert (await tm.wait(task_id)).status is TaskStatus.SUCCESS
            rec = await tm.wait(retried)
            assert rec.status is TaskStatus.SUCCESS
            assert rec.attempts == 2
            assert (await tm.wait(later)).status is TaskStatus.SUCCESS


@pytest.mark.parametrize("ends", ["success", "lease lost"])
async def test_a_task_that_came_due_while_every_slot_was_taken_runs_when_one_frees(
    db_path: str, ends: str
) -> None:
    """A commit that fills every slot does not wake the dispatcher (it could only go back
    to sleep). Delayed tasks that come due meanwhile must still start as soon as a slot
    frees, whether the slot frees with an outcome for the writer or without one (an
    attempt whose lease was lost hands nothing on), long before the 30 s poll."""
    tm = TaskManager(snapshot_db=db_path, max_concurrency=2, poll_interval=30.0)
    gates = [anyio.Event(), anyio.Event()]
    started: list[int] = []
    both_started = anyio.Event()

    @tm.task
    async def hold(i: int) -> None:
        started.append(i)
        if len(started) == 2:
            both_started.set()
        await gates[i].wait()

    @tm.task
    async def later(i: int) -> int:
        return i

    async with tm:
        with anyio.fail_after(10):
            delayed = [await tm.enqueue(later, i, delay=0.2 + 0.1 * i) for i in range(3)]
            held = [await tm.enqueue(hold, i) for i in range(2)]
            await both_started.wait()
            await anyio.sleep(0.5)  # all three came due; no slot is free
            for task_id in delayed:
                assert (await tm.get(task_id)).status is TaskStatus.PENDING  # type: ignore[union-attr]
            if ends == "lease lost":
                tm._active[held[0]].cancel("lease")  # as the heartbeat does
            else:
                gates[0].set()
            first = await tm.wait(delayed[0])
            assert first.status is TaskStatus.SUCCESS
            gates[1].set()
            for task_id in delayed[1:]:
                assert (await tm.wait(task_id)).status is TaskStatus.SUCCESS


async def test_batch_answers_hold_for_a_repeated_id_and_a_borrowed_seq(db_path: str) -> None:
    """Two rows of one batch with the same id, the first refused on another key: the same
    answers as the in-memory store. Outcomes that carry another task's seq are refused
    (the row found by seq must have the outcome's id) and change nothing."""
    from anytask import MemoryStore

    sqlite_store = SQLiteStore(db_path)
    await sqlite_store.open()
    answers = []
    try:
        for store in (MemoryStore(), sqlite_store):
            await store.insert([make(id="holder", idempotency_key="K")])
            batch = [make(id="X", idempotency_key="K"), make(id="X", args=["B"]), make(id="Z")]
            inserted = await store.insert(batch)
            stored = await store.fetch("X")
            assert stored is not None
            answers.append((inserted, stored.args, stored.idempotency_key))
        claimed = {r.id: r for r in await sqlite_store.claim("me", 10, T0, LEASE_UNTIL)}
        x = claimed["X"]
        outcomes = [
            Outcome(rid, claimed[rid].token, TaskStatus.SUCCESS, ended_at=T0, seq=x.seq)
            for rid in ("Z", "X", "holder")
        ]
        assert await sqlite_store.complete(outcomes) == [False, True, False]
        statuses = {rid: (await sqlite_store.fetch(rid)).status for rid in claimed}  # type: ignore[union-attr]
    finally:
        await sqlite_store.close()
    assert answers[0] == answers[1] == ([False, True, True], ["B"], None)
    assert statuses == {
        "X": TaskStatus.SUCCESS,
        "Z": TaskStatus.RUNNING,
        "holder": TaskStatus.RUNNING,
    }


def test_the_short_insert_of_a_new_record_covers_every_column() -> None:
    # A new record goes in with only the columns it can vary in (the rest literals or
    # NULL), when _is_fresh says the record holds nothing else. Every column must be in
    # exactly one of those groups: a column added later and forgotten here would be
    # dropped from new records without a word.
    from anytask.stores import sqlite as mod

    fresh = set(mod._FRESH_COLUMNS)
    literal = set(mod._FRESH_LITERALS)
    # the columns _is_fresh requires to be empty (None / 0 / [] / False)
    checked = {
        "status", "attempts", "token", "logs", "result", "started_at", "ended_at",
        "error", "error_type", "traceback", "owner", "lease_expires_at", "cancel_requested",
    }  # fmt: skip
    left_null = checked - literal
    assert not fresh & literal
    assert fresh | literal | left_null == set(mod._COLUMNS) - {"seq"}
    # and _is_fresh does refuse a record with any one of them set
    base = TaskRecord("x", "n", [], {}, T0, T0)
    assert mod._is_fresh(base)
    changed: dict[str, Any] = {
        "status": TaskStatus.RUNNING, "attempts": 1, "token": 1,
        "logs": [{"ts": 1.0, "level": "info", "msg": "m"}], "result": 0, "started_at": T0,
        "ended_at": T0, "error": "e", "error_type": "E", "traceback": "t", "owner": "o",
        "lease_expires_at": T0, "cancel_requested": True,
    }  # fmt: skip
    assert set(changed) == checked
    for field, value in changed.items():
        assert not mod._is_fresh(dataclasses.replace(base, **{field: value})), field


# -- claims built from what the insert wrote ---------------------------------------------


def _remembered(i: int) -> TaskRecord:
    """Fresh records whose fields take the shapes a read of the row could change: an int
    timeout (read back as a float), times in another zone, before 1970 or far ahead
    (read back as UTC, through the float), nested payloads, tags, keys, fires."""
    plus_two = timezone(timedelta(hours=2))
    created = [T0, T0.astimezone(plus_two), datetime(1969, 7, 20, 20, 17, 40, 5, tzinfo=UTC)]
    return make(
        id=f"m{i}",
        name=f"job{i % 2}",
        args=[i, {"nested": [i, "x"]}] if i % 2 else [],
        kwargs={"k": [i]} if i % 3 else {},
        created_at=created[i % 3] + timedelta(microseconds=i),
        run_after=T0 - timedelta(seconds=i) if i % 4 else T0.astimezone(plus_two),
        priority=i % 3,
        tags=[f"t{i}"] if i % 2 else [],
        idempotency_key=f"key{i}" if i % 5 == 0 else None,
        max_attempts=1 + i % 3,
        timeout=[None, 3, 2.5][i % 3],
        requeue_on_interrupt=bool(i % 2),
        schedule_id="s" if i % 4 == 1 else None,
        fire_at=datetime(2999, 1, 1, 0, 0, 0, 123457, tzinfo=UTC) + timedelta(minutes=i)
        if i % 4 == 1
        else None,
        replay_of="old" if i % 6 == 0 else None,
    )


def _remembered_ids(store: SQLiteStore) -> set[str]:
    return {entry[0][0] for entry in store._inserted_here.values()}


def _full_reads(seen: list[str]) -> int:
    """How many claims read rows in full (the rows not built from memory)."""
    return sum("json_each" in statement for statement in seen)


async def _assert_claims_equal_rows(store: SQLiteStore, claimed: list[TaskRecord]) -> None:
    for rec in claimed:
        stored = await store.fetch(rec.id)
        assert stored is not None
        assert _fields(rec) == _fields(stored), rec.id
        for name, value in _fields(rec).items():
            assert type(value) is type(getattr(stored, name)), (rec.id, name)


async def test_a_claim_of_a_task_inserted_here_is_built_from_its_insert(db_path: str) -> None:
    """A record this store inserted and claims for the first time is handed out from what
    the insert wrote (the claim reads four columns); it must equal its row in the file,
    field for field and type for type, whether inserted alone or with its claim."""
    store = SQLiteStore(db_path)
    await store.open()
    try:
        assert store._writer is not None
        records = [_remembered(i) for i in range(24)]
        payload = records[1].args[1]
        await store.insert(records[:12])
        payload["nested"].append("changed by the caller after the insert")
        assert _remembered_ids(store) == {f"m{i}" for i in range(12)}
        seen = _statements(store._writer)
        later = T0 + timedelta(seconds=5)
        res = await store.write_batch(records[12:], [], "me", 30, later, later + LEASE)
        claimed = res.claimed + await store.claim("me", 30, later, later + LEASE)
        assert len(claimed) == 24
        assert _full_reads(seen) == 0  # every one was built from memory
        assert store._inserted_here == {}
        await _assert_claims_equal_rows(store, claimed)
        assert next(r for r in claimed if r.id == "m1").args[1]["nested"] == [1, "x"]
    finally:
        await store.close()


async def test_records_a_read_could_change_are_read_in_full(db_path: str) -> None:
    """Records holding what the file would turn into something else (a float priority,
    a bool, NaN, subclasses) or a large payload are not remembered: their claims read
    them, and hand out what a read gives."""

    class Name(str):
        pass

    class When(datetime):
        pass

    odd = [
        make(id="float-priority", priority=3.0),
        make(id="bool-priority", priority=True),
        make(id="float-attempts", max_attempts=2.0),
        make(id="nan-timeout", timeout=math.nan),
        make(id="bool-timeout", timeout=True),
        make(id="int-requeue", requeue_on_interrupt=1),
        make(id="str-subclass", name=Name("job")),
        make(id="datetime-subclass", created_at=When(2026, 3, 1, tzinfo=UTC)),
        make(id="large", args=["x" * 600]),
    ]
    store = SQLiteStore(db_path)
    await store.open()
    try:
        assert store._writer is not None
        await store.insert([*odd, make(id="plain", timeout=4)])
        assert _remembered_ids(store) == {"datetime-subclass", "plain"}
        seen = _statements(store._writer)
        claimed = await store.claim("me", 20, T0, LEASE_UNTIL)
        assert len(claimed) == 10
        assert _full_reads(seen) == 1
        await _assert_claims_equal_rows(store, claimed)
        by_id = {r.id: r for r in claimed}
        assert type(by_id["datetime-subclass"].created_at) is datetime
        assert by_id["plain"].timeout == 4.0
    finally:
        await store.close()


async def test_claims_read_in_full_once_the_store_has_forgotten_its_inserts(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anytask.stores import sqlite as mod

    monkeypatch.setattr(mod, "_HERE_MAX", 10)
    store = SQLiteStore(db_path)
    await store.open()
    try:
        await store.insert([_remembered(i) for i in range(8)])
        assert len(store._inserted_here) == 8
        await store.insert([_remembered(i) for i in range(8, 12)])  # 12 > 10: forgets all
        assert _remembered_ids(store) == {f"m{i}" for i in range(8, 12)}
        await store.insert([_remembered(i) for i in range(12, 23)])  # 11 at once: none kept
        assert _remembered_ids(store) == {f"m{i}" for i in range(8, 12)}
        claimed = await store.claim("me", 30, T0, LEASE_UNTIL)
        assert len(claimed) == 23
        await _assert_claims_equal_rows(store, claimed)
    finally:
        await store.close()


async def test_a_remembered_task_cancelled_or_handed_back_is_not_built_from_memory(
    db_path: str,
) -> None:
    store = SQLiteStore(db_path)
    await store.open()
    try:
        await store.insert([make(id="c"), make(id="h", args=[1])])
        assert await store.cancel("c", T0) is TaskStatus.CANCELLED
        [h] = await store.claim("me", 5, T0, LEASE_UNTIL)  # "c" is not claimable any more
        assert h.id == "h"
        # handed back unrun (the attempt not counted): its next claim has token 2
        back = Outcome("h", h.token, TaskStatus.PENDING, ended_at=T0, attempts=0, seq=h.seq)
        assert await store.complete([back]) == [True]
        await store.insert([make(id="n")])
        claimed = {r.id: r for r in await store.claim("me", 5, T0, LEASE_UNTIL)}
        assert claimed["h"].token == 2
        assert claimed["h"].ended_at is None
        await _assert_claims_equal_rows(store, list(claimed.values()))
        assert _remembered_ids(store) == set()  # "c", cancelled unclaimed, is forgotten
    finally:
        await store.close()


@pytest.mark.parametrize("how", ["another store", "a batch not all fresh"])
async def test_an_id_inserted_again_after_a_purge_is_claimed_as_it_now_is(
    db_path: str, how: str
) -> None:
    # Ids come back: one derived from an idempotency key or from a replayed task is the
    # same id again once the first task was purged. What this store remembers of the
    # first insert must not stand for the second.
    store, other = SQLiteStore(db_path), SQLiteStore(db_path)
    await store.open()
    await other.open()
    try:
        await store.insert([make(id="k", args=["v1"])])
        assert await store.cancel("k", T0) is TaskStatus.CANCELLED
        assert await store.purge(T0 + timedelta(seconds=1)) == 1
        again = make(id="k", args=["v2"], priority=5, created_at=T0 + timedelta(hours=1))
        if how == "another store":
            assert await other.insert([again]) == [True]
        else:  # (a batch with a record that is not fresh goes in the long form)
            started = make(id="s", status=TaskStatus.SUCCESS, ended_at=T0)
            assert await store.insert([again, started]) == [True, True]
        [claimed] = await store.claim("me", 5, T0 + timedelta(hours=2), LEASE_UNTIL)
        assert claimed.args == ["v2"]
        await _assert_claims_equal_rows(store, [claimed])
    finally:
        await store.close()
        await other.close()


async def test_a_rolled_back_insert_is_forgotten(db_path: str) -> None:
    # The seqs of a transaction that failed are given again to the next rows; what the
    # store remembered of the failed one must not stand for them.
    store, other = SQLiteStore(db_path), SQLiteStore(db_path)
    await store.open()
    await other.open()
    try:
        # an outcome SQLite cannot bind fails the transaction after the insert
        bad = Outcome("nobody", 1, TaskStatus.FAILED, error=["not text"])  # type: ignore[arg-type]
        with pytest.raises(StoreError):
            await store.write_batch([make(id="k", args=["v1"])], [bad], "me", 0, T0, T0)
        assert store._inserted_here == {}
        assert await store.fetch("k") is None
        assert await other.insert([make(id="k", args=["v2"])]) == [True]  # the same seq
        [claimed] = await store.claim("me", 5, T0, LEASE_UNTIL)
        assert claimed.args == ["v2"]
        await _assert_claims_equal_rows(store, [claimed])
    finally:
        await store.close()
        await other.close()


def _statements(conn: sqlite3.Connection) -> list[str]:
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    return seen


async def test_new_records_without_key_fire_or_replay_leave_those_columns_out(
    db_path: str,
) -> None:
    """A batch of new records none of which has an idempotency key, a schedule fire or a
    replay link binds none of those columns (they are left NULL); a batch where one has
    any binds them all. Both read back as the records that went in."""
    from anytask.stores import sqlite as mod

    assert set(mod._PLAIN_OMITTED) <= set(mod._FRESH_COLUMNS)
    assert set(mod._PLAIN_COLUMNS) == set(mod._FRESH_COLUMNS) - set(mod._PLAIN_OMITTED)
    store = SQLiteStore(db_path)
    await store.open()
    try:
        assert store._writer is not None
        seen = _statements(store._writer)

        def columns() -> list[str]:
            heads = [s.split("VALUES")[0] for s in seen if s.startswith("INSERT")]
            seen.clear()
            assert heads
            return heads

        plain = [
            make(
                id=f"p{i}",
                args=[i, "x"],
                kwargs={"k": i},
                tags=["t", str(i)],
                priority=i % 3,
                max_attempts=3,
                timeout=1.5 if i % 2 else None,
                requeue_on_interrupt=bool(i % 2),
                created_at=T0,
                run_after=T0 + timedelta(seconds=i),
            )
            for i in range(10)
        ]
        assert await store.insert(plain) == [True] * 10
        assert all(not any(c in head for c in mod._PLAIN_OMITTED) for head in columns())
        replays = [make(id=f"r{i}", replay_of=f"p{i}") for i in range(3)]
        assert await store.insert(replays) == [True] * 3
        assert all("replay_of" in head and "fire_at" in head for head in columns())
        fired = [make(id="f", schedule_id="s", fire_at=T0), make(id="k", idempotency_key="key")]
        assert await store.insert(fired) == [True, True]
        assert all("idempotency_key" in head for head in columns())
        for rec in plain + replays + fired:
            got = await store.fetch(rec.id)
            assert got is not None
            for field in dataclasses.fields(TaskRecord):
                if field.name != "seq":
                    want = getattr(rec, field.name)
                    assert getattr(got, field.name) == want, (rec.id, field.name)
    finally:
        await store.close()


async def test_a_batch_of_new_records_goes_in_without_handing_ids_back(db_path: str) -> None:
    """With no idempotency key and no schedule fire in a batch, only a taken id can keep
    a row out: the count of rows written says whether all went in. When one did not, the
    batch is undone and inserted again the long way, and the answers are those of the
    in-memory store."""
    from anytask import MemoryStore
    from anytask.stores import sqlite as mod

    store = SQLiteStore(db_path)
    await store.open()
    try:
        assert store._writer is not None
        seen = _statements(store._writer)
        await store.insert([make(id=f"a{i}") for i in range(100)])
        inserts = [s for s in seen if s.startswith("INSERT")]
        assert inserts
        assert not any("RETURNING" in s for s in inserts)
        seen.clear()
        batch = [make(id=f"b{i}", args=[i]) for i in range(100)]
        batch[70] = make(id="a5", args=["not this one"])  # an id already stored
        memory = MemoryStore()
        await memory.insert([make(id=f"a{i}") for i in range(100)])
        assert await store.insert(batch) == await memory.insert(batch)
        assert any("ROLLBACK TO" in s for s in seen)
        assert any("RETURNING" in s for s in seen if s.startswith("INSERT"))
        page = await store.list(TaskQuery(limit=1000))
        assert len(page.items) == 199
        a5 = await store.fetch("a5")
        assert a5 is not None
        assert a5.args == []
        assert mod._HERE_MAX > 199  # (every fresh row was remembered once)
    finally:
        await store.close()


async def test_outcomes_apply_without_handing_rows_back_unless_one_is_refused(
    db_path: str,
) -> None:
    store = SQLiteStore(db_path)
    await store.open()
    try:
        assert store._writer is not None
        await store.insert([make(id=f"t{i}") for i in range(40)])
        claimed = await store.claim("me", 40, T0, LEASE_UNTIL)
        seen = _statements(store._writer)
        first = [
            Outcome(r.id, r.token, TaskStatus.SUCCESS, ended_at=T0, seq=r.seq) for r in claimed[:20]
        ]
        assert await store.complete(first) == [True] * 20
        updates = [s for s in seen if s.lstrip().startswith("UPDATE")]
        assert updates
        assert not any("RETURNING" in s for s in updates)
        assert not any("ROLLBACK TO" in s for s in seen)
        seen.clear()
        rest = claimed[20:]
        second = [
            Outcome(r.id, r.token + (i == 7), TaskStatus.SUCCESS, ended_at=T0, result=i, seq=r.seq)
            for i, r in enumerate(rest)
        ]
        answer = await store.complete(second)
        assert answer == [i != 7 for i in range(20)]
        assert any("ROLLBACK TO" in s for s in seen)
        statuses = {r.id: (await store.fetch(r.id)).status for r in rest}  # type: ignore[union-attr]
        assert [statuses[r.id] for r in rest] == [
            TaskStatus.RUNNING if i == 7 else TaskStatus.SUCCESS for i in range(20)
        ]
        results = [(await store.fetch(r.id)).result for r in rest]  # type: ignore[union-attr]
        assert results == [None if i == 7 else i for i in range(20)]
    finally:
        await store.close()


# -- retention passes ------------------------------------------------------------------

KEPT = frozenset({TaskStatus.SUCCESS, TaskStatus.CANCELLED})


def dead_and_replays(n: int, start: int = 0) -> list[TaskRecord]:
    """``n`` failed tasks and a successful replay of each, all ended at ``start``
    seconds and after: the replays stay while their tasks do."""
    out = []
    for i in range(n):
        ended = T0 + timedelta(seconds=start + i)
        out.append(make(id=f"dead-{start}-{i}", status=TaskStatus.FAILED, ended_at=ended))
        out.append(
            make(
                id=f"replay-{start}-{i}",
                status=TaskStatus.SUCCESS,
                ended_at=ended,
                replay_of=f"dead-{start}-{i}",
            )
        )
    return out


def old_successes(n: int, start: int) -> list[TaskRecord]:
    return [
        make(
            id=f"ok-{start}-{i}",
            status=TaskStatus.SUCCESS,
            ended_at=T0 + timedelta(seconds=start + i),
        )
        for i in range(n)
    ]


def _count_steps(store: SQLiteStore) -> list[int]:
    """From now on, SQLite's virtual-machine steps (in hundreds) of each write
    transaction of ``store``, in order: they do not depend on the machine's speed."""
    per_transaction: list[int] = []
    write_sync = store._write_sync

    def counted(fn: Any) -> Any:
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0  # (go on)

        assert store._writer is not None
        store._writer.set_progress_handler(count, 100)
        try:
            return write_sync(fn)
        finally:
            store._writer.set_progress_handler(None, 0)
            per_transaction.append(steps[0])

    store._write_sync = counted  # type: ignore[method-assign]
    return per_transaction


async def _pass_steps(db_path: str, records: list[TaskRecord], limit: int) -> tuple[int, int]:
    """A retention pass over ``records`` in a new file at ``db_path``: how many rows it
    deleted and how many steps (``_count_steps``) its transactions took."""
    store = SQLiteStore(db_path)
    await store.open()
    try:
        await store.insert(records)
        steps = _count_steps(store)
        deleted = 0
        while (n := await store.purge(T0 + timedelta(days=1), statuses=KEPT, limit=limit)) > 0:
            deleted += n
            if n < limit:
                break
        return deleted, sum(steps)
    finally:
        await store.close()


async def test_a_retention_pass_reads_the_replays_it_keeps_once_not_once_a_call(
    db_path: str,
) -> None:
    # 400 kept replays ended before 2,000 tasks a pass of 20 calls of 100 deletes: each
    # call must go on from where the last one stopped, not walk past the replays again.
    # Counted in SQLite's own steps, which do not depend on the machine's speed.
    kept = dead_and_replays(400)
    deletable = old_successes(2000, start=1000)
    _, keep_once = await _pass_steps(db_path + ".1", kept, limit=100)  # one call: reads all
    deleted, plain = await _pass_steps(db_path + ".2", deletable, limit=100)
    assert deleted == 2000
    deleted, both = await _pass_steps(db_path + ".3", kept + deletable, limit=100)
    assert deleted == 2000
    # (reading the replays in each of the 21 calls would add about 21 times keep_once)
    assert both - plain < 3 * keep_once, (both, plain, keep_once)


async def test_a_retention_pass_deletes_what_it_may_and_keeps_replays_of_stored_tasks(
    db_path: str,
) -> None:
    store = SQLiteStore(db_path)
    await store.open()
    try:
        # kept replays and deletable tasks, interleaved by end time
        await store.insert(
            dead_and_replays(5, start=0)
            + old_successes(7, start=10)
            + dead_and_replays(5, start=20)
            + old_successes(6, start=30)
        )
        cutoff = T0 + timedelta(days=1)
        counts = []
        while (n := await store.purge(cutoff, statuses=KEPT, limit=3)) == 3:
            counts.append(n)
        counts.append(n)
        assert counts == [3, 3, 3, 3, 1]  # the 13 old successes, and then the pass ends
        left = {r.id for r in (await store.list(TaskQuery(limit=100))).items}
        assert left == {f"dead-{s}-{i}" for s in (0, 20) for i in range(5)} | {
            f"replay-{s}-{i}" for s in (0, 20) for i in range(5)
        }

        # A pass that ended leaves no trace: the next one with the same arguments starts
        # from the oldest row again (here one that ended before where the last call
        # stopped, and a replay whose task went meanwhile).
        only_first = T0 + timedelta(seconds=0.5)
        assert await store.purge(only_first, statuses=[TaskStatus.FAILED]) == 1  # dead-0-0
        await store.insert(old_successes(1, start=-5))
        assert await store.purge(cutoff, statuses=KEPT, limit=3) == 2
        assert store.get("ok--5-0") is None
        assert store.get("replay-0-0") is None
    finally:
        await store.close()


async def test_a_purge_with_other_arguments_does_not_continue_a_pass(db_path: str) -> None:
    store = SQLiteStore(db_path)
    await store.open()
    try:
        await store.insert(
            [
                make(id="failed-early", status=TaskStatus.FAILED, ended_at=T0),
                *old_successes(4, start=10),
                make(
                    id="failed-late", status=TaskStatus.FAILED, ended_at=T0 + timedelta(seconds=20)
                ),
            ]
        )
        cutoff = T0 + timedelta(days=1)
        assert await store.purge(cutoff, statuses=KEPT, limit=2) == 2  # stops at ok-10-1
        # another rule (dead letters): from the oldest, not from where that call stopped
        assert await store.purge(cutoff, statuses=[TaskStatus.FAILED], limit=2) == 2
        assert store.get("failed-early") is None
        assert store.get("failed-late") is None
        # another cutoff: from the oldest too (a pass under way first)
        await store.insert(old_successes(4, start=40))
        assert await store.purge(cutoff, statuses=KEPT, limit=2) == 2  # ok-10-2, ok-10-3
        assert await store.purge(cutoff, statuses=KEPT, limit=2) == 2  # ok-40-0, ok-40-1
        await store.insert(old_successes(1, start=-5))
        assert await store.purge(cutoff + timedelta(seconds=1), statuses=KEPT, limit=2) == 2
        assert store.get("ok--5-0") is None
        assert store.get("ok-40-2") is None
        assert store.get("ok-40-3") is not None
    finally:
        await store.close()


async def test_a_retention_pass_takes_every_row_of_an_end_time_split_between_calls(
    db_path: str,
) -> None:
    # Rows that ended at the same moment are taken in seq order, and a call may stop in
    # the middle of them: the next one goes on with the rest, kept replays among them.
    same = T0 + timedelta(seconds=5)
    store = SQLiteStore(db_path)
    await store.open()
    try:
        await store.insert(
            [make(id=f"dead-{i}", status=TaskStatus.FAILED, ended_at=T0) for i in range(2)]
        )
        rows = []
        for i in range(7):
            rows.append(make(id=f"ok-{i}", status=TaskStatus.SUCCESS, ended_at=same))
            if i in (1, 4):
                rows.append(
                    make(
                        id=f"replay-{i}",
                        status=TaskStatus.SUCCESS,
                        ended_at=same,
                        replay_of=f"dead-{i % 2}",
                    )
                )
        await store.insert(rows)
        cutoff = T0 + timedelta(days=1)
        counts = []
        while (n := await store.purge(cutoff, statuses=KEPT, limit=2)) == 2:
            counts.append(n)
        counts.append(n)
        assert counts == [2, 2, 2, 1]
        left = {r.id for r in (await store.list(TaskQuery(limit=100))).items}
        assert left == {"dead-0", "dead-1", "replay-1", "replay-4"}
    finally:
        await store.close()


async def test_a_store_opened_again_starts_a_pass_over(db_path: str) -> None:
    store = SQLiteStore(db_path)
    await store.open()
    await store.insert(old_successes(4, start=10))
    cutoff = T0 + timedelta(days=1)
    assert await store.purge(cutoff, statuses=KEPT, limit=2) == 2
    await store.close()
    # the file is replaced while the store is closed: a new one, whose rows ended earlier
    for suffix in ("", "-wal", "-shm"):
        await anyio.Path(db_path + suffix).unlink(missing_ok=True)
    await store.open()
    try:
        await store.insert(old_successes(3, start=0))
        assert await store.purge(cutoff, statuses=KEPT, limit=2) == 2
        assert store.get("ok-0-0") is None
        assert store.get("ok-0-1") is None
    finally:
        await store.close()


async def _call_steps(
    db_path: str, records: list[TaskRecord], limit: int = 100
) -> tuple[int, int, int]:
    """One retention call (``limit``) over ``records`` in a new file at ``db_path``: how
    many rows it deleted, and the most and the total of the steps (``_count_steps``) its
    transactions took."""
    store = SQLiteStore(db_path)
    await store.open()
    try:
        await store.insert(records)
        steps = _count_steps(store)
        deleted = await store.purge(T0 + timedelta(days=1), statuses=KEPT, limit=limit)
        return deleted, max(steps), sum(steps)
    finally:
        await store.close()


async def test_a_retention_call_reads_a_bounded_number_of_rows_a_transaction(
    db_path: str,
) -> None:
    # 5,000 replays kept ahead of anything deletable: one transaction reading them all
    # would hold the write lock (and the app's commits) for their whole scan. Each
    # transaction reads at most 500 rows, so it takes no more steps than with 1,000.
    _, small, _ = await _call_steps(db_path + ".1", dead_and_replays(1000))
    _, large, _ = await _call_steps(db_path + ".2", dead_and_replays(5000))
    assert large < 1.5 * small, (large, small)


async def test_a_retention_call_reads_on_through_windows_of_kept_rows(db_path: str) -> None:
    # 1,500 kept replays, then 10 tasks that may go: the call reads three windows before
    # it finds them, and deletes them (it ends the pass only once nothing is left).
    deleted, _, _ = await _call_steps(
        db_path, dead_and_replays(1500) + old_successes(10, start=5000)
    )
    assert deleted == 10


async def test_rows_that_ended_together_are_read_once_a_call_not_once_a_window(
    db_path: str,
) -> None:
    # The ended-time index orders rows that ended at one moment by other columns than
    # seq: a window starting among 5,000 of them would read them all again. Reading
    # them costs about what reading 5,000 rows that ended one by one does.
    tied = [
        dataclasses.replace(rec, ended_at=T0 + timedelta(seconds=1))
        if rec.replay_of is not None
        else rec
        for rec in dead_and_replays(5000)
    ]
    _, _, apart = await _call_steps(db_path + ".1", dead_and_replays(5000))
    _, _, together = await _call_steps(db_path + ".2", tied)
    assert together < 2 * apart, (together, apart)


async def test_a_retention_call_that_fails_makes_the_next_one_start_over(db_path: str) -> None:
    store = SQLiteStore(db_path)
    await store.open()
    try:
        await store.insert(old_successes(4, start=10))
        cutoff = T0 + timedelta(days=1)
        assert await store.purge(cutoff, statuses=KEPT, limit=2) == 2  # stops at ok-10-1
        write_sync = store._write_sync

        def failing(fn: Any) -> Any:
            raise StoreError("the disk is gone (injected)")

        store._write_sync = failing  # type: ignore[method-assign]
        with pytest.raises(StoreError, match="injected"):
            await store.purge(cutoff, statuses=KEPT, limit=2)
        store._write_sync = write_sync  # type: ignore[method-assign]
        # a row that ended before where the last call stopped: read, as the call after a
        # failure reads from the oldest row
        await store.insert(old_successes(1, start=-5))
        assert await store.purge(cutoff, statuses=KEPT, limit=2) == 2
        assert store.get("ok--5-0") is None
    finally:
        await store.close()
