# "Comparing the two approaches": With fastapi-taskflow (now anytask)
# ruff: noqa
# fmt: off
from fastapi import BackgroundTasks, FastAPI
from anytask import TaskAdmin, TaskManager

task_manager = TaskManager(snapshot_db="tasks.db")
app = FastAPI()
TaskAdmin(app, task_manager)

def send_welcome_email(address: str) -> None:
    # Simulate sending an email
    print(f"Sending welcome email to {address}")

@app.post("/signup")
def signup(email: str, background_tasks: BackgroundTasks):
    task_id = background_tasks.add_task(send_welcome_email, address=email)
    return {"task_id": task_id}
