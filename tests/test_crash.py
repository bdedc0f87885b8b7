"""Crash recovery with real processes: a worker on a SQLite file is killed with SIGKILL
again and again, restarted each time, and finally left to finish.

What the durability contract promises, checked here from the outside:

* no task is lost: every enqueued id ends in a terminal state;
* a task defined with ``requeue_on_interrupt=True`` that was running when its process
  died runs again (possibly several times) and finally succeeds;
* any other task that was running when its process died is never run again: it ends
  ``interrupted``, a dead letter.

Each execution start is appended to a log by the task itself (``crash_worker.py``), so
duplicate executions are counted independently of the store.
"""

from __future__ import annotations

import random
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from anytask import TaskStatus
from crash_worker import (
    REQUEUE_EVERY,
    read_records,
    read_starts,
    spawn,
    started_or_exited,
    stderr_tail,
    stop_all,
    wait_for,
)

pytestmark = pytest.mark.slow

N_TASKS = 500
KILLS = 20
LEASE = "1.0"


def test_sigkilled_workers_lose_nothing_and_rerun_only_requeueable_tasks(
    tmp_path: Path,
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    db, log, ids_file = tmp_path / "tasks.db", tmp_path / "starts.log", tmp_path / "ids.txt"
    common = [str(db), str(log), "--lease", LEASE, "--concurrency", "4", "--max-sleep", "0.3"]
    procs: list[subprocess.Popen[bytes]] = []
    kills = 0
    try:
        # the first worker enqueues every task, then works until it is killed
        proc = spawn(tmp_path, "0", *common, "--enqueue", str(N_TASKS), "--ids", str(ids_file))
        procs.append(proc)
        wait_for(
            lambda: ids_file.exists() or proc.poll() is not None,
            60,
            "the first worker to commit its tasks",
        )
        assert ids_file.exists(), f"first worker exited early\n{stderr_tail(tmp_path)}"
        for k in range(KILLS):
            if k:
                backend = "trio" if k % 2 else "asyncio"
                proc = spawn(tmp_path, str(k), *common, "--backend", backend)
                procs.append(proc)
            # kill only once this process is running tasks, at a random moment after that
            wait_for(
                lambda proc=proc: started_or_exited(proc, log),
                30,
                f"worker {k} to start a task",
            )
            assert proc.poll() is None, (
                f"worker {k} exited (code {proc.returncode}) before it was killed; "
                f"seed {seed}\n{stderr_tail(tmp_path)}"
            )
            time.sleep(rng.uniform(0.0, 0.4))
            proc.kill()
            proc.wait(timeout=10)
            kills += 1
        # finally let one worker run everything that is left to completion
        proc = spawn(tmp_path, "final", *common)
        procs.append(proc)
        code = proc.wait(timeout=90)
        assert code == 0, f"final worker exit code {code}; seed {seed}\n{stderr_tail(tmp_path)}"
    finally:
        stop_all(procs)

    assert kills == KILLS
    ids = ids_file.read_text().split()
    assert len(set(ids)) == N_TASKS
    records = read_records(db, ids)
    assert set(records) == set(ids), "tasks lost from the store"

    starts: dict[str, list[int]] = defaultdict(list)
    for task_id, attempt, _pid in read_starts(log):
        starts[task_id].append(attempt)
    assert set(starts) <= set(ids)

    statuses = Counter(rec.status for rec in records.values())
    assert statuses[TaskStatus.PENDING] == 0, statuses
    assert statuses[TaskStatus.RUNNING] == 0, statuses
    requeue_ids = {task_id for task_id, rec in records.items() if rec.requeue_on_interrupt}
    assert len(requeue_ids) == len(range(0, N_TASKS, REQUEUE_EVERY))

    interrupted = duplicated = 0
    for task_id, rec in records.items():
        runs = starts.get(task_id, [])
        assert len(runs) == len(set(runs)), f"{task_id}: the same attempt ran twice: {runs}"
        assert rec.attempts >= len(runs), (task_id, rec.attempts, runs)
        if task_id in requeue_ids:
            # requeued after every crash until it finished
            assert rec.status is TaskStatus.SUCCESS, (task_id, rec.status, rec.error)
            assert runs, task_id
            duplicated += len(runs) > 1
        else:
            # never run twice; if its process died under it, it is a dead letter
            assert len(runs) <= 1, f"{task_id} without requeue_on_interrupt ran {runs}"
            assert rec.status in (TaskStatus.SUCCESS, TaskStatus.INTERRUPTED), (
                task_id,
                rec.status,
                rec.error,
            )
            if rec.status is TaskStatus.SUCCESS:
                assert len(runs) == 1
            else:
                interrupted += 1
                assert rec.error_type == "Interrupted"
    # the kills really hit running tasks of both kinds
    print(f"seed {seed}: {interrupted} interrupted, {duplicated} requeued tasks ran again")
    assert interrupted > 0, f"no task was interrupted (seed {seed})"
    assert duplicated > 0, f"no requeueable task ran twice (seed {seed})"
