"""With auth set, every admin route needs a session; POSTs need a CSRF token and a
same-origin Origin; logins are throttled and take the same time for unknown users."""

from __future__ import annotations

import statistics
import time
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request

from anytask import MemoryStore, TaskAdmin, TaskManager
from fastapi_helpers import BASE, DATA_READS, csrf, lifespan

SECRET = "0123456789abcdef-test-secret"


def make_app(**options: Any) -> tuple[FastAPI, TaskManager]:
    tm = TaskManager(store=MemoryStore())
    app = FastAPI()
    options.setdefault("auth", ("admin", "secret"))
    TaskAdmin(app, tm, secret=SECRET, **options)

    @tm.task(name="job")
    async def job() -> None:
        pass

    app.state.job = job
    return app, tm


def client_for(app: FastAPI, ip: str = "10.0.0.1", base: str = BASE) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url=base)


async def login(
    client: httpx.AsyncClient, user: str, password: str, **extra: str
) -> httpx.Response:
    token = (await client.get("/tasks/api/session")).json()["csrf_token"]
    return await client.post(
        "/tasks/login",
        data={"username": user, "password": password, "csrf_token": token, **extra},
        headers={"origin": BASE, "accept": "application/json"},
    )


GET_API = [*DATA_READS, "/tasks/api/events"]
POSTS = [
    "/tasks/api/tasks/some-id/cancel",
    "/tasks/api/tasks/some-id/replay",
    "/tasks/api/replay",
    "/tasks/api/schedules/s/pause",
]


async def test_every_api_and_sse_route_needs_a_session() -> None:
    app, _ = make_app()
    async with lifespan(app), client_for(app) as client:
        for path in GET_API:
            response = await client.get(path)
            assert response.status_code == 401, path
            assert response.json() == {"detail": "authentication required"}
        headers = await csrf(client)
        for path in POSTS:
            assert (await client.post(path, json={}, headers=headers)).status_code == 401, path


async def test_html_pages_redirect_to_the_login_form() -> None:
    app, _ = make_app()
    async with lifespan(app), client_for(app) as client:
        response = await client.get("/tasks/dashboard", params={"x": "1"})
        assert response.status_code == 303
        assert response.headers["location"] == "/tasks/login?next=/tasks/dashboard%3Fx%3D1"
        page = await client.get("/tasks/login")
        assert page.status_code == 200
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


async def test_login_sets_a_strict_http_only_cookie_and_opens_the_api() -> None:
    app, _ = make_app()
    async with lifespan(app), client_for(app) as client:
        response = await login(client, "admin", "secret", next="/tasks/dashboard#/dead")
        assert response.status_code == 303
        assert response.headers["location"] == "/tasks/dashboard#/dead"
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert "path=/tasks" in cookie
        assert "secure" not in cookie
        assert (await client.get("/tasks/api/tasks")).status_code == 200
        dashboard = await client.get("/tasks/dashboard")
        assert dashboard.status_code == 200
        assert "script-src 'self'" in dashboard.headers["content-security-policy"]
        assert (await client.get("/tasks/api/session")).json()["user"] == "admin"


async def test_the_cookie_is_secure_over_https() -> None:
    app, _ = make_app()
    base = "https://testserver"
    async with lifespan(app), client_for(app, base=base) as client:
        token = (await client.get("/tasks/api/session")).json()["csrf_token"]
        response = await client.post(
            "/tasks/login",
            data={"username": "admin", "password": "secret", "csrf_token": token},
            headers={"origin": base},
        )
        assert response.status_code == 303
        assert "secure" in response.headers["set-cookie"].lower()


async def test_login_never_redirects_off_site() -> None:
    app, _ = make_app()
    async with lifespan(app), client_for(app) as client:
        response = await login(client, "admin", "secret", next="https://evil.example/x")
        assert response.headers["location"] == "/tasks/dashboard"


async def test_posts_need_a_csrf_token_and_the_same_origin() -> None:
    app, tm = make_app()
    async with lifespan(app), client_for(app) as client:
        await login(client, "admin", "secret")
        task_id = await tm.enqueue(app.state.job, delay=3600)
        url = f"/tasks/api/tasks/{task_id}/cancel"
        good = await csrf(client)
        no_token = await client.post(url, headers={"origin": BASE})
        assert no_token.status_code == 403
        wrong_token = await client.post(url, headers={**good, "x-csrf-token": "0" * 64})
        assert wrong_token.status_code == 403
        foreign = await client.post(url, headers={**good, "origin": "https://evil.example"})
        assert foreign.status_code == 403
        no_origin = await client.post(url, headers={"x-csrf-token": good["x-csrf-token"]})
        assert no_origin.status_code == 403
        assert tm.store.get(task_id).status.value == "pending"
        assert (await client.post(url, headers=good)).status_code == 200


async def test_login_needs_a_csrf_token() -> None:
    app, _ = make_app()
    async with lifespan(app), client_for(app) as client:
        response = await client.post(
            "/tasks/login",
            data={"username": "admin", "password": "secret"},
            headers={"origin": BASE},
        )
        assert response.status_code == 403


async def test_logout_is_a_csrf_protected_post() -> None:
    app, _ = make_app()
    async with lifespan(app), client_for(app) as client:
        await login(client, "admin", "secret")
        assert (await client.get("/tasks/logout")).status_code != 303  # GET never logs out
        assert (await client.get("/tasks/api/tasks")).status_code == 200
        assert (await client.post("/tasks/logout", headers={"origin": BASE})).status_code == 403
        response = await client.post("/tasks/logout", headers=await csrf(client))
        assert response.status_code == 303
        assert response.headers["location"] == "/tasks/login"
        assert (await client.get("/tasks/api/tasks")).status_code == 401


async def test_failed_logins_are_throttled_per_ip_and_per_user() -> None:
    app, _ = make_app()
    async with lifespan(app):
        async with client_for(app, ip="10.0.0.1") as client:
            for _ in range(5):
                assert (await login(client, "admin", "wrong")).status_code == 401
            throttled = await login(client, "admin", "secret")  # even the right password
            assert throttled.status_code == 429
            assert 1 <= int(throttled.headers["retry-after"]) <= 60
            other_user = await login(client, "someone", "x")
            assert other_user.status_code == 429  # same IP
        async with client_for(app, ip="10.0.0.2") as client:
            assert (await login(client, "admin", "secret")).status_code == 429  # same user
            assert (await login(client, "ops", "x")).status_code == 401  # new IP and user


async def test_sessions_survive_a_restart_with_the_same_secret() -> None:
    app, _ = make_app()
    async with lifespan(app), client_for(app) as client:
        await login(client, "admin", "secret")
        cookies = client.cookies
    again, _ = make_app()  # a new process or another instance with the same secret
    async with lifespan(again), client_for(again) as client:
        client.cookies = cookies
        assert (await client.get("/tasks/api/tasks")).status_code == 200


async def test_a_forged_cookie_is_refused() -> None:
    app, _ = make_app()
    tm2 = TaskManager(store=MemoryStore())
    forger = FastAPI()
    TaskAdmin(forger, tm2, auth=("admin", "secret"), secret="another-secret-0123456789")
    async with lifespan(forger), client_for(forger) as client:
        await login(client, "admin", "secret")
        cookies = client.cookies
    async with lifespan(app), client_for(app) as client:
        client.cookies = cookies
        assert (await client.get("/tasks/api/tasks")).status_code == 401


async def test_a_callable_decides_who_is_signed_in() -> None:
    async def by_header(request: Request) -> str | None:
        if request.headers.get("x-api-key") == "k3y":
            return "robot"
        if request.headers.get("x-api-key") == "basic":
            raise HTTPException(401, "use basic auth", headers={"www-authenticate": "Basic"})
        return None

    app, _ = make_app(auth=by_header)
    async with lifespan(app), client_for(app) as client:
        assert (await client.get("/tasks/api/tasks")).status_code == 401
        assert (await client.get("/tasks/dashboard")).status_code == 401
        ok = await client.get("/tasks/api/tasks", headers={"x-api-key": "k3y"})
        assert ok.status_code == 200
        session = await client.get("/tasks/api/session", headers={"x-api-key": "k3y"})
        assert session.json()["user"] == "robot"
        basic = await client.get("/tasks/api/tasks", headers={"x-api-key": "basic"})
        assert basic.headers["www-authenticate"] == "Basic"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_wrong_password_takes_as_long_for_unknown_users() -> None:
    users = [(f"user{i}", f"password-{i}") for i in range(50)]
    app, _ = make_app(auth=users, login_attempts=10_000)
    known: list[float] = []
    unknown: list[float] = []
    async with lifespan(app), client_for(app) as client:
        token = (await client.get("/tasks/api/session")).json()["csrf_token"]

        async def attempt(user: str) -> float:
            start = time.perf_counter()
            response = await client.post(
                "/tasks/login",
                data={"username": user, "password": "not-it", "csrf_token": token},
                headers={"origin": BASE, "accept": "application/json"},
            )
            assert response.status_code == 401
            return time.perf_counter() - start

        for i in range(30):  # interleaved, so drift affects both alike
            known.append(await attempt(f"user{i}"))
            unknown.append(await attempt(f"nobody{i}"))
    a, b = statistics.median(known), statistics.median(unknown)
    assert abs(a - b) < max(0.5 * min(a, b), 0.002), (a, b)


def test_a_full_throttle_table_never_forgets_a_locked_out_key() -> None:
    from anytask.fastapi._auth import Throttle

    throttle = Throttle(limit=2, window=60, max_keys=10)
    throttle.failed("user:admin")
    throttle.failed("user:admin")
    assert throttle.retry_after("user:admin") is not None
    for i in range(100):  # junk keys from many addresses fill the table
        throttle.failed(f"ip:10.0.{i}.1")
    assert throttle.retry_after("user:admin") is not None
    assert len(throttle._failures) <= 11


async def test_an_oversized_login_body_is_refused_before_it_is_read() -> None:
    app, _ = make_app()
    async with lifespan(app), client_for(app) as client:
        declared = await client.post(
            "/tasks/login",
            content=b"x" * 20_000,
            headers={"origin": BASE, "content-type": "application/x-www-form-urlencoded"},
        )
        assert declared.status_code == 413
        # no Content-Length (chunked): the server stops reading once the limit is passed
        chunks_read = 0
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            nonlocal chunks_read
            chunks_read += 1
            return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/tasks/login",
            "raw_path": b"/tasks/login",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"testserver"),
                (b"origin", BASE.encode()),
                (b"content-type", b"application/x-www-form-urlencoded"),
            ],
            "client": ("10.0.0.9", 40000),
            "server": ("testserver", 80),
            "state": {},
        }
        with anyio.fail_after(10):  # reading the whole endless body would hang here
            await app(scope, receive, send)
    assert sent[0]["status"] == 413
    assert chunks_read == 1  # one 64 KiB chunk is over the limit: nothing more is read


async def test_out_of_range_query_values_are_422_not_500() -> None:
    app, _ = make_app(auth=None)
    async with lifespan(app), client_for(app) as client:
        for url in (
            "/tasks/api/tasks?cursor=9223372036854775808",
            "/tasks/api/dead-letters?cursor=9223372036854775808",
            "/tasks/api/metrics?window=1e-300",
        ):
            assert (await client.get(url)).status_code == 422, url
