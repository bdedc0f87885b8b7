"""A response whose tasks were partly committed when the store started failing: the
route queues 3000 tasks (more than one group commit of INSERT_BATCH=2000 holds), and the
store fails once 2000 rows are written. The response must be a 5xx and none of the
request's tasks may run: those not written are withdrawn, those written are cancelled
(before the fix the first 2000 were committed, claimed and run while the response waited
for the rest, and the response was a 503 all the same)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi import BackgroundTasks, Depends, FastAPI

from anytask import SQLiteStore, StoreError, TaskAdmin, TaskManager, TaskStatus
from fastapi_helpers import serve

N = 3000
RAN: list[int] = []


class FailAfterStore(SQLiteStore):
    """A disk that fills up: ``write_batch`` commits at most ``rows`` task rows in all;
    a write that would go beyond fails (while ``failing`` is set), as does every write
    after the first failure (the writer retries, and keeps failing)."""

    def __init__(self, *args: Any, rows: int = 2000, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rows = rows
        self.written = 0
        self.calls = 0
        self.failed = 0
        self.failing = True

    async def write_batch(self, records: Any, outcomes: Any, *args: Any) -> Any:
        self.calls += 1
        if self.failing and (self.failed or self.written + len(records) > self.rows):
            self.failed += 1
            raise StoreError("database or disk is full (test)")
        result = await super().write_batch(records, outcomes, *args)
        self.written += len(records)
        return result


async def job(n: int) -> None:
    RAN.append(n)


@pytest.mark.parametrize("style", ["background_tasks", "depends"])
async def test_partially_committed_response_is_refused_and_nothing_runs(
    style: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("CRITICAL", logger="anytask")  # the writer logs every failed try
    RAN.clear()
    store = FailAfterStore(tmp_path / "t.db", rows=2000)
    tm = TaskManager(store=store)
    tm.task(job)
    app = FastAPI()
    TaskAdmin(app, tm)

    @app.post("/bg")
    async def bg(background_tasks: BackgroundTasks) -> dict[str, Any]:
        return {"ids": [background_tasks.add_task(job, i) for i in range(N)]}

    @app.post("/dep")
    async def dep(tasks: Any = Depends(tm.get_tasks)) -> dict[str, Any]:  # noqa: B008
        return {"ids": [tasks.add_task(job, i) for i in range(N)]}

    path = "/bg" if style == "background_tasks" else "/dep"
    async with serve(app) as client:
        with anyio.fail_after(60):
            response = await client.post(path)
        assert 500 <= response.status_code < 600, response.text
        assert "not committed" in response.json()["detail"]
        assert store.failed >= 1
        # the store works again: nothing of that request may be written or run now
        store.failing = False
        with anyio.fail_after(20):  # until the writer's next try succeeds
            while True:
                try:
                    await tm.flush()
                    break
                except StoreError:
                    await anyio.sleep(0.2)
        await tm.join(timeout=20)
        counts = await tm.counts()
    assert RAN == [], f"{len(RAN)} tasks of a refused response ran"
    assert counts.get(TaskStatus.PENDING, 0) == 0
    assert counts.get(TaskStatus.SUCCESS, 0) == 0
    # the first group commit wrote 2000 of them: they are cancelled, the rest never written
    assert sum(counts.values()) == counts.get(TaskStatus.CANCELLED, 0)
