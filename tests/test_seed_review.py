"""Review of the seed article's claims, as a user who read it."""

from __future__ import annotations

import pytest
from fastapi import BackgroundTasks, FastAPI

from anytask import TaskAdmin, TaskManager, TaskStatus
from fastapi_helpers import serve
from seed_examples import stock_basic, stock_dependency


async def test_two_plain_functions_with_one_name_both_run_through_background_tasks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two modules' module-level ``send_welcome_email`` (the article's stock examples),
    passed to ``BackgroundTasks.add_task`` in one app: the second cannot take the task
    name the first holds, so it keeps Starlette's behaviour instead of failing the
    request."""
    tm = TaskManager()
    app = FastAPI()
    TaskAdmin(app, tm)

    @app.post("/a")
    def a(email: str, background_tasks: BackgroundTasks) -> dict[str, str | None]:
        return {"task_id": background_tasks.add_task(stock_basic.send_welcome_email, email)}

    @app.post("/b")
    def b(email: str, background_tasks: BackgroundTasks) -> dict[str, str | None]:
        task_id = background_tasks.add_task(stock_dependency.send_welcome_email, email)
        return {"task_id": task_id}

    async with serve(app) as client:
        first = await client.post("/a", params={"email": "a@b.c"})
        second = await client.post("/b", params={"email": "d@e.f"})
        assert first.status_code == 200
        assert second.status_code == 200
        task_id = first.json()["task_id"]
        assert (await tm.wait(task_id, timeout=10)).status is TaskStatus.SUCCESS
        assert second.json() == {"task_id": None}  # run by Starlette after the response
        again = await client.post("/a", params={"email": "g@h.i"})
        assert again.json()["task_id"] is not None  # the first one stays durable
        await tm.join(timeout=10)
    out = capsys.readouterr().out
    for address in ("a@b.c", "d@e.f", "g@h.i"):
        assert out.count(f"Sending welcome email to {address}") == 1
