"""Subscribers and event-stream clients that stop reading."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import anyio
import pytest
from anyio.streams.memory import MemoryObjectSendStream
from fastapi import FastAPI

from anytask import TaskAdmin, TaskManager
from anytask._events import EventHub, TaskEvent
from fastapi_helpers import lifespan

pytestmark = pytest.mark.anyio


def _event(i: int) -> TaskEvent:
    return TaskEvent("enqueued", f"t{i}", "work", "pending", datetime.now(UTC))


async def test_a_stalled_subscriber_is_not_tried_on_every_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0
    original = MemoryObjectSendStream.send_nowait

    def counting(self: Any, item: Any) -> None:
        nonlocal calls
        calls += 1
        original(self, item)

    monkeypatch.setattr(MemoryObjectSendStream, "send_nowait", counting)
    hub = EventHub(buffer=10)
    async with hub.subscribe() as events:
        for i in range(1000):  # never read meanwhile
            hub.publish(_event(i))
        # the buffer's 10 and one refused send, not a refused send for every event
        assert calls <= 20
        got = [events.receive_nowait().task_id for _ in range(10)]
        assert got == [f"t{i}" for i in range(10)]
        hub.publish(_event(1000))  # it reads again: told it missed events, then the event
        assert events.receive_nowait().kind == "overflow"
        assert events.receive_nowait().task_id == "t1000"
        hub.publish(_event(1001))
        assert events.receive_nowait().task_id == "t1001"


async def test_a_stalled_event_stream_ends_at_its_max_age() -> None:
    """A client that stopped reading blocks the stream's send: the stream must still end
    (and unsubscribe) about max_age later, not hold its subscriber and task forever."""
    tm = TaskManager()
    app = FastAPI()
    TaskAdmin(app, tm, sse_ping=0.1, sse_max_age=0.5)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/tasks/api/events",
        "raw_path": b"/tasks/api/events",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    bodies = 0

    async def receive() -> dict[str, Any]:
        await anyio.sleep_forever()  # the client neither sends nor closes
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        nonlocal bodies
        if message["type"] == "http.response.body":
            bodies += 1
            if bodies > 1:  # the server's write buffer is full: the send waits
                await anyio.sleep_forever()

    async with lifespan(app):
        with anyio.fail_after(10):
            await app(scope, receive, send)
        assert not tm.events.active
