"""One app under ``uvicorn --workers 2`` on one SQLite file: what docs/fastapi.md
("Several worker processes") says of it, checked with real worker processes on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from servers import running_server

pytestmark = pytest.mark.slow

LEASE = 2.0


def _owners(db: Path) -> dict[str, tuple[str, str | None]]:
    """Task id -> (status, owner), read from the file as another process would."""
    conn = sqlite3.connect(db, timeout=10)
    try:
        rows = conn.execute("SELECT id, status, owner FROM anytask_tasks").fetchall()
    finally:
        conn.close()
    return {task_id: (status, owner) for task_id, status, owner in rows}


def _wait(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def _one_client_per_worker(base: str) -> list[tuple[httpx.Client, dict[str, object]]]:
    """Two keep-alive clients whose connections two different workers serve."""
    found: dict[int, tuple[httpx.Client, dict[str, object]]] = {}
    for _ in range(100):
        client = httpx.Client(base_url=base, timeout=10, headers={"Origin": base})
        me = client.get("/whoami").json()
        if me["pid"] in found:
            client.close()
        else:
            found[me["pid"]] = (client, me)
        if len(found) == 2:
            return list(found.values())
    for client, _ in found.values():
        client.close()
    pytest.fail("the connections all went to one worker")


def test_two_uvicorn_workers_share_sessions_tasks_and_recovery(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    env = {
        "ANYTASK_TEST_DB": str(db),
        "ANYTASK_TEST_AUTH": "admin:pw",
        "ANYTASK_TEST_SECRET": "a-secret-of-at-least-16-characters",
        "ANYTASK_TEST_LEASE": str(LEASE),
    }
    with running_server("uvicorn", env, workers=2) as (base, proc):
        (a, me_a), (b, me_b) = _one_client_per_worker(base)
        try:
            # a login made on one worker is a login on the other (the shared secret)
            token = a.get("/tasks/api/session").json()["csrf_token"]
            form = {"username": "admin", "password": "pw", "csrf_token": token}
            assert a.post("/tasks/login", data=form).status_code == 303
            b.cookies.set("anytask_session", a.cookies["anytask_session"], path="/tasks")
            session_b = b.get("/tasks/api/session").json()
            assert session_b["user"] == "admin"
            csrf = {"X-CSRF-Token": session_b["csrf_token"]}

            # long tasks queued through both workers; a delayed one stays pending
            ids = [
                client.post("/enqueue", params={"n": i, "pause": 60}).json()["task_id"]
                for i in range(4)
                for client in (a, b)
            ]
            later = a.post("/enqueue", params={"n": 99, "delay": 600}).json()["task_id"]
            assert _wait(lambda: all(_owners(db)[i][0] == "running" for i in ids), 20)
            owners = {i: _owners(db)[i][1] for i in ids}
            victim, survivor = (me_a, me_b)
            if not any(o == victim["instance_id"] for o in owners.values()):
                victim, survivor = survivor, victim
            lost = [i for i, o in owners.items() if o == victim["instance_id"]]
            kept = [i for i, o in owners.items() if o != victim["instance_id"]]

            # SIGKILL one worker: uvicorn starts another; the dead one's tasks are
            # recovered once their leases run out, the live one's are left alone
            os.kill(int(str(victim["pid"])), signal.SIGKILL)
            killed_at = time.monotonic()
            assert _wait(lambda: all(_owners(db)[i][0] == "interrupted" for i in lost), 20)
            assert time.monotonic() - killed_at < 4 * LEASE + 5
            time.sleep(LEASE)  # the new worker has started and heartbeats have gone by
            now = _owners(db)
            assert all(now[i] == ("running", survivor["instance_id"]) for i in kept), now

            # cancelled through the worker uvicorn started in place of the dead one (the
            # session still holds there), for tasks the survivor runs
            cookie = a.cookies["anytask_session"]
            pair = _one_client_per_worker(base)
            try:
                c, me_c = next(p for p in pair if p[1]["pid"] != survivor["pid"])
                assert me_c["pid"] != victim["pid"]
                c.cookies.set("anytask_session", cookie, path="/tasks")
                for task_id in kept:
                    response = c.post(f"/tasks/api/tasks/{task_id}/cancel", headers=csrf)
                    assert response.status_code == 200, response.text
            finally:
                for client, _ in pair:
                    client.close()
            assert _wait(lambda: all(_owners(db)[i][0] == "cancelled" for i in kept), 20)
        finally:
            a.close()
            b.close()

        # a graceful stop of the server leaves nothing running, and keeps what is pending
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    final = _owners(db)
    assert not [i for i, (status, _) in final.items() if status == "running"], final
    assert final[later][0] == "pending"
