"""The demo app: a page with buttons, example tasks on SQLite, the dashboard behind a
login."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import anyio
import httpx
import pytest

from anytask.demo import create_app
from fastapi_helpers import BASE, serve


async def test_the_demo_page_queues_every_kind_of_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(str(tmp_path / "demo.db"), shutdown_grace=0.1)
    assert "'admin' / 'admin'" in capsys.readouterr().out
    tm = app.state.task_manager
    async with serve(app) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert 'href="tasks/dashboard"' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for kind in ("flaky", "fail", "slow", "priority", "log"):
            response = await client.post(f"/demo/{kind}")
            assert response.status_code == 200, kind
            assert tm.store.get(response.json()["task_id"]) is not None
        burst = (await client.post("/demo/burst")).json()["task_ids"]
        assert len(burst) == 25
        assert (await client.post("/demo/nope")).status_code == 404
        assert (await client.get("/tasks/api/tasks")).status_code == 401  # login needed
    assert (tmp_path / "demo.db").exists()


async def finished(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    with anyio.fail_after(10):
        while True:
            detail: dict[str, Any] = (await client.get(f"/tasks/api/tasks/{task_id}")).json()
            if detail["status"] not in ("pending", "running"):
                return detail
            await anyio.sleep(0.05)


async def test_the_demo_tasks_behave_as_described(tmp_path: Path) -> None:
    app = create_app(str(tmp_path / "demo.db"), auth=None, shutdown_grace=0.1)
    async with serve(app) as client:
        log = await finished(client, (await client.post("/demo/log")).json()["task_id"])
        assert log["status"] == "success"
        assert log["logs"][-1]["msg"] == "done"
        failed = await finished(client, (await client.post("/demo/fail")).json()["task_id"])
        assert failed["status"] == "failed"
        assert failed["retries_used"] == 1
        otp = await finished(client, (await client.post("/demo/priority")).json()["task_id"])
        assert otp["priority"] == 9
        schedules = (await client.get("/tasks/api/schedules")).json()["items"]
        assert [s["id"] for s in schedules] == ["refresh_rates"]


async def test_the_demo_page_works_below_a_root_path(tmp_path: Path) -> None:
    # served with --root-path /shop: every URL the page and its script use resolves
    # below /shop (a proxy that forwards /shop/* would never deliver /tasks/...)
    app = create_app(str(tmp_path / "demo.db"), shutdown_grace=0.1)
    async with serve(app, root_path="/shop") as client:
        page_url = f"{BASE}/shop/"
        bare = await client.get(f"{BASE}/shop")  # relative URLs need the trailing slash
        assert (bare.status_code, bare.headers["location"]) == (307, page_url)
        page = await client.get(page_url)
        assert page.status_code == 200
        refs = re.findall(r'(?:href|src)="([^"]+)"', page.text)
        script = await client.get(urljoin(page_url, "tasks/static/demo.js"))
        assert script.status_code == 200
        refs += re.findall(r'fetch\("([^"]+)"', script.text)
        refs += re.findall(r'link\.href = "([^"#]+)', script.text)
        resolved = [urljoin(page_url, ref) for ref in refs if not ref.startswith("data:")]
        assert len(resolved) == 5, refs
        assert all(urlsplit(url).path.startswith("/shop/") for url in resolved), resolved
        css, js, dashboard, post, link = resolved
        assert (await client.get(css)).status_code == 200
        assert (await client.get(js)).status_code == 200
        for url in (dashboard, link):
            login = await client.get(url)
            assert login.status_code == 303
            assert login.headers["location"].startswith("/shop/tasks/")
        queued = await client.post(post + "flaky")
        assert queued.status_code == 200
        assert app.state.task_manager.store.get(queued.json()["task_id"]) is not None
