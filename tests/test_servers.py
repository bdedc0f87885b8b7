"""The FastAPI integration under real servers: uvicorn (asyncio) and hypercorn with trio
workers, each a subprocess on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from servers import KINDS, EventStreamReader, running_server


@pytest.fixture(scope="module", params=KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[str]:
    with running_server(request.param, {"ANYTASK_TEST_PING": "0.5"}) as (base, _):
        yield base


async def wait_done(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    with anyio.fail_after(10):
        while True:
            detail = (await client.get(f"/tasks/api/tasks/{task_id}")).json()
            if detail["status"] in ("success", "failed"):
                return detail  # type: ignore[no-any-return]
            await anyio.sleep(0.02)


async def test_enqueue_then_list_and_detail_through_the_api(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        async_id = (await client.post("/enqueue", params={"n": 21})).json()["task_id"]
        sync_id = (await client.post("/enqueue-sync", params={"n": 41})).json()["task_id"]
        assert (await wait_done(client, async_id))["result"] == 42
        assert (await wait_done(client, sync_id))["result"] == 42
        listed = (await client.get("/tasks/api/tasks", params={"limit": 500})).json()
        ids = [t["task_id"] for t in listed["items"]]
        assert async_id in ids
        assert sync_id in ids
        short = (await client.get(f"/tasks/{async_id}")).json()
        assert short["func_name"] == "work"
        health = (await client.get("/tasks/api/health")).json()
        assert health["state"] == "running"


async def test_the_event_stream_delivers_a_tasks_events(server: str) -> None:
    kinds: list[str] = []
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        with anyio.fail_after(10):
            async with EventStreamReader(server, "/tasks/api/events") as stream:
                assert stream.status == 200
                assert stream.content_type.startswith("text/event-stream")
                assert await stream.line() == ": ok"  # subscribed
                task_id = (await client.post("/enqueue", params={"n": 1})).json()["task_id"]
                event = None
                while "finished" not in kinds:
                    line = await stream.line()
                    if line.startswith("event:"):
                        event = line.split(":", 1)[1].strip()
                    elif line.startswith("data:") and event == "task":
                        data = json.loads(line[5:])
                        if data["task_id"] == task_id:
                            kinds.append(data["kind"])
    assert kinds == ["enqueued", "running", "finished"]
    assert data["status"] == "success"
    assert data["func_name"] == "work"


async def test_the_event_stream_sends_pings(server: str) -> None:
    with anyio.fail_after(10):
        async with EventStreamReader(server, "/tasks/api/events") as stream:
            assert await stream.line() == ": ok"
            while await stream.line() != ": ping":
                pass
