"""The admin below an ASGI ``root_path``: served with ``--root-path /admin`` (httpx's
ASGITransport passes ``root_path`` the same way), or mounted inside another app. Cookie
path, redirects, ``next`` and the security headers all use the path the browser sees."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount

from anytask import MemoryStore, TaskAdmin, TaskManager
from fastapi_helpers import BASE, lifespan, serve


def fastapi_app() -> Any:
    app = FastAPI()
    TaskAdmin(app, TaskManager(store=MemoryStore()), auth=("admin", "secret"))
    return app


def starlette_app() -> Any:
    """Plain Starlette: the admin is itself a sub-app mounted at the prefix."""
    app = Starlette()
    TaskAdmin(app, TaskManager(store=MemoryStore()), auth=("admin", "secret"))
    return app


def mounted_in_fastapi() -> Any:
    inner = fastapi_app()
    outer = FastAPI(lifespan=lambda _app: inner.router.lifespan_context(inner))
    outer.mount("/admin", inner)
    return outer


def mounted_in_starlette() -> Any:
    inner = starlette_app()
    return Starlette(
        routes=[Mount("/admin", app=inner)],
        lifespan=lambda _app: inner.router.lifespan_context(inner),
    )


@asynccontextmanager
async def via_root_path(make: Callable[[], Any]) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(make(), root_path="/admin") as client:
        yield client


@asynccontextmanager
async def via_mount(make: Callable[[], Any]) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(make()) as client:
        yield client


SETUPS = [
    pytest.param(via_root_path, fastapi_app, id="root_path-fastapi"),
    pytest.param(via_root_path, starlette_app, id="root_path-starlette"),
    pytest.param(via_mount, mounted_in_fastapi, id="mounted-in-fastapi"),
    pytest.param(via_mount, mounted_in_starlette, id="mounted-in-starlette"),
]


def _assert_admin_headers(response: httpx.Response, html: bool = False) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "same-origin"
    if html:
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    else:
        assert response.headers.get_list("cache-control") == ["no-store"]


@pytest.mark.parametrize(("setup", "make"), SETUPS)
async def test_login_and_the_dashboard_work_below_a_root_path(setup: Any, make: Any) -> None:
    async with setup(make) as client:
        anonymous = await client.get("/admin/tasks/dashboard")
        assert anonymous.status_code == 303
        assert anonymous.headers["location"] == ("/admin/tasks/login?next=/admin/tasks/dashboard")
        # the bare prefix (a Starlette mount first adds the slash) leads to the dashboard
        bare = await client.get("/admin/tasks")
        if bare.headers["location"] == f"{BASE}/admin/tasks/":
            bare = await client.get("/admin/tasks/")
        assert bare.headers["location"] == "/admin/tasks/dashboard"

        session = await client.get("/admin/tasks/api/session")
        assert "Path=/admin/tasks;" in session.headers["set-cookie"]
        _assert_admin_headers(session)

        login = await client.post(
            "/admin/tasks/login",
            data={
                "username": "admin",
                "password": "secret",
                "csrf_token": session.json()["csrf_token"],
                "next": "/admin/tasks/dashboard#/dead",
            },
            headers={"origin": BASE},
        )
        assert login.status_code == 303, login.text  # the CSRF check passed
        assert login.headers["location"] == "/admin/tasks/dashboard#/dead"
        assert "Path=/admin/tasks;" in login.headers["set-cookie"]

        me = (await client.get("/admin/tasks/api/session")).json()
        assert me["user"] == "admin"
        listing = await client.get("/admin/tasks/api/tasks")
        assert listing.status_code == 200
        _assert_admin_headers(listing)
        dashboard = await client.get("/admin/tasks/dashboard")
        assert dashboard.status_code == 200
        _assert_admin_headers(dashboard, html=True)
        css = await client.get("/admin/tasks/static/app.css")
        assert css.status_code == 200
        assert css.headers["x-content-type-options"] == "nosniff"

        logout = await client.post(
            "/admin/tasks/logout", headers={"origin": BASE, "x-csrf-token": me["csrf_token"]}
        )
        assert logout.headers["location"] == "/admin/tasks/login"
        assert "Path=/admin/tasks;" in logout.headers["set-cookie"]
        assert (await client.get("/admin/tasks/api/tasks")).status_code == 401


@pytest.mark.parametrize(("setup", "make"), SETUPS)
async def test_next_must_stay_below_the_root_path(setup: Any, make: Any) -> None:
    async with setup(make) as client:
        token = (await client.get("/admin/tasks/api/session")).json()["csrf_token"]
        login = await client.post(
            "/admin/tasks/login",
            data={"username": "admin", "password": "secret", "csrf_token": token},
            params={"next": "/tasks/dashboard"},  # the bare prefix is outside the mount
            headers={"origin": BASE},
        )
        assert login.headers["location"] == "/admin/tasks/dashboard"


async def test_a_server_that_leaves_the_root_out_of_the_path() -> None:
    """Older servers (and a proxy stripping the prefix before FastAPI(root_path=...))
    send ``path`` without the root path; the browser still sees ``/admin/...``. (Starlette
    routes such requests at the top level only, so a Starlette mount is not tried.)"""
    app = fastapi_app()
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app, root_path="/admin")
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            dashboard = await client.get("/tasks/dashboard")
            assert dashboard.headers["location"] == (
                "/admin/tasks/login?next=/admin/tasks/dashboard"
            )
            assert (await client.get("/tasks")).headers["location"] == "/admin/tasks/dashboard"
            session = await client.get("/tasks/api/session")
            assert "Path=/admin/tasks;" in session.headers["set-cookie"]
            _assert_admin_headers(session)


async def test_an_app_route_that_only_starts_like_the_prefix_gets_no_admin_headers() -> None:
    app = FastAPI()
    TaskAdmin(app, TaskManager(store=MemoryStore()))

    @app.get("/tasksearch")
    def tasksearch() -> dict[str, str]:
        return {"ok": "yes"}

    async with serve(app, root_path="/admin") as client:
        response = await client.get("/admin/tasksearch")
        assert response.status_code == 200
        assert "x-frame-options" not in response.headers
