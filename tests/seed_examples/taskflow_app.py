# "fastapi-taskflow": setup, tasks, routes, visibility, priority, schedules, requeue.
# ruff: noqa
# fmt: off
# Changed: the import line (fastapi_taskflow -> anytask) and the stub imports.
from fastapi import FastAPI
from anytask import TaskAdmin, TaskManager

from ._stubs import db, fetch_rates, httpx, send_digest_email_to_all_subscribers
from ._stubs import sms_client, smtp_client

task_manager = TaskManager(snapshot_db="tasks.db")
app = FastAPI()

TaskAdmin(app, task_manager)

@task_manager.task(retries=3, delay=1.0, backoff=2.0)
def send_welcome_email(address: str) -> None:
    smtp_client.send(address, subject="Welcome", body="...")

@task_manager.task(retries=2, delay=0.5)
async def process_webhook(payload: dict) -> None:
    async with httpx.AsyncClient() as client:
        await client.post("/internal/webhook", json=payload)

from fastapi import BackgroundTasks

@app.post("/signup")
def signup(email: str, background_tasks: BackgroundTasks):
    task_id = background_tasks.add_task(send_welcome_email, address=email)
    return {"task_id": task_id}

from fastapi import HTTPException  # used by the article's status route

@app.get("/tasks/{task_id}/status")
def task_status(task_id: str):
    record = task_manager.store.get(task_id)
    if record is None:
        raise HTTPException(status_code=404)
    return {"status": record.status.value, "error": record.error}

@task_manager.task(retries=2, priority=9)
def send_otp(phone: str) -> None:
    sms_client.send(phone, "Your OTP is 847291")

@task_manager.task(retries=1, priority=1)
def generate_monthly_report(month: int) -> None:
    ...

@task_manager.schedule(every=300)  # every 5 minutes
async def sync_exchange_rates() -> None:
    rates = await fetch_rates()
    await db.update_rates(rates)

@task_manager.schedule(cron="0 9 * * 1-5", timezone="America/New_York")
def send_daily_digest() -> None:
    send_digest_email_to_all_subscribers()

@task_manager.task(retries=1, requeue_on_interrupt=True)
def sync_user_profile(user_id: int) -> None:
    ...


# Not in the article as a route: it shows the per-call priority line in a route.
from fastapi import Depends

@app.post("/report")
def report(tasks=Depends(task_manager.get_tasks)):
    task_id = tasks.add_task(generate_monthly_report, month=3, priority=8)
    return {"task_id": task_id}

@app.post("/webhook")
async def webhook(payload: dict, background_tasks: BackgroundTasks):
    return {"task_id": background_tasks.add_task(process_webhook, payload)}
