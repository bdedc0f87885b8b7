"""What the user documentation says holds: its FastAPI and Starlette examples run as
written, and the manager's options are checked as docs/runtime.md says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from anytask import (
    ConfigurationError,
    LoopClock,
    MemoryStore,
    TaskManager,
    TaskStatus,
)

DOCS = Path(__file__).resolve().parent.parent / "docs"


def block_after(page: str, heading: str) -> str:
    """The first Python block of ``docs/page`` after the line ``heading``."""
    text = (DOCS / page).read_text()
    start = text.index(heading + "\n")
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert match is not None, f"no python block after {heading!r} in {page}"
    return match.group(1)


def run_block(code: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(code, "<docs example>", "exec"), namespace)
    return namespace


async def post_and_wait(namespace: dict[str, Any], path: str, **params: str) -> Any:
    """POST ``path`` to the example's app inside its lifespan; the finished task."""
    app, tm = namespace["app"], namespace["tm"]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post(path, params=params)
        assert response.status_code == 200, response.text
        task_id = response.json()["task_id"]
        assert isinstance(task_id, str)
        return await tm.wait(task_id, timeout=10)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("store", "tasks.db"),
        ("clock", "utc"),
        ("instance_id", 5),
        ("instance_id", ""),
    ],
)
async def test_bad_manager_options_raise_configuration_error(option: str, value: Any) -> None:
    # docs/runtime.md: "Bad values raise ConfigurationError naming the option" (a wrong
    # store or clock used to fail only at start, with an AttributeError)
    with pytest.raises(ConfigurationError, match=option):
        TaskManager(**{option: value})


async def test_good_manager_options_still_run() -> None:
    tm = TaskManager(store=MemoryStore(), clock=LoopClock(), instance_id="worker-1")

    @tm.task
    async def double(n: int) -> int:
        return n * 2

    async with tm:
        rec = await tm.wait(await tm.enqueue(double, 21), timeout=10)
    assert (rec.status, rec.result) == (TaskStatus.SUCCESS, 42)


async def test_getting_started_fastapi_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the example writes tasks.db
    namespace = run_block(block_after("getting-started.md", "## In FastAPI"))
    rec = await post_and_wait(namespace, "/signup", email="a@b.c")
    assert rec.status is TaskStatus.SUCCESS
    assert rec.kwargs == {"address": "a@b.c"}


async def test_fastapi_page_first_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANYTASK_SECRET", "a-secret-of-at-least-16-characters")
    namespace = run_block(block_after("fastapi.md", "# FastAPI integration"))
    rec = await post_and_wait(namespace, "/signup2", email="a@b.c")
    assert rec.status is TaskStatus.SUCCESS
    assert rec.priority == 9


async def test_fastapi_page_starlette_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace = run_block(block_after("fastapi.md", "## Plain Starlette"))
    rec = await post_and_wait(namespace, "/work")
    assert (rec.status, rec.result) == (TaskStatus.SUCCESS, 42)
