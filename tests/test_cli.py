"""The ``anytask`` command reads and replays tasks in a SQLite store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from anytask import TaskManager, TaskQuery, TaskStatus
from anytask.cli import main
from anytask.stores.sqlite import SQLiteStore


def _fill(db: str) -> tuple[str, str]:
    tm = TaskManager(snapshot_db=db)

    @tm.task(name="broken")
    def broken(x: int) -> None:
        raise ValueError(f"bad {x}")

    @tm.task(name="fine")
    def fine(x: int) -> int:
        return x + 1

    async def go() -> tuple[str, str]:
        async with tm:
            bad = await tm.enqueue(broken, 7)
            good = await tm.enqueue(fine, 1)
            await tm.join()
        return bad, good

    return anyio.run(go)


def _records(db: str) -> dict[str, TaskStatus]:
    async def go() -> dict[str, TaskStatus]:
        store = SQLiteStore(db)
        await store.open()
        try:
            page = await store.list(TaskQuery(limit=100))
        finally:
            await store.close()
        return {r.id: r.status for r in page.items}

    return anyio.run(go)


def test_inspect_lists_counts_and_rows(db_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    bad, good = _fill(db_path)
    assert main(["inspect", "--db", db_path, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["counts"]["failed"] == 1
    assert out["counts"]["success"] == 1
    assert {row["task_id"] for row in out["items"]} == {bad, good}
    assert main(["inspect", "--db", db_path, "--status", "failed"]) == 0
    text = capsys.readouterr().out
    assert bad in text
    assert good not in text
    assert "bad 7" in text


def test_show_prints_the_record(db_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    bad, _ = _fill(db_path)
    assert main(["show", "--db", db_path, bad]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["args"] == [7]
    assert row["status"] == "failed"
    assert "ValueError: bad 7" in row["traceback"]
    assert main(["show", "--db", db_path, "no-such-id"]) == 1


def test_replay_writes_a_pending_copy_and_skips_live_tasks(
    db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad, good = _fill(db_path)
    assert main(["replay", "--db", db_path, bad, good]) == 0
    out = capsys.readouterr().out
    assert "not replayed" in out
    statuses = _records(db_path)
    assert len(statuses) == 3
    new_ids = [i for i in statuses if i not in (bad, good)]
    assert statuses[new_ids[0]] is TaskStatus.PENDING
    assert SQLiteStore(db_path).get(new_ids[0]).replay_of == bad  # type: ignore[union-attr]
    # a dead task is replayed once: the second command writes nothing and says so
    assert main(["replay", "--db", db_path, bad]) == 0
    assert f"already replayed as {new_ids[0]}" in capsys.readouterr().out
    assert len(_records(db_path)) == 3


def _age_all(db: str, seconds: float) -> None:
    """Make every ended task of the file look ``seconds`` older."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE anytask_tasks SET ended_at = ended_at - ? WHERE ended_at IS NOT NULL",
            (seconds,),
        )


def test_purge_deletes_old_ended_tasks_and_keeps_dead_letters_unless_named(
    db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad, _ = _fill(db_path)
    assert main(["purge", "--db", db_path, "--older-than", "1h"]) == 0
    assert "deleted 0 cancelled/success task(s)" in capsys.readouterr().out
    _age_all(db_path, 2 * 3600)
    assert main(["purge", "--db", db_path, "--older-than", "1h"]) == 0
    assert "deleted 1 cancelled/success task(s)" in capsys.readouterr().out
    assert set(_records(db_path)) == {bad}  # the dead letter stays
    assert main(["purge", "--db", db_path, "--older-than", "3h", "--status", "failed"]) == 0
    assert "deleted 0 failed" in capsys.readouterr().out  # not old enough for 3h
    assert main(["purge", "--db", db_path, "--older-than", "90m", "--status", "failed"]) == 0
    assert "deleted 1 failed" in capsys.readouterr().out
    assert _records(db_path) == {}


def test_purge_of_dead_tasks_and_their_replays_takes_both_in_one_command(
    db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A replay stays while the dead task it replays is stored, so a pass that deletes
    # the dead tasks leaves the replays it had already passed: the command goes on with
    # more passes until one deletes nothing (600 of each: more than one transaction).
    from datetime import UTC, datetime, timedelta

    from anytask import TaskRecord

    ended = datetime.now(UTC) - timedelta(hours=2)
    records = []
    for i in range(600):
        at = ended + timedelta(milliseconds=i)
        records.append(
            TaskRecord(f"dead-{i}", "job", [], {}, at, at, TaskStatus.FAILED, ended_at=at)
        )
        records.append(
            TaskRecord(
                f"replay-{i}",
                "job",
                [],
                {},
                at,
                at,
                TaskStatus.SUCCESS,
                ended_at=at,
                replay_of=f"dead-{i}",
            )
        )

    async def fill() -> None:
        store = SQLiteStore(db_path)
        await store.open()
        try:
            await store.insert(records)
        finally:
            await store.close()

    anyio.run(fill)
    argv = ["--older-than", "1h", "--status", "failed", "--status", "success"]
    assert main(["purge", "--db", db_path, *argv]) == 0
    assert "deleted 1200 failed/success task(s)" in capsys.readouterr().out
    assert _records(db_path) == {}


@pytest.mark.parametrize(
    "argv",
    [
        ["--older-than", "soon"],
        ["--older-than", "0"],
        ["--older-than", "-5m"],
        ["--older-than", "7d", "--status", "pending"],
    ],
)
def test_purge_refuses_bad_input_and_deletes_nothing(
    db_path: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    bad, good = _fill(db_path)
    _age_all(db_path, 30 * 86400)
    with pytest.raises(SystemExit) as exc:
        main(["purge", "--db", db_path, *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--older-than" in err or "--status" in err
    assert set(_records(db_path)) == {bad, good}


@pytest.mark.parametrize("module", ["anytask.cli", "anytask"])
def test_the_command_runs_as_a_module(module: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for command in ("demo", "inspect", "show", "replay", "purge", "worker"):
        assert command in proc.stdout


@pytest.mark.parametrize(
    "command",
    [
        ["inspect"],
        ["show", "0b1c5e2e-8f5d-4a53-9d7e-2f3a4b5c6d7e"],
        ["replay", "0b1c5e2e-8f5d-4a53-9d7e-2f3a4b5c6d7e"],
        ["purge", "--older-than", "7d"],
    ],
)
def test_commands_on_a_missing_file_say_so_and_create_nothing(
    tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # a mistyped --db names no store: the commands read or change an existing one, so
    # they must not make a new, empty database there (and report zero tasks from it)
    typo = tmp_path / "typo.db"
    assert main([command[0], "--db", str(typo), *command[1:]]) == 2
    assert f"no database file at {str(typo)!r}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_replay_of_an_unknown_id_fails_the_command(
    db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad, _ = _fill(db_path)
    unknown = "0b1c5e2e-8f5d-4a53-9d7e-2f3a4b5c6d7e"
    assert main(["replay", "--db", db_path, unknown, bad]) == 1  # bad is replayed all the same
    captured = capsys.readouterr()
    assert f"{unknown}: no such task" in captured.err
    assert f"{bad} -> " in captured.out


def test_a_store_error_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_sqlite = tmp_path / "notes.db"
    not_sqlite.write_text("these are my notes, not a database\n" * 200)
    assert main(["inspect", "--db", str(not_sqlite)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("anytask: "), err
    assert str(not_sqlite) in err, err
    assert "Traceback" not in err
    assert not_sqlite.read_text() == "these are my notes, not a database\n" * 200


@pytest.mark.parametrize(
    "command",
    [["show", "\udcff"], ["replay", "\udcff"], ["inspect", "--name", "\udcff"]],
)
def test_an_argument_that_is_not_utf8_finds_nothing_without_a_traceback(
    db_path: str, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # bytes that are not UTF-8 reach sys.argv as lone surrogates (os.fsdecode)
    _fill(db_path)
    code = main([command[0], "--db", db_path, *command[1:]])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if command[0] == "inspect":
        assert code == 0
        assert "broken" not in captured.out
    else:
        assert code == 1
        assert "no such task" in captured.err or "no task with id" in captured.err


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_xyz:tm", "no module named 'no_such_module_xyz'"),
        ("no_such_pkg_xyz.sub:tm", "no module named 'no_such_pkg_xyz'"),
        ("json:no_such_manager", "has no attribute 'no_such_manager'"),
    ],
)
def test_worker_with_a_target_that_does_not_exist_fails_in_one_line(
    target: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["worker", target]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1, err
