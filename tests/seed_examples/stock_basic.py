# "Background tasks in FastAPI" (no anytask import: plain FastAPI)
# ruff: noqa
# fmt: off
from fastapi import BackgroundTasks, FastAPI

app = FastAPI()

def send_welcome_email(address: str) -> None:
    # Simulate sending an email
    print(f"Sending welcome email to {address}")

@app.post("/signup")
def signup(email: str, background_tasks: BackgroundTasks):
    background_tasks.add_task(send_welcome_email, email)
    return {"message": "Signed up successfully"}
