"""In-process event hub: task state changes, published after they are committed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["EventHub", "TaskEvent"]


@dataclass(frozen=True)
class TaskEvent:
    """One committed change of one task. ``kind`` is ``enqueued``, ``running``,
    ``retrying`` or ``finished`` (or ``overflow`` when a slow subscriber missed events
    and should reload what it shows)."""

    kind: str
    task_id: str
    name: str
    status: str
    at: datetime
    attempts: int = 0
    priority: int = 0
    error: str | None = None


class EventHub:
    def __init__(self, buffer: int = 2000) -> None:
        self._buffer = buffer
        self._subscribers: dict[MemoryObjectSendStream[TaskEvent], bool] = {}
        # whether anyone listens: a plain attribute, read on every enqueue and attempt
        self.active = False

    def _drop(self, send: MemoryObjectSendStream[TaskEvent]) -> None:
        self._subscribers.pop(send, None)
        self.active = bool(self._subscribers)

    def publish(self, event: TaskEvent) -> None:
        for send, lagging in list(self._subscribers.items()):
            if lagging:
                # A subscriber that stopped reading stays full: look before trying, which
                # costs far less than a refused send (and its exception) on every event.
                # It resumes once there is room for the marker and this event both.
                stats = send.statistics()
                if stats.max_buffer_size - stats.current_buffer_used < 2:
                    if stats.open_receive_streams == 0:
                        self._drop(send)
                    continue
                try:
                    send.send_nowait(TaskEvent("overflow", "", "", "", event.at))
                    send.send_nowait(event)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    self._drop(send)
                else:
                    self._subscribers[send] = False
                continue
            try:
                send.send_nowait(event)
            except anyio.WouldBlock:
                self._subscribers[send] = True
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._drop(send)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[MemoryObjectReceiveStream[TaskEvent]]:
        send, receive = anyio.create_memory_object_stream[TaskEvent](self._buffer)
        self._subscribers[send] = False
        self.active = True
        try:
            with receive:
                yield receive
        finally:
            self._drop(send)
            send.close()
