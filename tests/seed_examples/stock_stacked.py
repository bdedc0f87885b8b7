# "You can stack multiple tasks in the same request"
# ruff: noqa
# fmt: off
from fastapi import BackgroundTasks, FastAPI

from ._stubs import create_audit_log

app = FastAPI()

def send_welcome_email(address: str) -> None:
    # Simulate sending an email
    print(f"Sending welcome email to {address}")

@app.post("/signup")
def signup(email: str, background_tasks: BackgroundTasks):
    background_tasks.add_task(send_welcome_email, email)
    background_tasks.add_task(create_audit_log, email, action="signup")
    return {"message": "Signed up successfully"}
