// Metrics: counts by status, throughput and failures over time, duration percentiles.
import { api } from "../api.js";
import { failuresChart, legend, percentileBars, throughputChart } from "../charts.js";
import {
  STATUSES,
  clear,
  debounce,
  errorNotice,
  fill,
  formatDuration,
  h,
  throttle,
  timeEl,
} from "../dom.js";

const WINDOWS = [
  ["3600", "Last hour"],
  ["86400", "Last 24 hours"],
  ["604800", "Last 7 days"],
];

export function mount(container, { params }) {
  let alive = true;
  let data = null;
  let windowSeconds = WINDOWS.some(([v]) => v === params.get("window"))
    ? params.get("window")
    : "3600";

  const select = h(
    "select",
    { id: "metrics-window" },
    WINDOWS.map(([value, label]) =>
      h("option", { value, selected: value === windowSeconds }, label),
    ),
  );
  const generated = h("span", { class: "muted" });
  const cards = h("div", { class: "cards" });
  const chartBox = h("div", { class: "chart-box" });
  const failBox = h("div", { class: "chart-box" });
  const durations = h("div", { class: "table-wrap" });
  const status = h("div", { class: "view-status", "aria-live": "polite" });

  container.append(
    h("h1", null, "Metrics"),
    h(
      "div",
      { class: "toolbar" },
      h("label", { for: "metrics-window", class: "field-label" }, "Window"),
      select,
      generated,
    ),
    status,
    cards,
    h(
      "section",
      { class: "panel" },
      h("h2", null, "Throughput"),
      legend([
        ["bar-success", "success"],
        ["bar-failed", "failed"],
        ["bar-other", "other (cancelled, interrupted)"],
      ]),
      chartBox,
    ),
    h("section", { class: "panel" }, h("h2", null, "Failures"), failBox),
    h("section", { class: "panel" }, h("h2", null, "Duration by task"), durations),
  );

  function drawCharts() {
    if (!data) return;
    const width = Math.max(280, chartBox.clientWidth || 600);
    const opts = { width, spanSeconds: Number(windowSeconds) };
    fill(chartBox, throughputChart(data.series || [], opts));
    fill(failBox, failuresChart(data.series || [], opts));
  }

  function render() {
    const counts = data.counts || {};
    fill(
      cards,
      h(
        "a",
        { class: "card card-total", href: "#/tasks" },
        h("span", { class: "card-value" }, String(data.total ?? 0)),
        h("span", { class: "card-label" }, "total"),
      ),
      STATUSES.map((st) =>
        h(
          "a",
          { class: "card card-" + st, href: "#/tasks?status=" + st, "data-status": st },
          h("span", { class: "card-value" }, String(counts[st] ?? 0)),
          h("span", { class: "card-label" }, st),
        ),
      ),
    );
    fill(generated, "updated ", timeEl(data.generated_at));
    drawCharts();
    const rows = data.durations || [];
    const max = Math.max(0, ...rows.map((r) => r.p99 || 0));
    fill(
      durations,
      rows.length
        ? h(
            "table",
            { class: "data-table durations-table" },
            h(
              "thead",
              null,
              h(
                "tr",
                null,
                ["Task", "Runs", "p50", "p95", "p99", ""].map((c) => h("th", { scope: "col" }, c)),
              ),
            ),
            h(
              "tbody",
              null,
              rows.map((row) =>
                h(
                  "tr",
                  null,
                  h(
                    "td",
                    { "data-label": "Task" },
                    h(
                      "a",
                      { href: "#/tasks?name=" + encodeURIComponent(row.func_name) },
                      row.func_name,
                    ),
                  ),
                  h("td", { "data-label": "Runs", class: "num" }, String(row.count)),
                  h("td", { "data-label": "p50", class: "num" }, formatDuration(row.p50)),
                  h("td", { "data-label": "p95", class: "num" }, formatDuration(row.p95)),
                  h("td", { "data-label": "p99", class: "num" }, formatDuration(row.p99)),
                  h("td", { "data-label": "Spread" }, percentileBars(row, max)),
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, "No finished tasks in this window."),
    );
  }

  async function load() {
    try {
      const fresh = await api("/api/metrics", { query: { window: windowSeconds, buckets: 30 } });
      if (!alive) return;
      data = fresh;
      clear(status);
      render();
    } catch (err) {
      if (alive) fill(status, errorNotice(err));
    }
  }

  select.addEventListener("change", () => {
    windowSeconds = select.value;
    history.replaceState(null, "", "#/metrics?window=" + windowSeconds);
    load();
  });
  const redraw = debounce(drawCharts, 150);
  window.addEventListener("resize", redraw);
  const reloadThrottled = throttle(load, 2000);
  load();

  return {
    onEvent(ev) {
      if (ev.kind !== "running") reloadThrottled();
    },
    reload: load,
    destroy() {
      alive = false;
      window.removeEventListener("resize", redraw);
      redraw.cancel();
      reloadThrottled.cancel();
    },
  };
}
