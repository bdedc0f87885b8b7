"""Stand-ins for what the article leaves undefined. Each records what it was asked."""

from __future__ import annotations

from typing import Any


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.failures_left = 0

    def _record(self, *args: Any) -> None:
        self.calls.append(args)
        if self.failures_left > 0:
            self.failures_left -= 1
            raise ConnectionError("SMTP server unavailable")


class SMTPClient(Recorder):
    def send(self, address: str, subject: str, body: str) -> None:
        self._record(address, subject, body)


class SMSClient(Recorder):
    def send(self, phone: str, message: str) -> None:
        self._record(phone, message)


class Database(Recorder):
    async def update_rates(self, rates: dict[str, float]) -> None:
        self._record(rates)


smtp_client = SMTPClient()
sms_client = SMSClient()
db = Database()
audit_log: list[tuple[str, str]] = []
digests: list[str] = []
posts: list[tuple[str, Any]] = []


async def fetch_rates() -> dict[str, float]:
    return {"EUR": 0.92}


def create_audit_log(email: str, action: str) -> None:
    audit_log.append((email, action))


def send_digest_email_to_all_subscribers() -> None:
    digests.append("sent")


class _AsyncClient:
    """``httpx.AsyncClient`` for outside hosts: records the post, sends nothing."""

    async def __aenter__(self) -> _AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def post(self, url: str, json: Any = None) -> None:
        posts.append((url, json))


class httpx:  # stands in for the module in the examples
    AsyncClient = _AsyncClient


def reset() -> None:
    for recorder in (smtp_client, sms_client, db):
        recorder.calls.clear()
        recorder.failures_left = 0
    for log in (audit_log, digests, posts):
        log.clear()
