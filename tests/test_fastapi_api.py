"""The JSON API under /tasks/api: listing with filters and keyset paging, detail,
cancel, replay (one, bulk, dry run), dead letters, metrics, health and session."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI

from anytask import MemoryStore, TaskAdmin, TaskManager, TaskStatus
from fastapi_helpers import csrf, serve


class Boom(Exception):
    pass


def make_app() -> tuple[FastAPI, TaskManager]:
    tm = TaskManager(store=MemoryStore())
    app = FastAPI()
    TaskAdmin(app, tm)

    @tm.task(name="send", tags=["mail"])
    async def send(to: str) -> str:
        return to

    @tm.task(name="explode")
    async def explode(reason: str) -> None:
        raise Boom(reason)

    @tm.task(name="later")
    async def later() -> None:
        pass

    app.state.fns = {"send": send, "explode": explode, "later": later}
    return app, tm


async def run_all(
    tm: TaskManager, calls: list[tuple[Any, tuple[Any, ...], dict[str, Any]]]
) -> list[str]:
    ids = await tm.enqueue_many(calls)
    for task_id, (_, _, kwargs) in zip(ids, calls, strict=True):
        if "delay" not in kwargs:
            await tm.wait(task_id, timeout=10)
    return ids


async def test_list_pages_newest_first_with_a_total() -> None:
    app, tm = make_app()
    send = app.state.fns["send"]
    async with serve(app) as client:
        ids = await run_all(tm, [(send, (f"u{i}@x",), {}) for i in range(7)])
        first = (await client.get("/tasks/api/tasks", params={"limit": 3})).json()
        assert [t["task_id"] for t in first["items"]] == ids[::-1][:3]
        assert first["total"] == 7
        second = await client.get(
            "/tasks/api/tasks", params={"limit": 3, "cursor": first["next_cursor"]}
        )
        assert [t["task_id"] for t in second.json()["items"]] == ids[::-1][3:6]


async def test_list_filters_by_status_name_tag_text_and_time() -> None:
    app, tm = make_app()
    fns = app.state.fns
    async with serve(app) as client:
        await run_all(
            tm,
            [
                (fns["send"], ("a@x",), {}),
                (fns["explode"], ("disk full",), {}),
                (fns["later"], (), {"delay": 3600}),
            ],
        )

        async def names(**params: str) -> list[str]:
            response = await client.get("/tasks/api/tasks", params=params)
            assert response.status_code == 200, response.text
            return [t["func_name"] for t in response.json()["items"]]

        assert await names(status="failed,pending") == ["later", "explode"]
        assert await names(name="send") == ["send"]
        assert await names(tag="mail") == ["send"]
        assert await names(q="DISK") == ["explode"]
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert await names(since=future) == []
        assert len(await names(until=future)) == 3
        assert (await client.get("/tasks/api/tasks", params={"status": "nope"})).status_code == 422


async def test_detail_has_the_article_fields_and_the_payload() -> None:
    app, tm = make_app()
    async with serve(app) as client:
        [task_id] = await run_all(tm, [(app.state.fns["send"], (), {"to": "a@x"})])
        short = (await client.get(f"/tasks/{task_id}")).json()
        for field in (
            "task_id",
            "func_name",
            "status",
            "created_at",
            "started_at",
            "ended_at",
            "duration",
            "retries_used",
        ):
            assert field in short
        assert short["status"] == "success"
        assert short["created_at"].endswith("Z")
        detail = (await client.get(f"/tasks/api/tasks/{task_id}")).json()
        assert detail["kwargs"] == {"to": "a@x"}
        assert detail["result"] == "a@x"
        missing = await client.get("/tasks/api/tasks/nope")
        assert missing.status_code == 404
        assert "detail" in missing.json()


async def test_cancel_a_pending_task() -> None:
    app, tm = make_app()
    async with serve(app) as client:
        task_id = await tm.enqueue(app.state.fns["later"], delay=3600)
        response = await client.post(
            f"/tasks/api/tasks/{task_id}/cancel", headers=await csrf(client)
        )
        assert response.json() == {"task_id": task_id, "status": "cancelled"}
        assert tm.store.get(task_id).status is TaskStatus.CANCELLED


async def test_replay_one_dead_task_and_refuse_a_live_one() -> None:
    app, tm = make_app()
    fns = app.state.fns
    async with serve(app) as client:
        failed_id, ok_id = await run_all(
            tm, [(fns["explode"], ("x",), {}), (fns["send"], ("a@x",), {})]
        )
        headers = await csrf(client)
        response = await client.post(f"/tasks/api/tasks/{failed_id}/replay", headers=headers)
        new_id = response.json()["new_task_id"]
        assert response.json()["task_id"] == failed_id
        assert (await tm.get(new_id)).replay_of == failed_id
        detail = (await client.get(f"/tasks/api/tasks/{failed_id}")).json()
        assert detail["replays"] == [new_id]
        assert detail["replayed_as"] == new_id
        assert (await client.get(f"/tasks/api/tasks/{new_id}")).json()["replays"] == []
        # the same request again (a double click): the same replay, nothing new written
        count = await tm.store.count()
        again = await client.post(f"/tasks/api/tasks/{failed_id}/replay", headers=headers)
        assert again.json() == {"task_id": failed_id, "new_task_id": new_id}
        assert await tm.store.count() == count
        refused = await client.post(f"/tasks/api/tasks/{ok_id}/replay", headers=headers)
        assert refused.status_code == 409


async def test_bulk_replay_dry_run_lists_exactly_what_is_then_dispatched() -> None:
    app, tm = make_app()
    fns = app.state.fns
    async with serve(app) as client:
        await run_all(
            tm, [(fns["explode"], (str(i),), {}) for i in range(3)] + [(fns["send"], ("a",), {})]
        )
        headers = await csrf(client)
        dry = (
            await client.post(
                "/tasks/api/replay", json={"window": "1h", "dry_run": True}, headers=headers
            )
        ).json()
        assert dry["dry_run"] is True
        assert dry["count"] == 3
        assert all(item["new_task_id"] is None for item in dry["items"])
        assert await tm.store.count() == 4  # nothing written
        real = (
            await client.post("/tasks/api/replay", json={"window": "1h"}, headers=headers)
        ).json()
        assert [i["task_id"] for i in real["items"]] == [i["task_id"] for i in dry["items"]]
        assert all(i["new_task_id"] for i in real["items"])
        by_ids = await client.post(
            "/tasks/api/replay",
            json={"ids": [dry["items"][0]["task_id"]], "dry_run": True},
            headers=headers,
        )
        assert by_ids.json()["count"] == 0  # replayed already: a dead task runs again once
        both = await client.post(
            "/tasks/api/replay", json={"ids": [], "window": "1h"}, headers=headers
        )
        assert both.status_code == 422


async def test_dead_letters_lists_failed_tasks_only() -> None:
    app, tm = make_app()
    fns = app.state.fns
    async with serve(app) as client:
        failed_id, _ = await run_all(tm, [(fns["explode"], ("x",), {}), (fns["send"], ("a",), {})])
        page = (await client.get("/tasks/api/dead-letters")).json()
        assert [t["task_id"] for t in page["items"]] == [failed_id]
        assert page["items"][0]["error_type"] == "Boom"
        assert page["items"][0]["replayed_as"] is None
        # once replayed (and the replay dead too), each row says where its replay is
        new_id = await tm.replay(failed_id)
        await tm.wait(new_id, timeout=5)
        page = (await client.get("/tasks/api/dead-letters")).json()
        rows = {t["task_id"]: t["replayed_as"] for t in page["items"]}
        assert rows == {failed_id: new_id, new_id: None}


async def test_metrics_counts_series_and_percentiles() -> None:
    app, tm = make_app()
    fns = app.state.fns
    async with serve(app) as client:
        await run_all(tm, [(fns["send"], ("a",), {})] * 4 + [(fns["explode"], ("x",), {})])
        m = (await client.get("/tasks/api/metrics", params={"window": 600, "buckets": 10})).json()
        assert m["counts"]["success"] == 4
        assert m["counts"]["failed"] == 1
        assert m["total"] == 5
        assert len(m["series"]) == 10
        assert sum(b["success"] for b in m["series"]) == 4
        assert sum(b["failed"] for b in m["series"]) == 1
        send = next(d for d in m["durations"] if d["func_name"] == "send")
        assert send["count"] == 4
        assert 0 <= send["p50"] <= send["p95"] <= send["p99"]


async def test_health_session_and_schedules() -> None:
    app, tm = make_app()
    async with serve(app) as client:
        health = (await client.get("/tasks/api/health")).json()
        assert health["status"] == "ok"
        assert health["state"] == "running"
        assert health["instance_id"] == tm.instance_id
        session = (await client.get("/tasks/api/session")).json()
        assert session["auth"] is False
        assert session["csrf_token"]
        schedules = await client.get("/tasks/api/schedules")
        assert schedules.status_code == 200
        assert isinstance(schedules.json()["items"], list)


@pytest.mark.parametrize("path", ["/tasks/api/tasks", "/tasks/dashboard"])
async def test_admin_responses_carry_security_headers(path: str) -> None:
    app, _ = make_app()
    async with serve(app) as client:
        response = await client.get(path)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "same-origin"


async def test_the_api_is_in_the_openapi_schema() -> None:
    app, _ = make_app()
    async with serve(app) as client:
        paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/tasks/api/tasks" in paths
    assert "/tasks/api/replay" in paths


async def test_schedules_are_listed_paused_resumed_and_triggered() -> None:
    tm = TaskManager(store=MemoryStore())
    app = FastAPI()
    TaskAdmin(app, tm)

    @tm.schedule(every=3600, id="hourly")
    async def hourly() -> None:
        pass

    async with serve(app) as client:
        headers = await csrf(client)
        [item] = (await client.get("/tasks/api/schedules")).json()["items"]
        assert item["id"] == "hourly"
        assert item["every"] == 3600
        assert item["paused"] is False
        paused = await client.post("/tasks/api/schedules/hourly/pause", headers=headers)
        assert paused.status_code == 200
        [item] = (await client.get("/tasks/api/schedules")).json()["items"]
        assert item["paused"] is True
        await client.post("/tasks/api/schedules/hourly/resume", headers=headers)
        fired = (await client.post("/tasks/api/schedules/hourly/trigger", headers=headers)).json()
        record = await tm.wait(fired["task_id"], timeout=10)
        assert record.schedule_id == "hourly"
        missing = await client.post("/tasks/api/schedules/nope/pause", headers=headers)
        assert missing.status_code == 404


async def test_bulk_replay_by_creation_window() -> None:
    app, tm = make_app()
    async with serve(app) as client:
        [failed_id] = await run_all(tm, [(app.state.fns["explode"], ("x",), {})])
        created = (await client.get(f"/tasks/api/tasks/{failed_id}")).json()["created_at"]
        headers = await csrf(client)
        inside = await client.post(
            "/tasks/api/replay", json={"since": created, "dry_run": True}, headers=headers
        )
        assert [i["task_id"] for i in inside.json()["items"]] == [failed_id]
        before = await client.post(
            "/tasks/api/replay", json={"until": created, "dry_run": True}, headers=headers
        )
        assert before.json()["count"] == 0  # until is exclusive
