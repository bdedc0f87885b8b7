"""Single fire across real processes: four instances share one SQLite file and one
1-second schedule while instances are SIGKILLed and restarted at random times."""

from __future__ import annotations

import json
import math
import random
import select
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

from anytask import TaskQuery, TaskRecord
from anytask.schedule._runner import fire_id
from anytask.stores.sqlite import SQLiteStore

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("schedule_worker.py")
BACKENDS = ["asyncio", "trio", "asyncio", "trio"]
CHURN = 60.0  # seconds of killing and restarting


def spawn(db: str, backend: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), db, backend, "120"],
        stdout=subprocess.PIPE,  # stderr is left to pytest's capture
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()  # SIGKILL: no shutdown, leases left behind
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def wait_ready(proc: subprocess.Popen[bytes], timeout: float) -> None:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "worker did not start in time"
    assert proc.stdout.readline().strip() == b"ready"


async def all_fires(db: str) -> list[TaskRecord]:
    store = SQLiteStore(db)
    await store.open()
    try:
        out: list[TaskRecord] = []
        cursor = None
        while True:
            page = await store.list(TaskQuery(schedule_id="tick", limit=1000, cursor=cursor))
            out.extend(page.items)
            if page.next_cursor is None:
                return out
            cursor = page.next_cursor
    finally:
        await store.close()


def test_one_run_per_fire_time_while_instances_are_killed_and_restarted(
    db_path: str, artifacts_dir: Path
) -> None:
    rng = random.Random()
    procs: list[subprocess.Popen[bytes]] = []
    kills = 0
    try:
        for backend in BACKENDS:
            procs.append(spawn(db_path, backend))
        wait_ready(procs[0], 20)
        first_up = time.time()
        for proc in procs[1:]:
            wait_ready(proc, 20)
        deadline = first_up + CHURN
        while time.time() < deadline - 4:
            time.sleep(rng.uniform(1.0, 4.0))
            i = rng.randrange(len(procs))
            stop(procs[i])
            kills += 1
            time.sleep(rng.uniform(0.0, 2.0))
            procs[i] = spawn(db_path, BACKENDS[i])  # three others are up meanwhile
        time.sleep(max(deadline - time.time(), 0))
        last_up = time.time()
    finally:
        for proc in procs:
            stop(proc)
    records = anyio.run(all_fires, db_path)
    seconds = sorted(r.fire_at.timestamp() for r in records if r.fire_at is not None)
    assert len(seconds) == len(records)
    assert len(set(seconds)) == len(seconds), "a fire time ran twice"
    assert all(s == int(s) for s in seconds)
    assert all(r.id == fire_id("tick", r.fire_at) for r in records if r.fire_at)
    # one fire per second, with no hole, from the first instance's start until the end
    expected = list(range(int(seconds[0]), int(seconds[-1]) + 1))
    assert [int(s) for s in seconds] == expected
    assert seconds[0] <= math.ceil(first_up) + 1
    assert seconds[-1] >= math.floor(last_up) - 2
    assert kills >= 10
    # each fire also ran: started by some instance (one killed mid-run may leave it
    # interrupted; the newest few may still be pending when everything is stopped)
    settled = [r for r in records if r.fire_at and r.fire_at.timestamp() < last_up - 5]
    assert all(r.attempts >= 1 for r in settled)
    statuses = Counter(r.status.value for r in records)
    summary = {
        "fires": len(seconds),
        "kills": kills,
        "span_s": round(last_up - first_up, 1),
        "statuses": dict(statuses),
    }
    (artifacts_dir / "schedule_processes.json").write_text(json.dumps(summary) + "\n")
