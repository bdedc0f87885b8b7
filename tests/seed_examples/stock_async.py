# "Async support" (the Slack webhook is a local stub)
# ruff: noqa
# fmt: off
from fastapi import BackgroundTasks, FastAPI

from ._stubs import httpx

app = FastAPI()

async def notify_slack(message: str) -> None:
    async with httpx.AsyncClient() as client:
        await client.post("https://hooks.slack.com/...", json={"text": message})

@app.post("/deploy")
async def deploy(background_tasks: BackgroundTasks):
    background_tasks.add_task(notify_slack, "Deployment started")
    return {"status": "deploying"}
