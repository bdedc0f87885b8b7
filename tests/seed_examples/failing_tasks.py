# "No task visibility" and "No retries": the failing task functions
# ruff: noqa
# fmt: off
from ._stubs import smtp_client


def send_welcome_email(address: str) -> None:
    raise Exception("SMTP server unavailable")

# This exception goes nowhere visible.
# The response already said "Signed up successfully".
# The user never gets their email and nobody knows.


def send_welcome_email_smtp(address: str) -> None:
    # If this fails on attempt 1, there is no attempt 2.
    smtp_client.send(address, subject="Welcome", body="...")
