"""A demo app: a few example tasks on SQLite, a page with buttons to queue them, and the
dashboard at /tasks/dashboard. ``anytask demo`` serves it with uvicorn.

    from anytask.demo import create_app
    app = create_app("anytask-demo.db")      # uvicorn: http://127.0.0.1:8000/
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import anyio
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse

from . import TaskManager, get_task_context, task_log
from .fastapi import BackgroundTasks, TaskAdmin
from .fastapi._wiring import CSP

__all__ = ["create_app"]

PAGE = Path(__file__).parent / "fastapi" / "static" / "demo.html"


def create_app(
    db_path: str = "anytask-demo.db",
    *,
    auth: tuple[str, str] | None = ("admin", "admin"),
    secret: str | None = None,
    **manager_options: Any,
) -> FastAPI:
    """The demo app on a SQLite file; dashboard login ``admin``/``admin`` by default.
    ``manager_options`` go to :class:`~anytask.TaskManager`; the manager is
    ``app.state.task_manager``."""
    manager_options.setdefault("max_concurrency", 8)
    tm = TaskManager(snapshot_db=db_path, **manager_options)
    app = FastAPI(title="anytask demo")
    app.state.task_manager = tm
    TaskAdmin(app, tm, auth=auth, secret=secret)

    @tm.task(name="charge_card", retries=3, delay=1.0, backoff=2.0, tags=["payments"])
    async def charge_card(order_id: int) -> str:
        """Fails on its first two attempts (the gateway is "flaky"), then succeeds."""
        attempt = get_task_context().attempt
        task_log("contacting the payment gateway", order_id=order_id, attempt=attempt)
        await anyio.sleep(0.3)
        if attempt < 3:
            raise ConnectionError(f"gateway timeout on attempt {attempt}")
        return f"order {order_id} charged"

    @tm.task(name="sync_crm", retries=1, delay=0.5)
    async def sync_crm(account: str) -> None:
        """Always fails: a dead letter to replay from the dashboard."""
        await anyio.sleep(0.1)
        raise RuntimeError(f"CRM rejected account {account!r}: invalid API key")

    @tm.task(name="build_report", timeout=120, tags=["reports"])
    async def build_report(pages: int) -> dict[str, int]:
        """Slow: a few seconds, logging its progress."""
        for page in range(1, pages + 1):
            await anyio.sleep(0.5)
            if page % 5 == 0 or page == pages:
                task_log("rendered pages", done=page, total=pages)
        return {"pages": pages}

    @tm.task(name="send_otp", priority=9, retries=2, tags=["sms"])
    def send_otp(phone: str) -> str:
        """High priority (9): runs before everything else waiting."""
        return f"OTP sent to {phone}"

    @tm.task(name="import_contacts", tags=["import"])
    async def import_contacts(count: int) -> int:
        """Logs structured lines with task_log."""
        imported = 0
        for batch in range(0, count, 100):
            await anyio.sleep(0.05)
            imported = min(batch + 100, count)
            task_log("imported a batch", imported=imported, level="info")
        task_log("done", level="info", total=imported)
        return imported

    @tm.schedule(every=30, id="refresh_rates", name="refresh_rates")
    async def refresh_rates() -> dict[str, float]:
        await anyio.sleep(0.05)
        return {"EUR": round(random.uniform(0.9, 0.95), 4)}

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(
            PAGE,
            media_type="text/html; charset=utf-8",
            headers={"content-security-policy": CSP, "x-content-type-options": "nosniff"},
        )

    @app.post("/demo/{kind}")
    async def trigger(
        kind: str,
        background_tasks: BackgroundTasks,
        tasks: Any = Depends(tm.get_tasks),  # noqa: B008 - the article's style
    ) -> dict[str, Any]:
        n = random.randint(1000, 9999)
        if kind == "flaky":
            return {"task_id": background_tasks.add_task(charge_card, n)}
        if kind == "fail":
            return {"task_id": tasks.add_task(sync_crm, f"acct-{n}")}
        if kind == "slow":
            return {"task_id": tasks.add_task(build_report, pages=12)}
        if kind == "priority":
            return {"task_id": tasks.add_task(send_otp, f"+1555{n}")}
        if kind == "log":
            return {"task_id": background_tasks.add_task(import_contacts, count=450)}
        if kind == "burst":
            ids = [tasks.add_task(build_report, pages=2) for _ in range(20)]
            ids += [tasks.add_task(send_otp, f"+1555{i:04d}") for i in range(5)]
            return {"task_ids": ids}
        raise HTTPException(404, f"no demo task {kind!r}")

    if auth is not None:
        print(f"anytask demo: dashboard login is {auth[0]!r} / {auth[1]!r}")
    return app
