# "Dependency injection"
# ruff: noqa
# fmt: off
from fastapi import BackgroundTasks, FastAPI
from fastapi import Depends

app = FastAPI()

def send_welcome_email(address: str) -> None:
    # Simulate sending an email
    print(f"Sending welcome email to {address}")

class NotificationService:
    def __init__(self, bg: BackgroundTasks):
        self.bg = bg

    def queue_welcome(self, email: str) -> None:
        self.bg.add_task(send_welcome_email, email)

def get_notification_service(bg: BackgroundTasks) -> NotificationService:
    return NotificationService(bg)

@app.post("/signup")
def signup(
    email: str,
    notifications: NotificationService = Depends(get_notification_service),
):
    notifications.queue_welcome(email)
    return {"message": "Signed up successfully"}
