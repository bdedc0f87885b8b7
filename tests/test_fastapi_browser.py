"""Dashboard flows in headless Chromium that need a server of their own (a fresh store):
the machinery (uvicorn serving ``tests/browser_app.py``, Playwright, skipping without
chromium) is ``test_browser.py``'s; its module-scoped fixtures, imported here, give this
module its own server and browser."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from test_browser import _sign_in, _watch, browser, server  # noqa: F401 - fixtures


@pytest.mark.parametrize(
    ("window", "where"),
    [("1h", "the last hour"), ("24h", "the last 24 hours"), ("7d", "the last 7 days")],
)
def test_replaying_an_empty_window_says_there_is_nothing_to_replay(
    browser: Any,  # noqa: F811
    server: str,  # noqa: F811
    window: str,
    where: str,
) -> None:
    with httpx.Client(timeout=5) as client:  # this module's server has never failed a task
        assert client.get(server + "/tasks/api/health").json()["counts"].get("failed", 0) == 0
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    try:
        watched = _watch(context.new_page())
        page = watched.page
        _sign_in(page, server, "#/dead")
        page.wait_for_selector("tbody tr")  # the (empty) list has loaded
        page.click(f'button[data-window="{window}"]')
        page.wait_for_selector("dialog#confirm[open]")
        assert page.inner_text("#confirm-body") == (
            f"Nothing to replay: there are no failed or interrupted tasks in {where}"
            " that were not replayed already."
        )
        assert page.is_disabled("#confirm-ok")
        page.click("#confirm-cancel")
        page.wait_for_selector("dialog#confirm", state="hidden")
        toast = page.locator("#toast")
        assert toast.is_hidden(), toast.inner_text()  # no "Replay failed: ..." error
        watched.assert_clean()
    finally:
        context.close()
