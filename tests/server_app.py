"""An app for tests that run real servers (uvicorn, hypercorn with trio workers).

Configured by environment: ``ANYTASK_TEST_DB`` (SQLite file; memory when unset),
``ANYTASK_TEST_AUTH`` ("user:password"), ``ANYTASK_TEST_PING`` (SSE ping seconds),
``ANYTASK_TEST_SECRET`` (the admin's ``secret``), ``ANYTASK_TEST_LEASE`` (the manager's
``lease``).
Run as ``uvicorn server_app:app`` with ``tests/`` on the path.
"""

from __future__ import annotations

import os
from typing import Any

import anyio
from fastapi import BackgroundTasks, Depends, FastAPI

from anytask import TaskAdmin, TaskManager

db = os.environ.get("ANYTASK_TEST_DB")
lease = float(os.environ.get("ANYTASK_TEST_LEASE", "30"))
tm = TaskManager(snapshot_db=db, lease=lease) if db else TaskManager(lease=lease)
app = FastAPI()
auth = os.environ.get("ANYTASK_TEST_AUTH")
TaskAdmin(
    app,
    tm,
    auth=tuple(auth.split(":", 1)) if auth else None,  # type: ignore[arg-type]
    sse_ping=float(os.environ.get("ANYTASK_TEST_PING", "15")),
    secret=os.environ.get("ANYTASK_TEST_SECRET") or None,
)


@tm.task(name="work")
async def work(n: int, pause: float = 0.0) -> int:
    await anyio.sleep(pause)
    return n * 2


@tm.task(name="work_sync")
def work_sync(n: int) -> int:
    return n + 1


@app.post("/enqueue")
async def enqueue(
    n: int, background_tasks: BackgroundTasks, delay: float = 0.0, pause: float = 0.0
) -> dict[str, Any]:
    return {"task_id": background_tasks.add_task(work, n, pause=pause, delay=delay)}


@app.post("/enqueue-sync")
def enqueue_sync(
    n: int,
    tasks: Any = Depends(tm.get_tasks),  # noqa: B008
    delay: float = 0.0,
) -> dict[str, Any]:
    return {"task_id": tasks.add_task(work_sync, n, delay=delay)}


@app.get("/whoami")
async def whoami() -> dict[str, Any]:
    """Which worker process (and manager instance) answered."""
    return {"pid": os.getpid(), "instance_id": tm.instance_id}
