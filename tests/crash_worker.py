"""A worker process for the crash tests (``test_crash.py``, ``test_two_processes.py``).

Not a test module: the tests spawn it with ``sys.executable tests/crash_worker.py ...``
and import the small helpers at the bottom (spawning, reading the start log and the store).

    crash_worker.py DB LOG [--enqueue N --ids IDS] [options]

runs a manager on the SQLite file DB until nothing is pending or running, then exits 0.
With ``--enqueue N`` it first enqueues N tasks (every third one defined with
``requeue_on_interrupt=True``) and, once they are committed, writes their ids to IDS (one
per line, renamed into place so the file appears complete or not at all).

Every execution of a task appends one line ``task_id attempt pid`` to LOG before the
task sleeps a random short time, with one ``write`` on an ``O_APPEND`` descriptor: the
line reaches the kernel before the task can finish, so a SIGKILL never loses it, and
lines from two processes never interleave.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from anytask import TaskManager, TaskRecord, get_task_context

REQUEUE_EVERY = 3  # task i is "requeue_job" when i % REQUEUE_EVERY == 0

_log_fd = -1
_max_sleep = 0.2


async def _job(i: int) -> int:
    ctx = get_task_context()
    os.write(_log_fd, f"{ctx.task_id} {ctx.attempt} {os.getpid()}\n".encode())
    await anyio.sleep(random.uniform(0, _max_sleep))
    return i


def build(db: str, **options: float | int) -> TaskManager:
    tm = TaskManager(snapshot_db=db, **options)  # type: ignore[arg-type]

    @tm.task(name="requeue_job", requeue_on_interrupt=True)
    async def requeue_job(i: int) -> int:
        return await _job(i)

    @tm.task(name="plain_job")
    async def plain_job(i: int) -> int:
        return await _job(i)

    return tm


def _write_ids(path: str, ids: list[str]) -> None:
    tmp = Path(path + ".tmp")
    tmp.write_text("".join(f"{task_id}\n" for task_id in ids))
    tmp.replace(path)


async def run(args: argparse.Namespace) -> None:
    if args.start_at is not None:
        await anyio.sleep(max(0.0, args.start_at - time.time()))
    tm = build(
        args.db,
        lease=args.lease,
        poll_interval=0.05,
        max_concurrency=args.concurrency,
        shutdown_grace=5.0,
    )
    async with tm:
        if args.enqueue:
            calls: list[tuple[str, tuple[int], dict[str, Any]]] = [
                ("requeue_job" if i % REQUEUE_EVERY == 0 else "plain_job", (i,), {})
                for i in range(args.enqueue)
            ]
            ids = await tm.enqueue_many(calls)  # committed when this returns
            _write_ids(args.ids, ids)
        await tm.join()


def main() -> None:
    global _log_fd, _max_sleep
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("log")
    parser.add_argument("--enqueue", type=int, default=0, metavar="N")
    parser.add_argument("--ids", default=None)
    parser.add_argument("--lease", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-sleep", type=float, default=0.2)
    parser.add_argument("--start-at", type=float, default=None, help="epoch seconds")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    args = parser.parse_args()
    if args.enqueue and not args.ids:
        parser.error("--enqueue needs --ids")
    _log_fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    _max_sleep = args.max_sleep
    try:
        anyio.run(run, args, backend=args.backend)
    finally:
        os.close(_log_fd)


# --------------------------------------------------------------------------- test helpers
# (imported by the tests; the spawned process never uses them)
REPO = Path(__file__).resolve().parent.parent
WORKER = REPO / "tests" / "crash_worker.py"


def spawn(tmp_path: Path, tag: str, *args: str) -> subprocess.Popen[bytes]:
    err = (tmp_path / f"worker-{tag}.err").open("wb")
    try:
        return subprocess.Popen(
            [sys.executable, str(WORKER), *args],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    finally:
        err.close()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def read_starts(log: Path) -> list[tuple[str, int, int]]:
    """(task_id, attempt, pid) for every execution start in the log."""
    if not log.exists():
        return []
    starts = []
    for line in log.read_text().splitlines():
        task_id, attempt, pid = line.split()
        starts.append((task_id, int(attempt), int(pid)))
    return starts


def started_or_exited(proc: subprocess.Popen[bytes], log: Path) -> bool:
    return proc.poll() is not None or any(pid == proc.pid for *_, pid in read_starts(log))


def read_records(db: Path, ids: list[str]) -> dict[str, TaskRecord]:
    from anytask.stores.sqlite import SQLiteStore

    async def main() -> list[TaskRecord]:
        store = SQLiteStore(str(db))
        await store.open()
        try:
            return await store.fetch_many(ids)
        finally:
            await store.close()

    return {rec.id: rec for rec in anyio.run(main)}


def stderr_tail(tmp_path: Path) -> str:
    parts = []
    for path in sorted(tmp_path.glob("worker-*.err")):
        text = path.read_text(errors="replace").strip()
        if text:
            parts.append(f"--- {path.name}\n{text[-2000:]}")
    return "\n".join(parts)


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
