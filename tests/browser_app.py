"""The app served to headless Chromium by ``test_browser.py``: a FastAPI app with the
dashboard behind a login, a slow task, a failing task and routes that enqueue them.

Run by hand: ``uvicorn tests.browser_app:app`` (then open /tasks/dashboard,
admin / secret).
"""

from __future__ import annotations

import anyio
from fastapi import FastAPI

from anytask import MemoryStore, TaskManager, task_log
from anytask.fastapi import TaskAdmin

tm = TaskManager(store=MemoryStore(), poll_interval=0.1)
app = FastAPI()
TaskAdmin(app, tm, auth=("admin", "secret"))


@tm.task(name="slow_report", tags=("reports",))
async def slow_report(label: str) -> dict[str, str]:
    task_log("building report", label=label)
    await anyio.sleep(1.5)
    task_log("report done")
    return {"label": label, "rows": "42"}


@tm.task(name="always_fails", retries=0, tags=("flaky",))
async def always_fails(label: str) -> None:
    task_log("about to fail", level="warning", label=label)
    raise ValueError(f"cannot process {label}")


@tm.schedule(every=3600, id="hourly-cleanup")
async def hourly_cleanup() -> str:
    return "cleaned"


@app.post("/enqueue/slow")
async def enqueue_slow(arg: str) -> dict[str, str]:
    return {"task_id": await tm.enqueue(slow_report, arg)}


@app.post("/enqueue/fail")
async def enqueue_fail(arg: str) -> dict[str, str]:
    return {"task_id": await tm.enqueue(always_fails, arg)}
