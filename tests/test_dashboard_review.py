"""Dashboard review: the dashboard as an operator uses it, in headless Chromium (the
machinery is ``test_browser.py``'s; its module-scoped fixtures give this module its own
server and browser)."""

from __future__ import annotations

from typing import Any

from test_browser import _enqueue, _row, _sign_in, _watch, browser, server  # noqa: F401

PAGE_SIZE = 50  # the task list's page (tasks.js)


def _shown(page: Any) -> list[str]:
    return list(
        page.eval_on_selector_all(
            "tbody tr[data-task-id]", "rows => rows.map(r => r.dataset.taskId)"
        )
    )


def test_rows_pushed_down_by_live_arrivals_are_on_the_older_page(
    browser: Any,  # noqa: F811
    server: str,  # noqa: F811
) -> None:
    """Tasks arriving through the event stream go on top of the first page; the rows they
    push past a full page must still be on one page or the other: *Older* went on after
    the last row of the page as first loaded, so the rows dropped from its bottom were
    shown nowhere until the reload that follows (a second under a steady stream)."""
    for i in range(PAGE_SIZE + 5):
        _enqueue(server, "slow", f"before-{i}")
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    held: list[Any] = []
    try:
        watched = _watch(context.new_page())
        page = watched.page
        _sign_in(page, server)
        page.wait_for_selector(f"tbody tr[data-task-id]:nth-child({PAGE_SIZE})")
        # hold the first page's reloads: what is shown is what the events made of it
        page.route(
            lambda url: "/api/tasks?" in url and "cursor=" not in url,
            lambda route: held.append(route),
        )
        arrived = [_enqueue(server, "slow", f"after-{i}") for i in range(5)]
        for task_id in arrived:
            page.wait_for_selector(_row(task_id))
        shown = _shown(page)
        assert shown[: len(arrived)] == arrived[::-1]
        page.click("nav.pager >> text=Older →")
        page.wait_for_selector(f"tbody tr[data-task-id]:not({_row(shown[0])[2:]})")
        page.wait_for_selector(_row(shown[0]), state="detached")
        older = _shown(page)
        everything = page.request.get(server + "/tasks/api/tasks", params={"limit": 500})
        order = [item["task_id"] for item in everything.json()["items"]]
        # the Older page starts right after the last row the first page showed
        assert order.index(older[0]) == order.index(shown[-1]) + 1, (shown[-1], older[0])
        watched.assert_clean()
    finally:
        context.close()  # (the held reloads go with it)
