"""End-to-end benchmark of the anytask runtime, beside two baselines measured in the same run.

Run from the repository root::

    .venv/bin/python benchmarks/bench_runtime.py            # full run (a few minutes)
    .venv/bin/python benchmarks/bench_runtime.py --quick    # small smoke run (seconds)
    .venv/bin/python benchmarks/bench_runtime.py --json out.json

Figures (see docs/benchmarks.md for what each one means):

* throughput: N no-op async tasks, enqueued one by one, timed from the first enqueue until
  every task is recorded ``success`` (and, for durable stores, committed);
* the floor: a bare anyio worker pool (C consumers on one memory object stream);
* fastapi-taskflow 0.12.1 in memory and with ``snapshot_db`` (asyncio only);
* enqueue -> start latency of single tasks on an idle manager;
* RSS after 10k and 100k completed tasks on SQLite, in a fresh subprocess;
* the machine's pace, once in each round of the SQLite comparison: the disk's sync
  latency (``fdatasync`` after a 4 KiB append) and an event-loop round trip through a
  thread (docs/benchmarks.md, "Why the SQLite ratio swings").
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import queue
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio

from anytask import MemoryStore, TaskManager, TaskRecord, TaskStatus
from anytask._clock import SystemClock, from_ts
from anytask._ids import new_task_id
from anytask._manager import INSERT_BATCH
from anytask._models import Outcome

BACKENDS = ("asyncio", "trio")
CONCURRENCY = 32  # the bare pool's consumers == the manager's max_concurrency

# targets (this 2-core machine)
T_MEMORY_VS_POOL = 0.50
T_SQLITE_VS_TASKFLOW = 10.0
T_P50_MS = 1.0
T_RSS_GROWTH_MB = 20.0


def _sqlite_available() -> str | None:
    """None when anytask's SQLiteStore can be used, else why not."""
    try:
        with tempfile.TemporaryDirectory(prefix="anytask-probe-") as tmp:

            async def probe() -> None:
                tm = TaskManager(snapshot_db=str(Path(tmp) / "probe.db"))

                @tm.task
                async def noop() -> None:
                    pass

                async with tm:
                    await tm.wait(await tm.enqueue(noop), timeout=10)

            anyio.run(probe)
    except Exception as exc:
        return f"anytask's SQLiteStore does not work yet: {type(exc).__name__}: {exc}"
    return None


def _run(backend: str, fn: Callable[[], Awaitable[Any]]) -> Any:
    gc.collect()
    return anyio.run(fn, backend=backend)


# --------------------------------------------------------------------------- baselines
def bare_pool(backend: str, n: int, concurrency: int) -> dict[str, float]:
    """The floor: C consumers on one memory object stream, each item a no-op coroutine
    call, each result recorded in a dict."""

    async def noop() -> None:
        pass

    async def main() -> dict[str, float]:
        results: dict[int, str] = {}
        send, receive = anyio.create_memory_object_stream[tuple[int, Any]](float("inf"))

        async def consumer(rx: Any) -> None:
            async with rx:
                async for i, fn in rx:
                    await fn()
                    results[i] = "success"

        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(consumer, receive.clone())
            receive.close()
            async with send:
                for i in range(n):
                    send.send_nowait((i, noop))
            t1 = time.perf_counter()
        t2 = time.perf_counter()
        assert len(results) == n
        return {"rate": n / (t2 - t0), "seconds": t2 - t0, "enqueue_rate": n / (t1 - t0)}

    return _run(backend, main)  # type: ignore[no-any-return]


def taskflow(n: int, concurrency: int, db: str | None) -> dict[str, Any]:
    """fastapi-taskflow 0.12.1 on asyncio, driven outside a request.

    ``ManagedBackgroundTasks(manager).add_task`` is what its ``get_tasks`` dependency
    returns inside a route. ``max_size`` switches on its named-queue mode, whose drainer
    runs at most ``max_concurrent_tasks`` tasks at once (the same cap as ours); without
    it, tasks would go to Starlette's ``BackgroundTasks`` list, which runs them one after
    the other after the response. "All finished" = the queue heap is empty and every
    semaphore slot is free again: a slot is released after the task *and* its
    ``on_success`` snapshot write (``flush_one``) returned.
    """
    from fastapi_taskflow import ManagedBackgroundTasks  # type: ignore[import-untyped]
    from fastapi_taskflow import TaskManager as FTaskManager
    from fastapi_taskflow import TaskStatus as FStatus

    async def main() -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_concurrent_tasks": concurrency, "max_size": n * 2}
        if db is not None:
            kwargs["snapshot_db"] = str(_fresh(Path(db)))
        ftm = FTaskManager(**kwargs)

        @ftm.task()  # type: ignore[untyped-decorator]
        async def noop() -> None:
            pass

        await ftm.startup()
        try:
            bg = ManagedBackgroundTasks(ftm)
            queue = ftm._queues["default"]
            t0 = time.perf_counter()
            for _ in range(n):
                bg.add_task(noop)
            t1 = time.perf_counter()
            sem = queue._sem
            assert sem is not None
            # no completion signal to wait on: poll its internals every millisecond
            while queue._heap or sem._value < concurrency:  # noqa: ASYNC110
                await asyncio.sleep(0.001)
            t2 = time.perf_counter()
            ok = sum(1 for r in ftm.store.list() if r.status is FStatus.SUCCESS)
            assert ok == n, ok
        finally:
            t3 = time.perf_counter()
            await ftm.shutdown()
            t4 = time.perf_counter()
        out: dict[str, Any] = {
            "rate": n / (t2 - t0),
            "seconds": t2 - t0,
            "enqueue_rate": n / (t1 - t0),
            "shutdown_seconds": t4 - t3,
        }
        if db is not None:
            with sqlite3.connect(db) as conn:
                (snap,) = conn.execute(
                    "SELECT count(*) FROM task_snapshots WHERE status = 'success'"
                ).fetchone()
                (pend,) = conn.execute("SELECT count(*) FROM task_pending_requeue").fetchone()
            conn.close()
            out["rows_committed_success"] = snap
            out["rows_committed_pending"] = pend
            (sync,) = sqlite3.connect(db).execute("PRAGMA synchronous").fetchone()
            out["sqlite_synchronous"] = sync
        return out

    gc.collect()
    return asyncio.run(main())


def machine_pace(tmp: Path, samples: int = 200) -> dict[str, float]:
    """Two latencies of this machine that the SQLite comparison depends on, measured
    where the databases live:

    * the disk's sync: append 4 KiB to a file and ``fdatasync`` it (what a SQLite commit
      with ``synchronous=FULL`` waits for), ``samples`` times;
    * an event-loop round trip through a thread: an asyncio coroutine hands a future to an
      idle thread through a queue, and the thread resolves it with
      ``call_soon_threadsafe`` (what handing work to a thread and waiting for it costs
      when both sleep in between: a SQLite store's writer thread, fastapi-taskflow's
      ``asyncio.to_thread`` per snapshot write), ``samples`` times.

    ``rate``: syncs per second, one after the other (1 / median sync latency)."""
    path = tmp / "sync-probe.bin"
    block = b"\0" * 4096
    syncs = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(samples):
            os.write(fd, block)
            t0 = time.perf_counter()
            os.fdatasync(fd)
            syncs.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    jobs: queue.SimpleQueue[asyncio.Future[None] | None] = queue.SimpleQueue()

    async def round_trips() -> list[float]:
        loop = asyncio.get_running_loop()

        def serve() -> None:
            while (future := jobs.get()) is not None:
                loop.call_soon_threadsafe(future.set_result, None)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        out = []
        for _ in range(samples):
            await asyncio.sleep(0.0002)  # both threads asleep, as between two commits
            t0 = time.perf_counter()
            future = loop.create_future()
            jobs.put(future)
            await future
            out.append(time.perf_counter() - t0)
        jobs.put(None)
        thread.join()
        return out

    trips = asyncio.run(round_trips())
    syncs.sort()
    trips.sort()
    p50 = syncs[len(syncs) // 2]
    return {
        "rate": 1 / p50,
        "seconds": sum(syncs),
        "enqueue_rate": float("nan"),
        "sync_p50_us": p50 * 1e6,
        "sync_p90_us": syncs[len(syncs) * 9 // 10] * 1e6,
        "round_trip_p50_us": trips[len(trips) // 2] * 1e6,
    }


# --------------------------------------------------------------------------- anytask
def memory_store_floor(n: int) -> dict[str, float]:
    """The memory store's own share of the work: ``n`` records built as ``add_task``
    builds them (id, timestamps), put into a :class:`MemoryStore`, claimed and recorded
    ``success`` with the calls the runtime makes on its hot path, one after the other,
    with no runtime and no event loop."""
    gc.collect()  # as before every run (see _run)
    store = MemoryStore()
    clock = SystemClock()
    lease = timedelta(seconds=30)

    t0 = time.perf_counter()
    for _ in range(n):
        created = clock.now()
        store.put_now(TaskRecord(new_task_id(), "bench.noop", [], {}, created, created))
    t1 = time.perf_counter()
    done = 0
    while True:
        started = clock.now()
        rec = store.claim_one_now("bench", started, started + lease)
        if rec is None:
            break
        done += store.succeed_now(rec, rec.token, clock.now())
    t2 = time.perf_counter()
    assert done == n, done
    return {"rate": n / (t2 - t0), "seconds": t2 - t0, "enqueue_rate": n / (t1 - t0)}


def sqlite_store_floor(backend: str, n: int, concurrency: int, tmp: Path) -> dict[str, float]:
    """The SQLite store's own share of the work: the same records, written in the same
    transactions as the runtime's writer makes them (each commit inserts up to
    ``INSERT_BATCH`` new records, records the outcomes of the tasks claimed by the commit
    before, and claims ``concurrency`` more), by direct calls to ``write_batch`` with no
    runtime around them: no workers, no task calls, no waiting between commits."""
    from anytask.stores.sqlite import SQLiteStore

    async def main() -> dict[str, float]:
        store = SQLiteStore(str(_fresh(tmp / f"floor-{backend}.db")))
        clock = SystemClock()
        await store.open()
        try:
            t0 = time.perf_counter()
            records = []
            for _ in range(n):
                created = clock.now()
                records.append(TaskRecord(new_task_id(), "bench.noop", [], {}, created, created))
            claimed: list[TaskRecord] = []
            done = 0
            while records or claimed:
                batch, records = records[:INSERT_BATCH], records[INSERT_BATCH:]
                ended = clock.now()
                outcomes = [
                    Outcome(r.id, r.token, TaskStatus.SUCCESS, seq=r.seq, ended_at=ended)
                    for r in claimed
                ]
                now = clock.time()
                res = await store.write_batch(
                    batch,
                    outcomes,
                    "bench",
                    concurrency,
                    from_ts(now),
                    from_ts(now + 30),
                )
                done += sum(res.completed)
                claimed = res.claimed
            t1 = time.perf_counter()
            assert done == n, done
        finally:
            await store.close()
        return {"rate": n / (t1 - t0), "seconds": t1 - t0, "enqueue_rate": float("nan")}

    return _run(backend, main)  # type: ignore[no-any-return]


def sqlite_sql_floor(n: int, concurrency: int, tmp: Path) -> dict[str, float]:
    """The SQL alone: the statements the SQLite store runs for the same tasks, in the same
    transactions as :func:`sqlite_store_floor`, on a file the store created (same schema,
    WAL, ``synchronous=FULL``), run by this thread on one connection. The rows are encoded
    before the clock starts; no records are built from the claims, and no thread hands
    the work over. What this floor and the store floor lack of each other is the price
    of the store's Python layer and of its writer thread."""
    from anytask.stores import sqlite as sq

    path = _fresh(tmp / "sql-floor.db")

    async def create() -> None:
        store = sq.SQLiteStore(str(path))
        await store.open()
        await store.close()

    anyio.run(create)
    clock = SystemClock()
    created = clock.now()
    inserts = sq._encode_inserts(
        [TaskRecord(new_task_id(), "bench.noop", [], {}, created, created) for _ in range(n)]
    )
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA synchronous = FULL")
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        gc.collect()
        t0 = time.perf_counter()
        claimed: list[tuple[int, str, int, int]] = []
        done = start = 0
        while start < n or claimed:
            conn.execute("BEGIN IMMEDIATE")
            if start < n:
                rows = inserts.rows[start : start + INSERT_BATCH]
                start += len(rows)
                sq._insert_sync(conn, sq._Inserts(True, rows, []))
            if claimed:
                ended = clock.time()
                outcomes = [
                    (sq._SUCCEED_SEQ, (ended, None, seq, task_id, token))
                    for seq, task_id, token, _ in claimed
                ]
                done += sum(sq._complete_sync(conn, outcomes))
            now = clock.time()
            claimed = conn.execute(sq._CLAIM, ("bench", now + 30, now, now, concurrency)).fetchall()
            conn.execute("COMMIT")
        t1 = time.perf_counter()
    finally:
        conn.close()
    assert done == n, done
    return {"rate": n / (t1 - t0), "seconds": t1 - t0, "enqueue_rate": float("nan")}


def _make_manager(store_kind: str, tmp: Path, tag: str, **options: Any) -> TaskManager:
    """``memory``; ``sqlite`` = ``TaskManager(snapshot_db=path)`` (synchronous=FULL, the
    default); ``sqlite-normal`` = ``SQLiteStore(path, synchronous="NORMAL")``."""
    if store_kind == "memory":
        return TaskManager(store=MemoryStore(), **options)
    path = tmp / f"{tag}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    if store_kind == "sqlite-normal":
        from anytask.stores.sqlite import SQLiteStore

        return TaskManager(store=SQLiteStore(str(path), synchronous="NORMAL"), **options)
    return TaskManager(snapshot_db=str(path), **options)


def best_of(repeat: int, fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run ``fn(*args)`` ``repeat`` times; keep the fastest run (other processes on a small
    machine only ever slow a run down) and the spread of rates."""
    runs = [fn(*args) for _ in range(repeat)]
    best = dict(max(runs, key=lambda r: r["rate"]))
    best["rates"] = [round(r["rate"]) for r in runs]
    return best


def interleaved(
    repeat: int, jobs: dict[str, tuple[Callable[..., dict[str, Any]], tuple[Any, ...]]]
) -> dict[str, dict[str, Any]]:
    """Run every job ``repeat`` times, one run of each per round, so that a change in the
    machine's pace during the benchmark hits the configurations compared alike (the
    order within a round rotates, so that no job always follows the same one); keep
    each job's fastest run, the rates of all its runs and the runs themselves, in round
    order."""
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in jobs}
    order = list(jobs)
    for i in range(repeat):
        for key in order[i % len(order) :] + order[: i % len(order)]:
            fn, args = jobs[key]
            runs[key].append(fn(*args))
    out = {}
    for key, rows in runs.items():
        best = dict(max(rows, key=lambda r: r["rate"]))
        best["rates"] = [round(r["rate"]) for r in rows]
        best["runs"] = rows
        out[key] = best
    return out


def paired(runs: list[int], baseline: list[int]) -> tuple[float, float, float]:
    """Median, lowest and highest ratio of runs of one round to each other."""
    ratios = sorted(a / b for a, b in zip(runs, baseline, strict=True))
    return statistics.median(ratios), ratios[0], ratios[-1]


def anytask_throughput(
    backend: str, store_kind: str, n: int, concurrency: int, tmp: Path
) -> dict[str, float]:
    async def main() -> dict[str, float]:
        tm = _make_manager(store_kind, tmp, f"tp-{backend}", max_concurrency=concurrency)

        @tm.task
        async def noop() -> None:
            pass

        async with tm:
            t0 = time.perf_counter()
            for _ in range(n):
                tm.add_task(noop)
            t1 = time.perf_counter()
            await tm.join()
            t2 = time.perf_counter()
            counts = await tm.counts()
            assert counts[TaskStatus.SUCCESS] == n, counts
        return {"rate": n / (t2 - t0), "seconds": t2 - t0, "enqueue_rate": n / (t1 - t0)}

    return _run(backend, main)  # type: ignore[no-any-return]


def anytask_loop_lag(backend: str, store_kind: str, n: int, tmp: Path) -> dict[str, float]:
    """How long the rest of the program waits for the event loop while ``n`` no-op tasks
    run: a probe sleeps 1 ms in a loop and records how late it wakes, from the moment all
    tasks are queued until they are done (the ``add_task`` loop itself is not included)."""

    async def main() -> dict[str, float]:
        tm = _make_manager(store_kind, tmp, f"lag-{backend}", max_concurrency=CONCURRENCY)

        @tm.task
        async def noop() -> None:
            pass

        lags: list[float] = []
        probing = [False]
        done = anyio.Event()

        async def probe() -> None:
            while not done.is_set():
                t0 = time.perf_counter()
                await anyio.sleep(0.001)
                if probing[0]:
                    lags.append(time.perf_counter() - t0 - 0.001)

        async with tm, anyio.create_task_group() as tg:
            tg.start_soon(probe)
            for _ in range(n):
                tm.add_task(noop)
            probing[0] = True
            await tm.join()
            done.set()
        lags.sort()
        return {
            "p50_ms": 1000 * statistics.median(lags),
            "p99_ms": 1000 * lags[min(len(lags) - 1, int(len(lags) * 0.99))],
            "max_ms": 1000 * lags[-1],
            "samples": float(len(lags)),
        }

    return _run(backend, main)  # type: ignore[no-any-return]


def anytask_latency(backend: str, store_kind: str, samples: int, tmp: Path) -> dict[str, float]:
    """Enqueue one task at a time on an idle manager; time from just before ``await
    tm.enqueue`` to the first line of the task. Waits for each task to end (its
    outcome committed) before the next sample."""

    async def main() -> dict[str, float]:
        tm = _make_manager(store_kind, tmp, f"lat-{backend}", max_concurrency=CONCURRENCY)
        started: list[float] = []
        gate: list[anyio.Event] = []

        @tm.task
        async def probe() -> None:
            started.append(time.perf_counter())
            gate[0].set()

        lat: list[float] = []
        async with tm:
            for i in range(samples + 20):
                gate[:] = [anyio.Event()]
                t0 = time.perf_counter()
                task_id = await tm.enqueue(probe)
                await gate[0].wait()
                if i >= 20:  # warm-up
                    lat.append(started[-1] - t0)
                await tm.wait(task_id)
        lat.sort()
        return {
            "p50_ms": 1000 * statistics.median(lat),
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            "max_ms": 1000 * lat[-1],
            "samples": float(len(lat)),
        }

    return _run(backend, main)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- RSS
def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _peak_rss_kb() -> int:
    """Peak RSS of this process image. ``VmHWM`` rather than ``getrusage().ru_maxrss``:
    on Linux ``ru_maxrss`` survives ``execve``, so a child forked from a big parent (this
    benchmark, after its other runs) would report the parent's peak."""
    try:
        return _proc_status_kb("VmHWM")
    except (OSError, RuntimeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_child(total: int, checkpoint: int, db: str, backend: str) -> None:
    """Run in a fresh process: complete ``total`` tasks on SQLite in chunks, print RSS
    (current and peak) after ``checkpoint`` and after ``total`` as one JSON line."""

    async def main() -> dict[str, Any]:
        tm = TaskManager(snapshot_db=db, max_concurrency=CONCURRENCY)

        @tm.task
        async def noop(i: int) -> int:
            return i

        marks: dict[str, Any] = {}
        done = 0
        chunk = min(2000, checkpoint)
        t0 = time.perf_counter()
        async with tm:
            while done < total:
                k = min(chunk, total - done)
                for j in range(k):
                    tm.add_task(noop, done + j)
                await tm.join()
                done += k
                if done in (checkpoint, total):
                    gc.collect()
                    marks[str(done)] = {
                        "rss_kb": _proc_status_kb("VmRSS"),
                        "peak_kb": _peak_rss_kb(),
                        "seconds": time.perf_counter() - t0,
                    }
            counts = await tm.counts()
            assert counts[TaskStatus.SUCCESS] == total, counts
        return marks

    print(json.dumps(anyio.run(main, backend=backend)))


def rss_growth(total: int, checkpoint: int, tmp: Path, backend: str) -> dict[str, Any]:
    db = tmp / f"rss-{backend}.db"
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--_rss-child",
            str(total),
            str(checkpoint),
            str(db),
            backend,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"RSS child failed:\n{proc.stderr[-3000:]}")
    marks = json.loads(proc.stdout.strip().splitlines()[-1])
    a, b = marks[str(checkpoint)], marks[str(total)]
    return {
        "checkpoint": checkpoint,
        "total": total,
        "rss_mb_at_checkpoint": a["rss_kb"] / 1024,
        "rss_mb_at_total": b["rss_kb"] / 1024,
        "peak_mb_at_checkpoint": a["peak_kb"] / 1024,
        "peak_mb_at_total": b["peak_kb"] / 1024,
        "peak_growth_mb": (b["peak_kb"] - a["peak_kb"]) / 1024,
        "rss_growth_mb": (b["rss_kb"] - a["rss_kb"]) / 1024,
        "db_mb": db.stat().st_size / 2**20,
        "rate": total / b["seconds"],
    }


def _fresh(path: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return path


# --------------------------------------------------------------------------- report
def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--json", metavar="FILE", help="save the figures as JSON")
    parser.add_argument(
        "--repeat", type=int, default=None, help="throughput runs per configuration (best kept)"
    )
    parser.add_argument("--_rss-child", nargs=4, metavar="X", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._rss_child:
        total, checkpoint, db, backend = args._rss_child
        rss_child(int(total), int(checkpoint), db, backend)
        return

    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    n = 2000 if args.quick else 20_000
    samples = 50 if args.quick else 500
    rss_total, rss_check = (10_000, 1000) if args.quick else (100_000, 10_000)
    c = CONCURRENCY
    sqlite_missing = _sqlite_available()
    figures: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        ),
        "tasks": n,
        "concurrency": c,
        "notes": [],
    }
    print(f"anytask runtime benchmark  {figures['date']}  ({figures['machine']})")
    print(f"{n} no-op async tasks, concurrency {c} (pool consumers == max_concurrency)\n")
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="anytask-bench-") as tmpdir:
        tmp = Path(tmpdir)
        tp: dict[str, dict[str, Any]] = {}
        r = args.repeat
        sqlite_kinds = ["sqlite", "sqlite-normal"] if sqlite_missing is None else []
        # each target compares configurations run in alternation (see interleaved)
        for backend in BACKENDS:
            tp.update(
                interleaved(
                    r,
                    {
                        f"pool/{backend}": (bare_pool, (backend, n, c)),
                        f"memory/{backend}": (anytask_throughput, (backend, "memory", n, c, tmp)),
                    },
                )
            )
        compared = {}
        if sqlite_missing is None:
            compared = interleaved(
                r,
                {
                    **{
                        f"sqlite/{b}": (anytask_throughput, (b, "sqlite", n, c, tmp))
                        for b in BACKENDS
                    },
                    "taskflow-snapshot/asyncio": (taskflow, (n, c, str(tmp / "taskflow.db"))),
                    "pace": (machine_pace, (tmp,)),
                },
            )
            figures["pace"] = compared.pop("pace")["runs"]
        for backend in BACKENDS:
            if sqlite_missing is None:
                tp[f"sqlite/{backend}"] = compared[f"sqlite/{backend}"]
                tp[f"sqlite-normal/{backend}"] = best_of(
                    r, anytask_throughput, backend, "sqlite-normal", n, c, tmp
                )
                # informational: bigger claim batches
                tp[f"sqlite-c{4 * c}/{backend}"] = best_of(
                    r, anytask_throughput, backend, "sqlite", n, 4 * c, tmp
                )
        floors: dict[str, dict[str, Any]] = {"memory-store": best_of(r, memory_store_floor, n)}
        if sqlite_missing is None:
            for backend in BACKENDS:
                floors[f"sqlite-store/{backend}"] = best_of(
                    r, sqlite_store_floor, backend, n, c, tmp
                )
            floors["sqlite-sql"] = best_of(r, sqlite_sql_floor, n, c, tmp)
        figures["store_floors"] = floors
        tp["taskflow-memory/asyncio"] = best_of(r, taskflow, n, c, None)
        if sqlite_missing is None:
            tp["taskflow-snapshot/asyncio"] = compared["taskflow-snapshot/asyncio"]
        else:
            tp["taskflow-snapshot/asyncio"] = best_of(r, taskflow, n, c, str(tmp / "taskflow.db"))
        figures["throughput"] = tp

        print(f"Throughput (tasks/s, enqueue of all -> all recorded success; best of {r})")
        print(f"  {'configuration':<28}{'tasks/s':>10}{'seconds':>9}{'enqueue/s':>11}  all runs")
        for key, row in tp.items():
            print(
                f"  {key:<28}{row['rate']:>10.0f}{row['seconds']:>9.2f}"
                f"{row['enqueue_rate']:>11.0f}  {row['rates']}"
            )
        snap = tp["taskflow-snapshot/asyncio"]
        print(
            "  sqlite = TaskManager(snapshot_db=...): every enqueue, claim and outcome committed"
            " (synchronous=FULL);\n  sqlite-normal = SQLiteStore(path, synchronous='NORMAL'):"
            " same commits, survives a process crash, may lose the last commits on power loss"
            f" (informational);\n  sqlite-c{4 * c} = sqlite with max_concurrency={4 * c}: a claim"
            " takes up to the free slots, so this shows the effect of bigger batches"
            " (informational).\n"
            "  fastapi-taskflow with snapshot_db commits only each task's final record "
            "(one transaction per success, synchronous="
            f"{snap.get('sqlite_synchronous')}); enqueues are never committed while it "
            f"runs\n  (committed at the end: {snap.get('rows_committed_success')} success rows; "
            f"its shutdown took {snap['shutdown_seconds']:.2f}s more)."
        )

        print(
            "\nTargets (best run against best run; 'rounds': the ratio within each round of"
            " alternating runs, median and range)"
        )
        for backend in BACKENDS:
            mem, pool = tp[f"memory/{backend}"], tp[f"pool/{backend}"]
            ratio = mem["rate"] / pool["rate"]
            figures[f"ratio_memory_vs_pool_{backend}"] = ratio
            mid, low, high = paired(mem["rates"], pool["rates"])
            figures[f"rounds_memory_vs_pool_{backend}"] = [mid, low, high]
            ok = ratio >= T_MEMORY_VS_POOL
            print(
                f"  memory store / bare pool on {backend:<8}{ratio:>7.1%}  "
                f"(target >= {T_MEMORY_VS_POOL:.0%})  {_verdict(ok)}   "
                f"rounds {mid:.1%} ({low:.1%}-{high:.1%})"
            )
        if sqlite_missing is None:
            for backend in BACKENDS:
                sq = tp[f"sqlite/{backend}"]
                ratio = sq["rate"] / snap["rate"]
                figures[f"ratio_sqlite_vs_taskflow_snapshot_{backend}"] = ratio
                mid, low, high = paired(sq["rates"], snap["rates"])
                figures[f"rounds_sqlite_vs_taskflow_snapshot_{backend}"] = [mid, low, high]
                ok = ratio >= T_SQLITE_VS_TASKFLOW
                print(
                    f"  SQLite ({backend}) / fastapi-taskflow snapshot_db  {ratio:>6.2f}x  "
                    f"(target >= {T_SQLITE_VS_TASKFLOW:g}x)  {_verdict(ok)}   "
                    f"rounds {mid:.2f}x ({low:.2f}x-{high:.2f}x)"
                )
            pace = figures["pace"]
            per_task = 1e6 / snap["rate"]
            sync = statistics.median(p["sync_p50_us"] for p in pace)
            figures["taskflow_snapshot_us_per_task"] = per_task
            syncs = ", ".join(f"{p['sync_p50_us']:.0f}" for p in pace)
            trips = ", ".join(f"{p['round_trip_p50_us']:.0f}" for p in pace)
            print(
                "  machine pace by round (docs/benchmarks.md, 'Why the SQLite ratio swings'):"
                f"\n  disk sync (fdatasync after a 4 KiB append) p50 {syncs} us;"
                " event loop -> thread -> event loop p50"
                f" {trips} us;"
                f"\n  fastapi-taskflow with snapshot_db took {per_task:.0f} us a task in its"
                f" best run, {per_task / sync:.1f} times the median sync"
            )
        else:
            print(f"  SQLite targets not measured: {sqlite_missing}")
            figures["notes"].append(sqlite_missing)

        print(
            "\nStore floors (informational): each store's own calls for the same tasks, with"
            " no runtime around them;\nthe runtime cannot beat its store's floor, so each"
            " floor bounds what the ratio above can reach; sqlite-sql: the SQLite store's"
            "\nstatements alone, in the same transactions, run by one thread on one"
            " connection (no store layer, no writer thread)"
        )
        print(f"  {'floor':<28}{'tasks/s':>10}{'seconds':>9}  all runs")
        for key, row in floors.items():
            print(f"  {key:<28}{row['rate']:>10.0f}{row['seconds']:>9.2f}  {row['rates']}")
        floor = floors["memory-store"]["rate"]
        for backend in BACKENDS:
            pool_rate = tp[f"pool/{backend}"]["rate"]
            share = tp[f"memory/{backend}"]["rate"] / floor
            figures[f"ratio_memory_floor_vs_pool_{backend}"] = floor / pool_rate
            figures[f"ratio_memory_vs_floor_{backend}"] = share
            print(
                f"  memory-store floor / bare pool on {backend:<8}{floor / pool_rate:>7.1%}"
                f"  (the memory/{backend} runtime reaches {share:.0%} of the floor)"
            )
        if sqlite_missing is None:
            for backend in BACKENDS:
                floor = floors[f"sqlite-store/{backend}"]["rate"]
                share = tp[f"sqlite/{backend}"]["rate"] / floor
                figures[f"ratio_sqlite_floor_vs_taskflow_snapshot_{backend}"] = floor / snap["rate"]
                figures[f"ratio_sqlite_vs_floor_{backend}"] = share
                print(
                    f"  sqlite-store floor ({backend}) / fastapi-taskflow snapshot_db"
                    f"  {floor / snap['rate']:>6.2f}x  (the sqlite/{backend} runtime reaches"
                    f" {share:.0%} of the floor)"
                )
            sql = floors["sqlite-sql"]["rate"]
            figures["ratio_sqlite_sql_floor_vs_taskflow_snapshot"] = sql / snap["rate"]
            shares = ", ".join(
                f"the {b} store floor {floors[f'sqlite-store/{b}']['rate'] / sql:.0%}"
                f" and runtime {tp[f'sqlite/{b}']['rate'] / sql:.0%}"
                for b in BACKENDS
            )
            print(
                f"  sqlite-sql floor / fastapi-taskflow snapshot_db  {sql / snap['rate']:>6.2f}x"
                f"  (of it, {shares})"
            )

        print("\nEnqueue -> start latency, single tasks on an idle manager (await enqueue)")
        lat: dict[str, dict[str, float]] = {}
        for kind in ["memory", *sqlite_kinds]:
            for backend in BACKENDS:
                row = anytask_latency(backend, kind, samples, tmp)
                lat[f"{kind}/{backend}"] = row
                ok = row["p50_ms"] <= T_P50_MS
                print(
                    f"  {kind + '/' + backend:<22} p50 {row['p50_ms']:7.3f} ms  "
                    f"p99 {row['p99_ms']:7.3f} ms  max {row['max_ms']:7.3f} ms  "
                    f"(target p50 <= {T_P50_MS:g} ms)  {_verdict(ok)}"
                )
        figures["latency"] = lat

        print(
            f"\nEvent-loop lag while {n} tasks run (a 1 ms sleep beside them wakes this late; "
            "informational)"
        )
        lag: dict[str, dict[str, float]] = {}
        for kind in ["memory", *sqlite_kinds[:1]]:
            for backend in BACKENDS:
                row = anytask_loop_lag(backend, kind, n, tmp)
                lag[f"{kind}/{backend}"] = row
                print(
                    f"  {kind + '/' + backend:<22} p50 {row['p50_ms']:7.3f} ms  "
                    f"p99 {row['p99_ms']:7.3f} ms  max {row['max_ms']:7.3f} ms  "
                    f"({row['samples']:.0f} wake-ups)"
                )
        figures["loop_lag"] = lag

        if sqlite_missing is None:
            print(f"\nMemory: RSS after {rss_check} and {rss_total} completed tasks (SQLite)")
            rss = rss_growth(rss_total, rss_check, tmp, "asyncio")
            figures["rss"] = rss
            ok = rss["peak_growth_mb"] <= T_RSS_GROWTH_MB
            print(
                f"  peak RSS {rss['peak_mb_at_checkpoint']:.1f} MB -> "
                f"{rss['peak_mb_at_total']:.1f} MB, growth {rss['peak_growth_mb']:.1f} MB "
                f"(current RSS {rss['rss_mb_at_checkpoint']:.1f} -> "
                f"{rss['rss_mb_at_total']:.1f} MB; db file {rss['db_mb']:.1f} MB; "
                f"{rss['rate']:.0f} tasks/s)  (target growth <= {T_RSS_GROWTH_MB:g} MB)  "
                f"{_verdict(ok)}"
            )

    figures["wall_seconds"] = time.perf_counter() - started
    print(f"\nwhole run: {figures['wall_seconds']:.0f}s")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures saved to {args.json}")


if __name__ == "__main__":
    main()
