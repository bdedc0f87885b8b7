"""Review of the admin API and dashboard routes as a hostile or careless client uses them:
malformed bodies, a manager that is not running, ``next`` values that leave the prefix."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fastapi import FastAPI

from anytask import MemoryStore, SQLiteStore, TaskAdmin, TaskManager
from fastapi_helpers import BASE, DATA_READS, csrf, serve


@pytest.mark.parametrize("path", ["/tasks/login", "/tasks/logout"])
async def test_a_deeply_nested_json_body_is_a_422_not_a_500(path: str) -> None:
    """json.loads raises RecursionError (not ValueError) for a body nested thousands deep;
    16 KiB is enough for that, and the login form is open to anyone."""
    tm = TaskManager(store=MemoryStore())
    app = FastAPI()
    TaskAdmin(app, tm, auth=("admin", "secret-pass"))
    async with serve(app) as client:
        headers = {**await csrf(client), "content-type": "application/json"}
        for body in (
            b"[" * 8000 + b"]" * 8000,
            b'{"username": ' + b"[" * 7000 + b"]" * 7000 + b"}",
        ):
            response = await client.post(path, content=body, headers=headers)
            assert response.status_code == 422, response.text
            assert response.json()["detail"] == "invalid JSON body"


@pytest.mark.parametrize(
    "next_value",
    [
        "/tasks/../elsewhere",
        "/tasks/dashboard/../../elsewhere",
        "/tasks/%2e%2e/elsewhere",
        "/tasks/.%2E/elsewhere",
        "/tasks/./../elsewhere?x=1",
    ],
)
async def test_next_with_dot_segments_cannot_leave_the_prefix(next_value: str) -> None:
    """A browser resolves "/tasks/../elsewhere" (and its percent-encoded "%2e%2e" form) to
    "/elsewhere": outside the admin, which the ``next`` check promises not to allow."""
    tm = TaskManager(store=MemoryStore())
    app = FastAPI()
    TaskAdmin(app, tm, auth=("admin", "secret-pass"))
    async with serve(app) as client:
        token = (await client.get("/tasks/api/session")).json()["csrf_token"]
        response = await client.post(
            "/tasks/login",
            data={
                "username": "admin",
                "password": "secret-pass",
                "csrf_token": token,
                "next": next_value,
            },
            headers={"origin": BASE},
        )
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/tasks/dashboard"
        # a next that stays inside (also one with ".." in a name) is still followed
        for kept in ("/tasks/dashboard#/dead", "/tasks/dashboard?q=a..b"):
            token = (await client.get("/tasks/api/session")).json()["csrf_token"]
            response = await client.post(
                "/tasks/login",
                data={"username": "admin", "password": "secret-pass", "csrf_token": token},
                params={"next": kept},
                headers={"origin": BASE},
            )
            assert response.headers["location"] == kept


WRITES = [
    ("/tasks/api/tasks/some-id/cancel", None),
    ("/tasks/api/replay", {"ids": ["some-id"], "dry_run": True}),
    ("/tasks/api/replay", {"window": "1h", "dry_run": True}),
]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_manager_that_is_not_running_is_a_503_not_a_500(kind: str, tmp_path: Path) -> None:
    """Before the manager starts or after it stopped (here: manage_lifespan=False and
    nobody runs it), a SQLite store is closed and ``schedules()`` refuses: every route
    answers 503 with the reason, as the event stream and replay already did."""
    store = SQLiteStore(tmp_path / "t.db") if kind == "sqlite" else MemoryStore()
    tm = TaskManager(store=store)
    app = FastAPI()
    TaskAdmin(app, tm, manage_lifespan=False)

    @tm.schedule(every=3600, id="hourly")
    async def hourly() -> None:
        pass

    async with serve(app) as client:
        headers = await csrf(client)
        for path in DATA_READS:
            response = await client.get(path)
            assert response.status_code in (200, 404, 503), (path, response.text)
            if response.status_code == 503:
                assert response.json()["detail"], path
        for path, body in WRITES:
            response = await client.post(path, json=body, headers=headers)
            assert response.status_code in (200, 404, 503), (path, response.text)
        response = await client.get("/tasks/api/schedules")
        assert response.status_code == 503
        assert "running task manager" in response.json()["detail"]
        if kind == "sqlite":
            response = await client.get("/tasks/api/tasks")
            assert response.status_code == 503
            assert "not open" in response.json()["detail"]


@pytest.mark.parametrize(
    "source", [{"origin": "http://["}, {"origin": "http://[::1"}, {"referer": "http://[x/"}]
)
async def test_a_malformed_origin_or_referer_is_a_403_not_a_500(source: dict[str, str]) -> None:
    """urlsplit raises ValueError for an unclosed IPv6 bracket: the CSRF origin check of
    the open login form (and of every POST) turned that into a 500."""
    tm = TaskManager(store=MemoryStore())
    app = FastAPI()
    TaskAdmin(app, tm)  # no auth: the JSON POSTs reach the origin check too
    async with serve(app) as client:
        token = (await csrf(client))["x-csrf-token"]
        posts = [
            ("/tasks/logout", {}),
            ("/tasks/api/replay", {"json": {"ids": ["x"], "dry_run": True}}),
            ("/tasks/api/tasks/x/cancel", {}),
        ]
        for path, body in posts:
            response = await client.post(path, headers={**source, "x-csrf-token": token}, **body)
            assert response.status_code == 403, (path, response.text)
            assert response.json()["detail"] == "cross-origin request refused"
    app = FastAPI()
    TaskAdmin(app, TaskManager(store=MemoryStore()), auth=("admin", "secret-pass"))
    async with serve(app) as client:
        token = (await client.get("/tasks/api/session")).json()["csrf_token"]
        response = await client.post(
            "/tasks/login",
            data={"username": "admin", "password": "secret-pass", "csrf_token": token},
            headers=source,
        )
        assert response.status_code == 403, response.text


@pytest.mark.parametrize(
    "next_value", ["http://[", "//[", "https://[::1/tasks/x", "/tasks/\\ud800"]
)
async def test_a_malformed_next_falls_back_to_the_dashboard(next_value: str) -> None:
    """The password was right, but urlsplit(next) raised ValueError (an unclosed IPv6
    bracket), or quoting the redirect raised UnicodeEncodeError (a lone surrogate, which
    a JSON "\\ud800" escape decodes to): a 500 and no session."""
    tm = TaskManager(store=MemoryStore())
    app = FastAPI()
    TaskAdmin(app, tm, auth=("admin", "secret-pass"))
    async with serve(app) as client:
        token = (await client.get("/tasks/api/session")).json()["csrf_token"]
        body = {
            "username": "admin",
            "password": "secret-pass",
            "csrf_token": token,
            "next": "@NEXT@",
        }
        raw = json.dumps(body).replace("@NEXT@", next_value)  # (the escape kept as sent)
        response = await client.post(
            "/tasks/login",
            content=raw.encode(),
            headers={"origin": BASE, "content-type": "application/json"},
        )
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/tasks/dashboard"
        assert (await client.get("/tasks/api/tasks")).status_code == 200  # signed in


async def test_a_schedule_whose_id_has_a_slash_can_be_paused_resumed_and_triggered() -> None:
    """A schedule id defaults to its task's name, and names like "email/send" are allowed;
    the dashboard sends the id percent-encoded, the server decodes the %2F, and the route
    {schedule_id}/{action} (one segment each) answered 404 "Not Found"."""
    tm = TaskManager(store=MemoryStore())
    app = FastAPI()
    TaskAdmin(app, tm)

    @tm.schedule(every=3600, name="email/send")  # the schedule's id is "email/send"
    async def send() -> None:
        pass

    @tm.schedule(every=3600, id="reports/daily")
    async def daily() -> None:
        pass

    async with serve(app) as client:
        headers = await csrf(client)
        listed = (await client.get("/tasks/api/schedules")).json()["items"]
        assert {s["id"] for s in listed} == {"email/send", "reports/daily"}
        for schedule_id, encoded in (
            ("email/send", "email%2Fsend"),
            ("reports/daily", "reports/daily"),
        ):
            for action in ("pause", "resume", "trigger"):
                response = await client.post(
                    f"/tasks/api/schedules/{encoded}/{action}", headers=headers
                )
                assert response.status_code == 200, (schedule_id, action, response.text)
                assert response.json()["schedule_id"] == schedule_id
            response = await client.post(f"/tasks/api/schedules/{encoded}/delete", headers=headers)
            assert response.status_code == 404
        response = await client.post("/tasks/api/schedules/no/such/pause", headers=headers)
        assert response.status_code == 404
        assert response.json()["detail"] == "no schedule 'no/such'"


_NODE_HARNESS = """
const el = () => ({
  addEventListener() {}, setAttribute() {}, removeAttribute() {}, append() {},
  querySelectorAll() { return []; }, querySelector() { return null; }, replaceChildren() {},
  classList: { remove() {}, toggle() {}, add() {}, contains() { return false; } },
  firstChild: null, dataset: {}, textContent: "", hidden: false,
});
globalThis.document = {
  getElementById: el, querySelector: () => null, documentElement: { dataset: {} },
};
globalThis.location = {
  pathname: "/tasks/dashboard", search: "", hash: "#/tasks", origin: "http://x",
};
globalThis.window = { addEventListener() {}, matchMedia: () => ({ matches: false }) };
globalThis.history = { replaceState() {} };
globalThis.fetch = () => new Promise(() => {});  // the page's start-up waits forever
globalThis.EventSource = class {};
const { parseHash } = await import("./js/app.js");
const out = {};
for (const hash of process.argv.slice(2)) {
  try { out[hash] = parseHash(hash).parts; } catch (err) { out[hash] = "throws " + err.name; }
}
console.log(JSON.stringify(out));
"""


def test_the_dashboard_router_survives_an_address_that_is_not_valid_percent_encoding(
    tmp_path: Path,
) -> None:
    """``#/tasks/%E0`` (a pasted or truncated link): decodeURIComponent threw a URIError in
    the router, outside its try, so the page stayed on "Loading..." and never opened the
    event stream. Runs the dashboard's own module under Node, with the DOM stubbed."""
    import shutil
    import subprocess

    import anytask.fastapi

    node = shutil.which("node")
    if node is None:  # (every machine of this project's kind has Node.js: CI must run this)
        if os.environ.get("CI"):
            pytest.fail("node is not installed")
        pytest.skip("node is not installed")
    static = Path(anytask.fastapi.__file__).parent / "static"
    shutil.copytree(static / "js", tmp_path / "js")
    (tmp_path / "package.json").write_text('{"type": "module"}')
    (tmp_path / "run.mjs").write_text(_NODE_HARNESS)
    hashes = ["#/tasks/%E0", "#/tasks%", "#/tasks/abc%2Fdef", "#/dead"]
    done = subprocess.run(
        [node, "run.mjs", *hashes], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "#/tasks/%E0": ["tasks", "%E0"],  # the detail view then says "No task with id %E0"
        "#/tasks%": ["tasks%"],  # "Not found", with a link back
        "#/tasks/abc%2Fdef": ["tasks", "abc/def"],
        "#/dead": ["dead"],
    }
