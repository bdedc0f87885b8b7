"""Acknowledged means durable over HTTP: once a response carrying a task id has been
read, the task is in the store, even if the server is SIGKILLed that very moment."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from servers import KINDS, running_server, signal_group

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", KINDS)
def test_tasks_acknowledged_before_a_sigkill_are_there_after_restart(
    kind: str, tmp_path: Path
) -> None:
    env = {"ANYTASK_TEST_DB": str(tmp_path / "tasks.db")}
    delayed: list[str] = []
    immediate: list[str] = []
    with running_server(kind, env) as (base, proc), httpx.Client(base_url=base) as client:
        for i in range(10):
            path = "/enqueue" if i % 2 else "/enqueue-sync"
            delayed.append(client.post(path, params={"n": i, "delay": 600}).json()["task_id"])
            immediate.append(client.post(path, params={"n": i}).json()["task_id"])
        # right after reading the last response: the server and its worker processes die
        signal_group(proc, signal.SIGKILL)
        proc.wait()
    with running_server(kind, env) as (base, _), httpx.Client(base_url=base) as client:
        for task_id in delayed:
            response = client.get(f"/tasks/api/tasks/{task_id}")
            assert response.status_code == 200, task_id
            assert response.json()["status"] == "pending"
        for task_id in immediate:
            response = client.get(f"/tasks/api/tasks/{task_id}")
            assert response.status_code == 200, task_id
            assert response.json()["status"] in ("pending", "running", "success")
