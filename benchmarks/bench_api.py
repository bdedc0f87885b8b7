"""Latency of the dashboard's JSON API with 100,000 tasks in a SQLite history.

Fills a SQLite store directly (batches of 5,000), then times ~200 requests of each kind
through httpx's ASGI transport: the first page of the list, a filtered page, a page deep
in the history (keyset cursor) and the metrics of a window (computed by the store from the
tasks that ended in: the last hour, day and week of a history spread over a week, and a worst case
where every record ended within the window). Prints p50/p99 in milliseconds.

    .venv/bin/python benchmarks/bench_api.py [--tasks 100000] [--requests 200] [--backend trio]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
from fastapi import FastAPI

from anytask import TaskAdmin, TaskManager, TaskRecord, TaskStatus
from anytask.stores.sqlite import SQLiteStore

NAMES = ["send_email", "resize_image", "sync_rates", "build_report", "charge_card"]
STATUSES = [TaskStatus.SUCCESS] * 8 + [TaskStatus.FAILED, TaskStatus.CANCELLED]


def make_records(n: int, now: datetime, span: float) -> list[TaskRecord]:
    rnd = random.Random(7)
    out = []
    for i in range(n):
        ended = now - timedelta(seconds=span * (n - i) / n)  # oldest first, evenly spread
        started = ended - timedelta(seconds=rnd.expovariate(20))
        status = rnd.choice(STATUSES)
        out.append(
            TaskRecord(
                id=str(uuid.uuid4()),
                name=rnd.choice(NAMES),
                args=[i],
                kwargs={"to": f"user{i}@example.com"},
                created_at=started - timedelta(milliseconds=5),
                run_after=started - timedelta(milliseconds=5),
                status=status,
                started_at=started,
                ended_at=ended,
                attempts=1,
                error="SMTP unavailable" if status is TaskStatus.FAILED else None,
                error_type="ConnectionError" if status is TaskStatus.FAILED else None,
                tags=["bench"],
            )
        )
    return out


async def fill(path: str, n: int, span: float) -> None:
    store = SQLiteStore(path)
    await store.open()
    try:
        records = make_records(n, datetime.now(UTC), span)
        for start in range(0, n, 5000):
            await store.insert(records[start : start + 5000])
    finally:
        await store.close()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def measure(path: str, requests: int, windows: dict[str, float]) -> None:
    from fastapi_helpers import lifespan  # tests/fastapi_helpers.py, put on sys.path below

    tm = TaskManager(snapshot_db=path)
    app = FastAPI()
    TaskAdmin(app, tm)
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            first = (await client.get("/tasks/api/tasks", params={"limit": 50})).json()
            deep_cursor = max(first["total"] // 50, 1)  # near the oldest records
            cases: dict[str, tuple[str, dict[str, Any]]] = {
                "list first page": ("/tasks/api/tasks", {"limit": 50}),
                "list filtered": (
                    "/tasks/api/tasks",
                    {"limit": 50, "status": "failed", "name": "charge_card"},
                ),
                "list deep cursor": ("/tasks/api/tasks", {"limit": 50, "cursor": deep_cursor}),
            }
            for label, window in windows.items():
                cases[label] = ("/tasks/api/metrics", {"window": window, "buckets": 30})
            print(f"{first['total']} tasks in the store; {requests} requests per case")
            for label, (url, params) in cases.items():
                times = []
                for _ in range(requests):
                    start = time.perf_counter()
                    response = await client.get(url, params=params)
                    times.append((time.perf_counter() - start) * 1000)
                    response.raise_for_status()
                print(
                    f"  {label:18s} p50 {statistics.median(times):7.2f} ms   "
                    f"p99 {pct(times, 99):7.2f} ms"
                )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        week = str(Path(tmp) / "week.db")
        start = time.perf_counter()
        anyio.run(fill, week, args.tasks, 7 * 86400.0, backend=args.backend)
        print(f"filled {args.tasks} records in {time.perf_counter() - start:.1f} s")
        print("history spread over 7 days:")
        windows = {"metrics 1h": 3600.0, "metrics 24h": 86400.0, "metrics 7d": 7 * 86400.0}
        anyio.run(measure, week, args.requests, windows, backend=args.backend)
        hour = str(Path(tmp) / "hour.db")
        anyio.run(fill, hour, args.tasks, 3500.0, backend=args.backend)
        print("worst case, every task ended in the last hour:")
        anyio.run(measure, hour, args.requests, {"metrics 1h": 3600.0}, backend=args.backend)


if __name__ == "__main__":
    import sys

    # the ASGI lifespan runner used by the tests
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    main()
