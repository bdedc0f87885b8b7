"""TaskAdmin options are checked when the app is built, not when a request breaks; and
two small API contracts: ``status=,`` and the event stream's headers."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI

from anytask import MemoryStore, TaskAdmin, TaskManager
from anytask._errors import ConfigurationError
from fastapi_helpers import BASE, serve


def _admin(**options: Any) -> TaskAdmin:
    return TaskAdmin(FastAPI(), TaskManager(store=MemoryStore()), **options)


@pytest.mark.parametrize("pair", [("admin", ""), ("", ""), ("", "secret")])
def test_auth_tuple_refuses_an_empty_user_or_password_like_the_list_form(
    pair: tuple[str, str],
) -> None:
    with pytest.raises(ConfigurationError) as as_tuple:
        _admin(auth=pair)
    with pytest.raises(ConfigurationError) as as_list:
        _admin(auth=[pair])
    assert str(as_tuple.value) == str(as_list.value)
    assert "non-empty" in str(as_tuple.value)
    assert repr(pair) in str(as_tuple.value)


@pytest.mark.parametrize(
    "ttl", [float("inf"), float("nan"), 0.5, -5, 0, 59, True, "3600", None, timedelta(seconds=1)]
)
def test_session_ttl_must_be_finite_seconds_of_at_least_a_minute(ttl: Any) -> None:
    with pytest.raises(ConfigurationError, match="session_ttl") as info:
        _admin(auth=("admin", "secret"), session_ttl=ttl)
    assert repr(ttl) in str(info.value)


@pytest.mark.parametrize(("ttl", "max_age"), [(timedelta(hours=8), 28800), (60, 60), (90.5, 90)])
async def test_session_ttl_takes_seconds_or_a_timedelta(ttl: Any, max_age: int) -> None:
    app = FastAPI()
    TaskAdmin(app, TaskManager(store=MemoryStore()), auth=("admin", "secret"), session_ttl=ttl)
    async with serve(app) as client:
        session = await client.get("/tasks/api/session")
        assert f"Max-Age={max_age};" in session.headers["set-cookie"]
        login = await client.post(
            "/tasks/login",
            data={
                "username": "admin",
                "password": "secret",
                "csrf_token": session.json()["csrf_token"],
            },
            headers={"origin": BASE},
        )
        assert login.status_code == 303
        assert (await client.get("/tasks/api/tasks")).status_code == 200


async def test_a_status_filter_naming_no_status_is_refused() -> None:
    app = FastAPI()
    tm = TaskManager(store=MemoryStore())
    TaskAdmin(app, tm)

    @tm.task
    def job() -> None:
        pass

    async with serve(app) as client:
        tm.add_task(job)
        await tm.join(timeout=10)
        for value in (",", " , ,"):
            response = await client.get("/tasks/api/tasks", params={"status": value})
            assert response.status_code == 422
            assert "status names no status" in response.json()["detail"]
        everything = await client.get("/tasks/api/tasks", params={"status": ""})
        assert everything.json()["total"] == 1  # empty: no filter, as an empty form field
        lenient = await client.get("/tasks/api/tasks", params={"status": "success,,"})
        assert lenient.json()["total"] == 1


async def test_the_event_stream_sends_one_cache_control_header() -> None:
    app = FastAPI()
    TaskAdmin(app, TaskManager(store=MemoryStore()), sse_ping=0.05, sse_max_age=0.2)
    async with serve(app) as client:
        response = await client.get("/tasks/api/events")
    assert response.status_code == 200
    assert response.headers.get_list("cache-control") == ["no-store"]
    assert response.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("prefix", ["/tâches", "/a;b", "/a b", "/a/../b", "/..", "/", "tasks"])
def test_a_prefix_the_session_cookie_cannot_carry_is_refused(prefix: str) -> None:
    # the cookie's Path is the prefix as written: with a non-ASCII character, a ";" or a
    # space in it, browsers dropped the cookie (or never sent it back): no login held
    with pytest.raises(ConfigurationError, match="prefix"):
        _admin(prefix=prefix)


@pytest.mark.parametrize("prefix", ["/tasks", "/admin/tasks", "/ops-1/jobs_v2.x~"])
def test_plain_prefixes_are_accepted(prefix: str) -> None:
    assert _admin(prefix=prefix).prefix == prefix


@pytest.mark.parametrize(
    "origins", ["https://admin.example.com", ["https://x/path"], ["admin.example.com"], [5]]
)
def test_trusted_origins_that_could_never_match_are_refused(origins: Any) -> None:
    # a plain string became a set of single characters: every cross-origin POST refused
    with pytest.raises(ConfigurationError, match="trusted_origins"):
        _admin(trusted_origins=origins)


def test_trusted_origins_keep_scheme_host_and_port() -> None:
    admin = _admin(trusted_origins=["https://a.example.com/", "http://127.0.0.1:8080"])
    assert admin.trusted_origins == {"https://a.example.com", "http://127.0.0.1:8080"}
