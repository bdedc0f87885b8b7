"""Two processes share one SQLite file, each enqueueing and running tasks at the same
time: every task runs exactly once (claims are atomic across processes) and succeeds."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from anytask import TaskStatus
from crash_worker import read_records, read_starts, spawn, stderr_tail, stop_all

pytestmark = pytest.mark.slow

PER_PROCESS = 500


def test_two_processes_on_one_file_run_each_task_once(tmp_path: Path) -> None:
    db, log = tmp_path / "tasks.db", tmp_path / "starts.log"
    start_at = time.time() + 2.0  # both start their managers together, after importing
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name, backend in (("a", "asyncio"), ("b", "trio")):
            procs.append(
                spawn(
                    tmp_path,
                    name,
                    str(db),
                    str(log),
                    "--enqueue",
                    str(PER_PROCESS),
                    "--ids",
                    str(tmp_path / f"ids-{name}.txt"),
                    "--lease",
                    "10",
                    "--max-sleep",
                    "0.02",
                    "--start-at",
                    str(start_at),
                    "--backend",
                    backend,
                )
            )
        for proc in procs:
            code = proc.wait(timeout=90)
            assert code == 0, f"worker exit code {code}\n{stderr_tail(tmp_path)}"
    finally:
        stop_all(procs)

    ids = (tmp_path / "ids-a.txt").read_text().split()
    ids += (tmp_path / "ids-b.txt").read_text().split()
    assert len(set(ids)) == 2 * PER_PROCESS
    records = read_records(db, ids)
    assert len(records) == 2 * PER_PROCESS
    assert Counter(rec.status for rec in records.values()) == {TaskStatus.SUCCESS: 2 * PER_PROCESS}

    starts = read_starts(log)
    runs = Counter(task_id for task_id, _, _ in starts)
    assert set(runs) == set(ids)
    assert max(runs.values()) == 1, [t for t, n in runs.items() if n > 1][:5]
    # both processes really worked the shared queue
    by_pid = Counter(pid for _, _, pid in starts)
    assert set(by_pid) == {proc.pid for proc in procs}, by_pid
