# "If you prefer explicit dependency injection"
# ruff: noqa
# fmt: off
from fastapi import FastAPI
from anytask import TaskAdmin, TaskManager

from ._stubs import smtp_client

task_manager = TaskManager(snapshot_db="tasks.db")
app = FastAPI()

TaskAdmin(app, task_manager)

@task_manager.task(retries=3, delay=1.0, backoff=2.0)
def send_welcome_email(address: str) -> None:
    smtp_client.send(address, subject="Welcome", body="...")

from fastapi import Depends

@app.post("/signup")
def signup(email: str, tasks=Depends(task_manager.get_tasks)):
    task_id = tasks.add_task(send_welcome_email, address=email)
    return {"task_id": task_id}
