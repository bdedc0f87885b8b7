"""Text no store can hold (a lone surrogate, which a JSON "\\ud800" escape decodes to)
sent to the JSON API is refused with a 4xx that names it, never a 500."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI

from anytask import MemoryStore, SQLiteStore, TaskAdmin, TaskManager
from fastapi_helpers import BASE, csrf, serve


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b'{"ids": ["\\ud800"]}', "ids[0]"),
        (b'{"ids": "\\ud800"}', "ids"),
        (b'{"window": "\\ud800"}', "window"),
        (b'"\\ud800"', "body"),
    ],
)
async def test_replay_with_a_lone_surrogate_is_a_422(
    kind: str, body: bytes, named: str, tmp_path: Path
) -> None:
    store = SQLiteStore(tmp_path / "t.db") if kind == "sqlite" else MemoryStore()
    tm = TaskManager(store=store)
    app = FastAPI()
    TaskAdmin(app, tm)
    async with serve(app) as client:
        headers = {**await csrf(client), "content-type": "application/json"}
        response = await client.post("/tasks/api/replay", content=body, headers=headers)
        assert response.status_code == 422, response.text
        assert named in response.text
        assert "\\ud800" in response.text  # the culprit, escaped
        assert await tm.store.count() == 0


@pytest.mark.parametrize("path", ["/tasks/login", "/tasks/logout"])
async def test_a_csrf_token_with_a_lone_surrogate_is_a_403(path: str) -> None:
    tm = TaskManager(store=MemoryStore())
    app = FastAPI()
    TaskAdmin(app, tm, auth=("admin", "secret-pass"))
    async with serve(app) as client:
        await client.get("/tasks/api/session")  # a session cookie, as the login page gets
        response = await client.post(
            path,
            content=b'{"csrf_token": "\\ud800", "username": "admin", "password": "secret-pass"}',
            headers={"origin": BASE, "content-type": "application/json"},
        )
        assert response.status_code == 403, response.text
        assert "CSRF" in response.json()["detail"]
        assert (await client.get("/tasks/api/tasks")).status_code == 401  # not signed in
