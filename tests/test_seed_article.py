"""Every code example of the seed article runs with anytask (tests/seed_examples/ holds
them, changed only in the import line and with stubs for undefined names)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

from anytask import TaskAdmin, TaskManager, TaskStatus
from fastapi_helpers import BASE, csrf, serve
from seed_examples import _stubs


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # snapshot_db="tasks.db" lands here
    _stubs.reset()


def fresh(name: str) -> ModuleType:
    """Import an example module anew (its TaskManager is per import)."""
    full = f"seed_examples.{name}"
    sys.modules.pop(full, None)
    try:
        return importlib.import_module(full)
    finally:
        sys.modules.pop(full, None)


async def test_stock_examples_still_behave_as_plain_fastapi(
    capsys: pytest.CaptureFixture[str],
) -> None:
    basic, stacked, dependency = (
        fresh("stock_basic"),
        fresh("stock_stacked"),
        fresh("stock_dependency"),
    )
    for module in (basic, stacked, dependency):
        async with serve(module.app) as client:
            response = await client.post("/signup", params={"email": "a@b.c"})
            assert response.json() == {"message": "Signed up successfully"}
    assert capsys.readouterr().out.count("Sending welcome email to a@b.c") == 3
    assert _stubs.audit_log == [("a@b.c", "signup")]
    async_example = fresh("stock_async")
    async with serve(async_example.app) as client:
        assert (await client.post("/deploy")).json() == {"status": "deploying"}
    assert _stubs.posts == [("https://hooks.slack.com/...", {"text": "Deployment started"})]


@pytest.mark.parametrize("name", ["stock_basic", "stock_stacked", "stock_dependency"])
async def test_adding_taskadmin_tracks_the_stock_examples_unchanged(name: str) -> None:
    module = fresh(name)
    tm = TaskManager(snapshot_db="tasks.db")
    TaskAdmin(module.app, tm)
    async with serve(module.app) as client:
        response = await client.post("/signup", params={"email": "a@b.c"})
        assert response.json() == {"message": "Signed up successfully"}
        await tm.join(timeout=10)
        page = await tm.list()
        assert page.items
        assert {r.status for r in page.items} == {TaskStatus.SUCCESS}


async def test_signup_returns_a_task_id_and_the_status_route_reports_it() -> None:
    app_module = fresh("taskflow_app")
    tm = app_module.task_manager
    async with serve(app_module.app) as client:
        response = await client.post("/signup", params={"email": "a@b.c"})
        task_id = response.json()["task_id"]
        await tm.wait(task_id, timeout=10)
        status = await client.get(f"/tasks/{task_id}/status")
        assert status.json() == {"status": "success", "error": None}
        assert (await client.get("/tasks/nope/status")).status_code == 404
        assert _stubs.smtp_client.calls == [("a@b.c", "Welcome", "...")]
        # the article's `curl /tasks/abc-123`
        shown = (await client.get(f"/tasks/{task_id}")).json()
        assert shown["task_id"] == task_id
        assert shown["func_name"] == "send_welcome_email"
        assert shown["status"] == "success"
        for field in ("created_at", "started_at", "ended_at"):
            assert shown[field].endswith("Z")
        assert shown["duration"] >= 0
        assert shown["retries_used"] == 0


async def test_a_failing_send_is_retried_with_backoff_then_succeeds() -> None:
    app_module = fresh("taskflow_app")
    _stubs.smtp_client.failures_left = 1
    async with serve(app_module.app) as client:
        task_id = (await client.post("/signup", params={"email": "a@b.c"})).json()["task_id"]
        record = await app_module.task_manager.wait(task_id, timeout=15)
        assert record.status is TaskStatus.SUCCESS
        assert record.retries_used == 1
        shown = (await client.get(f"/tasks/{task_id}")).json()
        assert shown["retries_used"] == 1


async def test_priority_webhook_and_schedule_examples_run() -> None:
    app_module = fresh("taskflow_app")
    tm = app_module.task_manager
    async with serve(app_module.app) as client:
        report_id = (await client.post("/report")).json()["task_id"]
        assert (await tm.wait(report_id, timeout=10)).priority == 8
        otp_id = tm.add_task(app_module.send_otp, "+100")
        webhook_id = (await client.post("/webhook", json={"event": "paid"})).json()["task_id"]
        for task_id in (otp_id, webhook_id):
            assert (await tm.wait(task_id, timeout=10)).status is TaskStatus.SUCCESS
        assert tm.store.get(otp_id).priority == 9
        assert _stubs.sms_client.calls == [("+100", "Your OTP is 847291")]
        assert _stubs.posts == [("/internal/webhook", {"event": "paid"})]
        headers = await csrf(client)
        listed = (await client.get("/tasks/api/schedules")).json()["items"]
        assert {s["cron"] or s["every"] for s in listed} == {300, "0 9 * * 1-5"}
        for item in listed:
            fired = await client.post(f"/tasks/api/schedules/{item['id']}/trigger", headers=headers)
            record = await tm.wait(fired.json()["task_id"], timeout=10)
            assert record.status is TaskStatus.SUCCESS
        assert _stubs.db.calls == [({"EUR": 0.92},)]
        assert _stubs.digests == ["sent"]


async def test_depends_get_tasks_example() -> None:
    module = fresh("taskflow_depends")
    async with serve(module.app) as client:
        task_id = (await client.post("/signup", params={"email": "x@y.z"})).json()["task_id"]
        record = await module.task_manager.wait(task_id, timeout=10)
        assert record.status is TaskStatus.SUCCESS
        assert record.kwargs == {"address": "x@y.z"}


async def test_failures_are_recorded_instead_of_vanishing() -> None:
    failing = fresh("failing_tasks")
    tm = TaskManager(snapshot_db="tasks.db")
    _stubs.smtp_client.failures_left = 1
    async with tm:
        first = tm.add_task(failing.send_welcome_email, "a@b.c")
        second = tm.add_task(failing.send_welcome_email_smtp, "a@b.c")
        for task_id in (first, second):
            record = await tm.wait(task_id, timeout=10)
            assert record.status is TaskStatus.FAILED
            assert record.error == "SMTP server unavailable"


async def test_options_and_login_example(tmp_path: Path) -> None:
    module = fresh("taskflow_options")
    tm = module.task_manager
    assert tm.requeue_pending is True
    async with serve(module.app) as client:
        assert (await client.get("/tasks/api/tasks")).status_code == 401
        token = (await client.get("/tasks/api/session")).json()["csrf_token"]
        response = await client.post(
            "/tasks/login",
            data={"username": "admin", "password": "secret", "csrf_token": token},
            headers={"origin": BASE},
        )
        assert response.status_code == 303
        assert (await client.get("/tasks/api/tasks")).status_code == 200
    assert (tmp_path / "tasks.db").exists()


async def test_comparison_example_returns_a_task_id() -> None:
    module = fresh("comparison")
    async with serve(module.app) as client:
        task_id = (await client.post("/signup", params={"email": "a@b.c"})).json()["task_id"]
        record = await module.task_manager.wait(task_id, timeout=10)
        assert record.status is TaskStatus.SUCCESS
