# "Concurrency limits", "Persistence and requeue", "To protect the dashboard with a login"
# ruff: noqa
# fmt: off
from fastapi import FastAPI
from anytask import TaskAdmin, TaskManager

task_manager = TaskManager(
    snapshot_db="tasks.db",
    max_concurrency=10,
)

task_manager = TaskManager(
    snapshot_db="tasks.db",
    requeue_pending=True,
)

app = FastAPI()

TaskAdmin(app, task_manager, auth=("admin", "secret"))
