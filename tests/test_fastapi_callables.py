"""``BackgroundTasks.add_task`` in a TaskAdmin app: callables anytask can find again by
name become durable tasks; per-request ones (a method of a per-request object, a
closure, a lambda, a partial, a callable object) keep Starlette's behaviour, on every
request, with one warning per name."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import BackgroundTasks, Depends, FastAPI

from anytask import MemoryStore, TaskAdmin, TaskManager, TaskStatus
from anytask.fastapi import _wiring
from fastapi_helpers import serve

RAN: list[str] = []


def module_level(label: str) -> None:
    RAN.append("module:" + label)


class Mailer:
    def send(self, label: str) -> None:
        RAN.append("singleton:" + label)


MAILER = Mailer()  # a module-level object: its bound method is the same task every time


class Tools:
    @staticmethod
    def static(label: str) -> None:
        RAN.append("static:" + label)

    @classmethod
    def klass(cls, label: str) -> None:
        RAN.append("classmethod:" + label)


class NotificationService:
    """The seed article's pattern: a per-request service queueing its own method."""

    def __init__(self, bg: BackgroundTasks) -> None:
        self.bg = bg

    def _send_welcome(self, label: str) -> None:
        RAN.append("method:" + label)

    def queue(self, label: str) -> Any:
        return self.bg.add_task(self._send_welcome, label)


def get_service(bg: BackgroundTasks) -> NotificationService:
    return NotificationService(bg)


class Auditor:
    def __call__(self, label: str) -> None:
        RAN.append("object:" + label)


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    RAN.clear()
    _wiring._warned.clear()  # "once per name" is per process: start each test afresh
    yield
    _wiring._warned.clear()


def make_app() -> tuple[FastAPI, TaskManager]:
    tm = TaskManager(store=MemoryStore())
    app = FastAPI()
    TaskAdmin(app, tm)

    @tm.task
    def registered_closure(label: str) -> None:  # @tm.task makes a closure a task
        RAN.append("registered:" + label)

    @tm.task(name="renamed")
    def renamed_closure(label: str) -> None:
        RAN.append("renamed:" + label)

    @app.post("/per-request/method")
    def method(label: str, service: NotificationService = Depends(get_service)) -> Any:  # noqa: B008
        return {"returned": service.queue(label)}

    @app.post("/per-request/closure")
    async def closure(label: str, bg: BackgroundTasks) -> Any:
        def audit() -> None:
            RAN.append("closure:" + label)

        return {"returned": bg.add_task(audit)}

    @app.post("/per-request/lambda")
    def with_lambda(label: str, bg: BackgroundTasks) -> Any:
        return {"returned": bg.add_task(lambda: RAN.append("lambda:" + label))}

    @app.post("/per-request/partial")
    def with_partial(label: str, bg: BackgroundTasks) -> Any:
        return {"returned": bg.add_task(functools.partial(module_level, "partial:" + label))}

    @app.post("/per-request/object")
    def with_object(label: str, bg: BackgroundTasks) -> Any:
        return {"returned": bg.add_task(Auditor(), label)}

    durable = {
        "module": module_level,
        "singleton": MAILER.send,
        "static": Tools.static,
        "classmethod": Tools.klass,
        "registered": registered_closure,
        "renamed": renamed_closure,
    }

    @app.post("/durable/{kind}")
    def queue_durable(kind: str, label: str, bg: BackgroundTasks) -> Any:
        return {"returned": bg.add_task(durable[kind], label)}

    return app, tm


PER_REQUEST = ["method", "closure", "lambda", "partial", "object"]


@pytest.mark.parametrize("kind", PER_REQUEST)
async def test_per_request_callables_run_after_the_response_on_every_request(kind: str) -> None:
    app, tm = make_app()
    async with serve(app) as client:
        for i in range(3):
            response = await client.post(f"/per-request/{kind}", params={"label": str(i)})
            assert response.status_code == 200, response.text
            assert response.json() == {"returned": None}  # Starlette's behaviour
        assert await tm.store.count() == 0  # nothing went to anytask
    expected = {
        "method": "method:{}",
        "closure": "closure:{}",
        "lambda": "lambda:{}",
        "partial": "module:partial:{}",
        "object": "object:{}",
    }[kind]
    assert [expected.format(i) for i in range(3)] == RAN  # each ran, once


@pytest.mark.parametrize(
    "kind", ["module", "singleton", "static", "classmethod", "registered", "renamed"]
)
async def test_callables_found_again_by_name_are_durable_tasks(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    app, tm = make_app()
    async with serve(app) as client:
        ids = []
        for i in range(3):
            response = await client.post(f"/durable/{kind}", params={"label": str(i)})
            assert response.status_code == 200, response.text
            task_id = response.json()["returned"]
            assert isinstance(task_id, str)
            assert tm.store.get(task_id) is not None  # committed before the response
            ids.append(task_id)
        for task_id in ids:
            assert (await tm.wait(task_id, timeout=10)).status is TaskStatus.SUCCESS
    assert sorted(RAN) == [f"{kind}:{i}" for i in range(3)]
    assert "not a durable anytask task" not in caplog.text


async def test_the_warning_says_why_once_per_name(caplog: pytest.LogCaptureFixture) -> None:
    app, _ = make_app()
    with caplog.at_level(logging.WARNING, logger="anytask"):
        async with serve(app) as client:
            for _ in range(3):
                for kind in ("method", "closure"):
                    response = await client.post(f"/per-request/{kind}", params={"label": "x"})
                    assert response.status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.name == "anytask"]
    assert len(warnings) == 2, warnings
    method, closure = warnings
    assert "NotificationService._send_welcome" in method
    assert "not a module-level global" in method
    assert "closure.<locals>.audit" in closure
    assert "defined inside another function" in closure
    for text in warnings:
        assert "runs in this process after the response" in text
        assert "@tm.task" in text


def test_why_not_durable_classifies_callables() -> None:
    tm = TaskManager(store=MemoryStore())
    local_list: list[str] = []
    why = _wiring.why_not_durable
    assert why(tm, module_level) is None
    assert why(tm, MAILER.send) is None
    assert why(tm, Tools.static) is None
    assert why(tm, Tools.klass) is None
    assert why(tm, print) is None  # a builtin: bound to its module
    assert why(tm, "some.task.name") is None
    assert why(tm, functools.lru_cache(maxsize=None)(module_level)) is not None  # not found
    assert why(tm, lambda: None) == "a lambda"
    assert why(tm, functools.partial(module_level, "x")) is not None
    assert why(tm, Auditor()) == "a callable object, not a function"
    assert "not a module-level global" in (why(tm, Mailer().send) or "")
    assert "not a module-level global" in (why(tm, local_list.append) or "")
    # the caller's globals count: a module-level object imported by the calling module
    other = Mailer()
    assert why(tm, other.send, {"mailer": other}) is None
    # a long-lived object kept elsewhere becomes a task once registered
    kept = Mailer()
    assert why(tm, kept.send) is not None
    tm.task(kept.send)
    assert why(tm, kept.send) is None
