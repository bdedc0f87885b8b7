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


def test_a_phone_can_select_every_dead_letter_of_the_page(
    browser: Any,  # noqa: F811
    server: str,  # noqa: F811
) -> None:
    """On a phone-sized screen the table's header row (with its select-all box) is hidden,
    rows being cards: the toolbar offers the same box there, and it selects the page."""
    failed = [_enqueue(server, "fail", f"phone-all-{i}") for i in range(3)]
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    try:
        watched = _watch(context.new_page())
        page = watched.page
        _sign_in(page, server, "#/dead")
        for task_id in failed:
            page.wait_for_selector(_row(task_id))
        box = page.locator('input[data-action="select-all-small"]')
        assert box.is_visible()
        box.check()
        shown = len(_shown(page))
        button = page.locator('button[data-action="replay-selected"]')
        assert button.inner_text().strip() == f"Replay selected ({shown})"
        assert page.locator("input.row-select:checked").count() == shown
        box.uncheck()
        assert button.is_disabled()
        watched.assert_clean()
    finally:
        context.close()


def test_the_small_screen_select_all_stays_hidden_on_a_wide_screen(
    browser: Any,  # noqa: F811
    server: str,  # noqa: F811
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    try:
        watched = _watch(context.new_page())
        page = watched.page
        _sign_in(page, server, "#/dead")
        page.wait_for_selector('button[data-action="replay-selected"]')
        assert not page.locator('input[data-action="select-all-small"]').is_visible()
        assert page.locator('th input[aria-label="Select all on this page"]').is_visible()
        watched.assert_clean()
    finally:
        context.close()


def test_chart_axes_count_in_whole_numbers(
    browser: Any,  # noqa: F811
    server: str,  # noqa: F811
) -> None:
    """The charts count tasks: every grid line's label is a whole number, whatever the
    peak (a peak of 5 to 9 made a top of 5 or 10, and labels such as 1.3 or 2.5)."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    try:
        watched = _watch(context.new_page())
        page = watched.page
        _sign_in(page, server, "#/tasks")
        labels = page.evaluate(
            """async (peaks) => {
                const charts = await import("./static/js/charts.js");
                const out = {};
                for (const peak of peaks) {
                    const series = [{ start: "2026-01-01T00:00:00Z", success: peak,
                                      failed: peak, other: 0 }];
                    out[peak] = [charts.throughputChart, charts.failuresChart].flatMap(
                        (chart) => [...chart(series, { width: 400 })
                            .querySelectorAll("text.axis-label")]
                            .map((t) => t.textContent)
                            .filter((t) => /^[0-9.]+$/.test(t)));
                }
                return out;
            }""",
            [1, 3, 5, 7, 9, 13, 27, 45, 99, 150, 999, 12345],
        )
        for peak, texts in labels.items():
            assert texts, peak
            assert all("." not in text for text in texts), (peak, texts)
        watched.assert_clean()
    finally:
        context.close()
