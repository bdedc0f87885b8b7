"""The dashboard in a real browser: headless Chromium (Debian's ``/usr/bin/chromium``)
driven by Playwright against a real uvicorn server running ``tests/browser_app.py``.

One server and one browser serve the whole module; each test has its own browser context
(signed in, except for the login test) and its own tasks. Without chromium or Playwright
the tests are skipped locally, and fail when ``CI`` is set. Screenshots go to
``artifacts/`` (``ANYTASK_ARTIFACTS`` overrides).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

TESTS_DIR = Path(__file__).parent
XSS = "<img src=x onerror=alert(1)>"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]
WAIT_MS = 10_000  # every wait in the browser is bounded by this (or says otherwise)


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (required when CI is set)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "uvicorn", "browser_app:app", "--app-dir", str(TESTS_DIR)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    # a dashboard left open keeps an event stream going: bound uvicorn's graceful wait
    command += ["--timeout-graceful-shutdown", "3"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        with httpx.Client(timeout=2) as client:
            while True:
                try:
                    if client.get(base + "/tasks/api/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, "the uvicorn server exited early"
                assert time.monotonic() < deadline, "the uvicorn server did not start in 20 s"
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything the server left behind
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = os.environ.get("ANYTASK_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        _missing("chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install playwright; no browser download)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Watched:
    """A page plus what went wrong on it: alerts, script errors, console errors (a CSP
    violation is a console error)."""

    page: Any
    alerts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert self.alerts == [], self.alerts
        assert self.problems == [], self.problems


def _watch(page: Any) -> Watched:
    watched = Watched(page)
    page.set_default_timeout(WAIT_MS)

    def on_dialog(dialog: Any) -> None:
        watched.alerts.append(dialog.message)
        dialog.dismiss()

    def on_console(message: Any) -> None:
        if message.type == "error":
            watched.problems.append(f"console: {message.text}")

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda exc: watched.problems.append(f"page error: {exc}"))
    page.on("console", on_console)
    return watched


def _sign_in(page: Any, server: str, route: str = "#/tasks") -> None:
    page.goto(f"{server}/tasks/dashboard{route}")
    page.wait_for_url(lambda url: "/tasks/login?next=" in url)
    page.fill("#username", "admin")
    page.fill("#password", "secret")
    page.click("#login-submit")
    page.wait_for_url(lambda url: url.endswith(f"/tasks/dashboard{route}"))
    page.wait_for_selector("#conn.conn-live")


@pytest.fixture(scope="module")
def signed_in_state(browser: Any, server: str) -> Any:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        _sign_in(page, server)
        return context.storage_state()
    finally:
        context.close()


@pytest.fixture
def context_args() -> dict[str, Any]:
    return {"viewport": {"width": 1280, "height": 860}}


@pytest.fixture
def dash(
    browser: Any, server: str, signed_in_state: Any, context_args: dict[str, Any]
) -> Iterator[Watched]:
    """A signed-in page on the task list, its event stream live."""
    context = browser.new_context(storage_state=signed_in_state, **context_args)
    try:
        watched = _watch(context.new_page())
        watched.page.goto(server + "/tasks/dashboard#/tasks")
        watched.page.wait_for_selector("#conn.conn-live")
        yield watched
    finally:
        context.close()


def _enqueue(server: str, kind: str, arg: str) -> str:
    with httpx.Client(timeout=5) as client:
        res = client.post(f"{server}/enqueue/{kind}", params={"arg": arg})
        res.raise_for_status()
        return str(res.json()["task_id"])


def _row(task_id: str) -> str:
    return f'tr[data-task-id="{task_id}"]'


def test_login_form_rejects_a_wrong_password_then_signs_in(
    browser: Any, server: str, artifacts_dir: Path
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    try:
        watched = _watch(context.new_page())
        page = watched.page
        page.goto(server + "/tasks/dashboard#/dead")
        page.wait_for_url(lambda url: "/tasks/login?next=" in url)
        page.fill("#username", "admin")
        page.fill("#password", "wrong")
        page.click("#login-submit")
        page.wait_for_selector("#login-error:not([hidden])")
        assert "Wrong username or password" in page.inner_text("#login-error")
        page.screenshot(path=str(artifacts_dir / "dashboard-login.png"))
        watched.problems.clear()  # the browser logs the expected 401 of the wrong password

        page.fill("#password", "secret")
        page.click("#login-submit")
        # back to the view asked for, #/dead included
        page.wait_for_url(lambda url: url.endswith("/tasks/dashboard#/dead"))
        page.wait_for_selector("#conn.conn-live")
        assert page.inner_text("#user") == "admin"
        assert page.get_attribute('nav a[data-route="dead"]', "aria-current") == "page"
        watched.assert_clean()
    finally:
        context.close()


def test_login_next_never_leaves_the_site(browser: Any, server: str, signed_in_state: Any) -> None:
    context = browser.new_context(storage_state=signed_in_state)
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        # a tab between the slashes: browsers drop it and would read "//elsewhere"
        page.goto(server + "/tasks/login?next=%2F%09%2Fexample.invalid%2Fpwned")
        page.wait_for_url(lambda url: url.startswith(server + "/tasks/dashboard"))
        assert "example.invalid" not in page.url
    finally:
        context.close()


def test_row_turns_running_then_success_without_reload(
    dash: Watched, server: str, artifacts_dir: Path
) -> None:
    page = dash.page
    page.evaluate("window.__marker = 1")
    task_id = _enqueue(server, "slow", "weekly")
    page.wait_for_selector(f'{_row(task_id)} [data-status="running"]')
    page.wait_for_selector(f'{_row(task_id)} [data-status="success"]', timeout=15_000)
    assert page.evaluate("window.__marker") == 1, "the page reloaded"
    assert "slow_report" in page.inner_text(_row(task_id))
    assert page.inner_text(f"{_row(task_id)} td[data-label=Duration]").endswith(" s")
    page.screenshot(path=str(artifacts_dir / "dashboard-tasks.png"), full_page=True)
    dash.assert_clean()


def test_status_filter_is_kept_in_the_address(dash: Watched, server: str) -> None:
    page = dash.page
    failed_id = _enqueue(server, "fail", "filter-me")
    page.wait_for_selector(f'{_row(failed_id)} [data-status="failed"]')
    page.check('.status-filter input[value="failed"]')
    page.wait_for_url(lambda url: url.endswith("#/tasks?status=failed"))
    # the list is drawn again for the filter: wait for that drawing (the row was in the
    # unfiltered list too, and the table may be empty for a moment in between)
    page.wait_for_function(
        """() => {
            const shown = [...document.querySelectorAll('.tasks-table tbody [data-status]')];
            return shown.length > 0 && shown.every(e => e.dataset.status === 'failed');
        }"""
    )
    page.wait_for_selector(_row(failed_id))
    statuses = page.locator(".tasks-table tbody [data-status]").all_inner_texts()
    assert statuses
    assert set(statuses) == {"failed"}
    dash.assert_clean()


def test_dead_letter_replayed_through_confirmation_dialog(
    dash: Watched, server: str, artifacts_dir: Path
) -> None:
    page = dash.page
    label = f"order-{uuid.uuid4().hex[:6]}"
    failed_id = _enqueue(server, "fail", label)
    page.wait_for_selector(f'{_row(failed_id)} [data-status="failed"]')
    page.click('nav a[data-route="dead"]')
    page.check(f"{_row(failed_id)} input.row-select")
    page.click('button[data-action="replay-selected"]')

    # the dry run lists exactly the selected task; nothing has run yet
    page.wait_for_selector("dialog#confirm[open]")
    listed = page.locator("#confirm-body .replay-item")
    assert listed.count() == 1
    assert listed.first.get_attribute("data-task-id") == failed_id
    text = page.inner_text("#confirm-body")
    assert "always_fails" in text
    assert f"cannot process {label}" in text
    assert "1 task will be enqueued again" in text
    page.screenshot(path=str(artifacts_dir / "dashboard-replay-dialog.png"))

    page.click("#confirm-ok")
    new_link = page.wait_for_selector(".replay-result a.new-task")
    new_id = (new_link.get_attribute("href") or "").rsplit("/", 1)[-1]
    assert new_id
    assert new_id != failed_id
    page.wait_for_selector(_row(new_id))  # the replay, itself failed, is a dead letter too
    # after a reload, the original's row says where its replay is
    page.reload()
    replayed = page.wait_for_selector(f"{_row(failed_id)} .replayed-as a")
    assert replayed.get_attribute("href") == f"#/tasks/{new_id}"
    page.screenshot(path=str(artifacts_dir / "dashboard-dead-letters.png"), full_page=True)

    page.click('nav a[data-route="tasks"]')
    page.click(f"{_row(new_id)} a.task-link")
    replay_of = page.locator(".facts dt:text-is('Replay of') + dd")
    assert replay_of.inner_text().strip() == failed_id
    # the replay is still dead, so it offers a replay; the original, replayed once
    # already, offers none and lists its replay instead
    page.wait_for_selector('button[data-action="replay"]')
    page.goto(f"{server}/tasks/dashboard#/tasks/{failed_id}")
    page.wait_for_selector(".facts dt:text-is('Replays')")
    assert page.inner_text(".facts dt:text-is('Replays') + dd").strip() == new_id
    assert page.locator('button[data-action="replay"]').count() == 0
    dash.assert_clean()


def test_a_replay_of_selected_rows_unselects_the_ones_replayed_before(
    dash: Watched, server: str
) -> None:
    # selecting a task that was replayed already with one that was not: the replay skips
    # the first, and both must come out of the selection (the first stayed selected)
    page = dash.page
    before, fresh = (_enqueue(server, "fail", f"sel-{i}") for i in range(2))
    page.click('nav a[data-route="dead"]')
    for task_id in (before, fresh):
        page.wait_for_selector(_row(task_id))

    def replay_selected(*task_ids: str) -> None:
        for task_id in task_ids:
            page.check(f"{_row(task_id)} input.row-select")
        page.click('button[data-action="replay-selected"]')
        page.wait_for_selector("dialog#confirm[open]")
        page.click("#confirm-ok")
        page.wait_for_selector("dialog#confirm", state="hidden")

    replay_selected(before)
    page.wait_for_selector(f"{_row(before)} .replayed-as a")
    replay_selected(before, fresh)
    page.wait_for_selector(f"{_row(fresh)} .replayed-as a")
    button = page.locator('button[data-action="replay-selected"]')
    assert button.inner_text().strip() == "Replay selected"
    assert button.is_disabled()
    assert page.locator("input.row-select:checked").count() == 0
    dash.assert_clean()


def test_user_data_renders_as_text(dash: Watched, server: str, artifacts_dir: Path) -> None:
    page = dash.page
    task_id = _enqueue(server, "fail", XSS)
    page.wait_for_selector(f'{_row(task_id)} [data-status="failed"]')
    assert XSS in page.inner_text(_row(task_id))
    page.click(f"{_row(task_id)} a.task-link")
    page.wait_for_selector("pre.json")
    assert XSS in page.inner_text("pre.json")  # the argument
    assert XSS in page.inner_text(".panel-error .error-text")  # the error
    assert XSS in page.inner_text("pre.traceback")
    assert XSS in page.inner_text(".logs-table")  # a log field
    page.wait_for_timeout(300)  # give a broken renderer's onerror time to fire
    assert page.locator("img").count() == 0
    page.screenshot(path=str(artifacts_dir / "dashboard-detail.png"), full_page=True)
    dash.assert_clean()  # no alert, no CSP violation


def test_metrics_draw_counts_and_charts(dash: Watched, server: str, artifacts_dir: Path) -> None:
    page = dash.page
    slow_id = _enqueue(server, "slow", "for-metrics")
    _enqueue(server, "fail", "for-metrics")
    page.wait_for_selector(f'{_row(slow_id)} [data-status="success"]', timeout=15_000)
    page.emulate_media(color_scheme="dark")
    page.click('nav a[data-route="metrics"]')
    page.wait_for_selector("svg.chart rect.bar-success")
    page.wait_for_selector("svg.chart rect.bar-failed")
    with httpx.Client(timeout=5) as client:
        counts = client.get(server + "/tasks/api/health").json()["counts"]
    assert page.inner_text(".card-failed .card-value").strip() == str(counts["failed"])
    names = page.locator(".durations-table tbody td[data-label=Task]").all_inner_texts()
    assert {"slow_report", "always_fails"} <= set(names)
    page.screenshot(path=str(artifacts_dir / "dashboard-metrics-dark.png"), full_page=True)
    dash.assert_clean()


def test_schedule_pause_resume_and_trigger(dash: Watched, server: str, artifacts_dir: Path) -> None:
    page = dash.page
    page.click('nav a[data-route="schedules"]')
    row = 'tr[data-schedule-id="hourly-cleanup"]'
    assert "every 1 h" in page.inner_text(row)
    page.click(f'{row} button[data-action="pause"]')
    page.wait_for_selector(f"{row} .badge-paused")
    page.click(f'{row} button[data-action="resume"]')
    page.wait_for_selector(f"{row} .badge-active")
    page.click(f'{row} button[data-action="trigger"]')
    page.wait_for_selector(f"{row} a.last-task")
    page.screenshot(path=str(artifacts_dir / "dashboard-schedules.png"))
    dash.assert_clean()


@pytest.mark.parametrize(
    "context_args",
    [
        {
            "viewport": {"width": 390, "height": 844},
            "color_scheme": "dark",
            "is_mobile": True,
            "has_touch": True,
            "device_scale_factor": 2,
        }
    ],
)
def test_phone_gets_cards_and_a_menu(dash: Watched, server: str, artifacts_dir: Path) -> None:
    page = dash.page
    task_id = _enqueue(server, "fail", "on-a-phone")
    page.wait_for_selector(f'{_row(task_id)} [data-status="failed"]')
    # rows are stacked cards: every cell a block with its label in front
    display = page.eval_on_selector(_row(task_id), "tr => getComputedStyle(tr).display")
    assert display == "block"
    assert not page.is_visible("#nav a[data-route='dead']")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width}px)"
    page.screenshot(path=str(artifacts_dir / "dashboard-phone.png"), full_page=True)
    page.click("#nav-toggle")
    assert page.get_attribute("#nav-toggle", "aria-expanded") == "true"
    page.click("#nav a[data-route='dead']")
    page.wait_for_selector(f"{_row(task_id)} input.row-select")
    page.screenshot(path=str(artifacts_dir / "dashboard-phone-dead.png"), full_page=True)
    dash.assert_clean()
