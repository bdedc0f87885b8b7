"""The SQLite file over time: older files looked at without being upgraded, and tables of
another program under anytask's names refused before anything is written."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from anytask import StoreCorruptError, StoreError, TaskQuery, TaskRecord, TaskStatus
from anytask.cli import main
from anytask.stores.sqlite import SCHEMA_VERSION, SQLiteStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# what a file of version 2 has that a current one does not (as in test_sqlite_store)
_TO_VERSION_2 = """
    DROP INDEX anytask_tasks_delayed;
    CREATE INDEX anytask_tasks_run_after ON anytask_tasks (run_after)
        WHERE status = 'pending';
    UPDATE anytask_meta SET value = '2' WHERE key = 'schema_version';
"""


def _record(task_id: str, status: TaskStatus = TaskStatus.PENDING) -> TaskRecord:
    ended = None if status is TaskStatus.PENDING else T0
    return TaskRecord(
        id=task_id, name="job", args=[1], kwargs={}, created_at=T0, run_after=T0,
        status=status, ended_at=ended, error="boom" if status is TaskStatus.FAILED else None,
    )  # fmt: skip


def _version_2_file(path: Path) -> None:
    async def create() -> None:
        store = SQLiteStore(path)
        await store.open()
        try:
            await store.insert([_record("p"), _record("d", TaskStatus.FAILED)])
        finally:
            await store.close()

    anyio.run(create)
    conn = sqlite3.connect(path)
    conn.executescript(_TO_VERSION_2)
    conn.close()


def _schema(path: Path) -> tuple[str, list[tuple[str, str]]]:
    conn = sqlite3.connect(path)
    try:
        (version,) = conn.execute(
            "SELECT value FROM anytask_meta WHERE key = 'schema_version'"
        ).fetchone()
        sql = conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
    finally:
        conn.close()
    return version, sql


def test_cli_inspect_and_show_leave_an_older_file_as_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Looking at a file must not upgrade it: the older anytask still using it would refuse
    # it at its next start (SchemaVersionError), and lose the indexes it reads meanwhile.
    path = tmp_path / "tasks.db"
    _version_2_file(path)
    before = _schema(path)
    assert before[0] == "2"
    assert main(["inspect", "--db", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["counts"]["pending"] == 1
    assert out["counts"]["failed"] == 1
    assert main(["inspect", "--db", str(path), "--status", "failed"]) == 0
    assert "boom" in capsys.readouterr().out
    assert main(["show", "--db", str(path), "d"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "failed"
    assert _schema(path) == before
    # a write (or any store opened as usual) still upgrades it
    assert main(["replay", "--db", str(path), "d"]) == 0
    assert _schema(path)[0] == str(SCHEMA_VERSION)


def test_a_store_opened_without_upgrade_reads_an_older_file_and_refuses_writes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tasks.db"
    _version_2_file(path)
    before = _schema(path)

    async def look() -> None:
        store = SQLiteStore(path, upgrade=False)
        await store.open()
        try:
            assert (await store.fetch("p")) is not None
            assert store.get("d") is not None
            page = await store.list(TaskQuery(statuses=frozenset({TaskStatus.FAILED})))
            assert [r.id for r in page.items] == ["d"]
            assert (await store.counts())[TaskStatus.PENDING] == 1
            with pytest.raises(StoreError, match="upgrade=False"):
                await store.insert([_record("new")])
        finally:
            await store.close()

    anyio.run(look)
    assert _schema(path) == before


async def test_a_current_file_opened_without_upgrade_works_as_usual(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "tasks.db", upgrade=False)
    await store.open()
    try:
        assert await store.insert([_record("x")]) == [True]
        assert (await store.fetch("x")) is not None
    finally:
        await store.close()


_FOREIGN = {
    # another program's table named anytask_meta
    "meta": "CREATE TABLE anytask_meta (id INTEGER PRIMARY KEY, data TEXT);",
    # anytask's names, another program's anytask_tasks
    "tasks": """
        CREATE TABLE anytask_meta (key TEXT, value TEXT);
        INSERT INTO anytask_meta VALUES ('schema_version', '1');
        CREATE TABLE anytask_tasks (id TEXT, title TEXT);
        CREATE TABLE anytask_schedules (schedule_id TEXT);
    """,
}


@pytest.mark.parametrize("kind", sorted(_FOREIGN))
def test_tables_of_another_program_under_anytask_names_are_refused_untouched(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.executescript(_FOREIGN[kind])
    conn.execute("CREATE TABLE users (email TEXT)")
    conn.commit()
    conn.close()
    data = path.read_bytes()

    async def open_it() -> None:
        await SQLiteStore(path).open()

    with pytest.raises(StoreCorruptError, match="left as is"):
        anyio.run(open_it)
    assert path.read_bytes() == data  # (its rollback journal mode too)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]
