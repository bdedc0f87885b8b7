// Task list: filters in the hash, keyset paging, live row updates from the event stream.
import { api } from "../api.js";
import {
  STATUSES,
  clear,
  batch,
  errorNotice,
  fill,
  formatDuration,
  h,
  parseTime,
  shortId,
  statusBadge,
  throttle,
  timeEl,
} from "../dom.js";

const PAGE_SIZE = 50;
const TASK_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const RANGES = { "1h": 3600, "24h": 86400, "7d": 604800 };

function filtersFrom(params) {
  return {
    status: (params.get("status") || "").split(",").filter((x) => STATUSES.includes(x)),
    name: params.get("name") || "",
    tag: params.get("tag") || "",
    q: params.get("q") || "",
    range: params.get("range") || "",
    since: params.get("since") || "",
    until: params.get("until") || "",
  };
}

function queryFor(filters, cursor) {
  const query = { limit: PAGE_SIZE, cursor };
  if (filters.status.length) query.status = filters.status.join(",");
  if (filters.name) query.name = filters.name;
  if (filters.tag) query.tag = filters.tag;
  if (filters.q) query.q = filters.q;
  if (RANGES[filters.range]) {
    query.since = new Date(Date.now() - RANGES[filters.range] * 1000).toISOString();
  } else if (filters.range === "custom") {
    if (filters.since) query.since = filters.since;
    if (filters.until) query.until = filters.until;
  }
  return query;
}

/** ISO (UTC) -> value for <input type="datetime-local"> in local time. */
function toLocalInput(iso) {
  const date = parseTime(iso);
  if (!date) return "";
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 16);
}

function fromLocalInput(value) {
  if (!value) return "";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString();
}

function hashFor(filters) {
  const params = new URLSearchParams();
  if (filters.status.length) params.set("status", filters.status.join(","));
  for (const key of ["name", "tag", "q", "range"]) if (filters[key]) params.set(key, filters[key]);
  if (filters.range === "custom") {
    if (filters.since) params.set("since", filters.since);
    if (filters.until) params.set("until", filters.until);
  }
  const text = params.toString();
  return "#/tasks" + (text ? "?" + text : "");
}

function field(label, input) {
  return h("label", { class: "field" }, h("span", { class: "field-label" }, label), input);
}

function buildFilterForm(filters, onApply) {
  const statusBoxes = STATUSES.map((status) =>
    h(
      "label",
      { class: "check" },
      h("input", {
        type: "checkbox",
        name: "status",
        value: status,
        checked: filters.status.includes(status),
      }),
      " ",
      status,
    ),
  );
  const rangeSelect = h(
    "select",
    { name: "range" },
    [
      ["", "Any time"],
      ["1h", "Last hour"],
      ["24h", "Last 24 hours"],
      ["7d", "Last 7 days"],
      ["custom", "Custom…"],
    ].map(([value, label]) => h("option", { value, selected: filters.range === value }, label)),
  );
  const since = h("input", {
    type: "datetime-local",
    name: "since",
    value: toLocalInput(filters.since),
  });
  const until = h("input", {
    type: "datetime-local",
    name: "until",
    value: toLocalInput(filters.until),
  });
  const custom = h("div", { class: "custom-range" }, field("Since", since), field("Until", until));
  custom.hidden = filters.range !== "custom";

  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter tasks" },
    h("fieldset", { class: "status-filter" }, h("legend", null, "Status"), statusBoxes),
    h(
      "div",
      { class: "filter-row" },
      field(
        "Name",
        h("input", { type: "text", name: "name", value: filters.name, placeholder: "task name" }),
      ),
      field("Tag", h("input", { type: "text", name: "tag", value: filters.tag })),
      field(
        "Search",
        h("input", {
          type: "search",
          name: "q",
          value: filters.q,
          placeholder: "name or error text; or a task id",
        }),
      ),
      field("Time", rangeSelect),
      custom,
      h(
        "div",
        { class: "filter-buttons" },
        h("button", { type: "submit", class: "btn btn-primary" }, "Apply"),
        h("a", { class: "btn", href: "#/tasks" }, "Reset"),
      ),
    ),
  );

  const read = () => {
    const data = new FormData(form);
    return {
      status: data.getAll("status"),
      name: String(data.get("name") || "").trim(),
      tag: String(data.get("tag") || "").trim(),
      q: String(data.get("q") || "").trim(),
      range: String(data.get("range") || ""),
      since: fromLocalInput(String(data.get("since") || "")),
      until: fromLocalInput(String(data.get("until") || "")),
    };
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const wanted = read();
    if (TASK_ID.test(wanted.q)) {
      location.hash = "#/tasks/" + encodeURIComponent(wanted.q); // a pasted id opens the task
      return;
    }
    onApply(wanted);
  });
  form.addEventListener("change", (event) => {
    if (event.target === rangeSelect) custom.hidden = rangeSelect.value !== "custom";
    if (
      event.target.name === "status" ||
      (event.target === rangeSelect && rangeSelect.value !== "custom")
    ) {
      onApply(read());
    }
  });
  return form;
}

/** "replay of 1a2b3c4d" under the name of a task that is a replay. */
/** A small line under a task's name linking to a related task, or null without one. */
export function taskNote(label, id, extraClass = "") {
  if (!id) return null;
  return h(
    "div",
    { class: ("replay-note " + extraClass).trim() },
    label + " ",
    h("a", { href: "#/tasks/" + encodeURIComponent(id), class: "mono" }, shortId(id)),
  );
}

export function replayNote(task) {
  return taskNote("replay of", task.replay_of);
}

export function taskRow(task, { onOpen } = {}) {
  const link = h(
    "a",
    { href: "#/tasks/" + encodeURIComponent(task.task_id), class: "task-link" },
    h("span", { class: "task-name" }, task.func_name || "?"),
    h("span", { class: "task-id mono", title: task.task_id }, shortId(task.task_id)),
  );
  const tags = (task.tags || []).map((tag) => h("span", { class: "tag" }, tag));
  const attempts = String(task.attempts ?? 0) + " / " + String(task.max_attempts ?? "?");
  const row = h(
    "tr",
    { "data-task-id": task.task_id, class: "row-" + task.status },
    h(
      "td",
      { "data-label": "Task" },
      link,
      replayNote(task),
      tags.length ? h("div", { class: "tags" }, tags) : null,
    ),
    h("td", { "data-label": "Status", class: "cell-status" }, statusBadge(task.status)),
    h("td", { "data-label": "Created" }, timeEl(task.created_at)),
    h("td", { "data-label": "Started" }, timeEl(task.started_at)),
    h("td", { "data-label": "Duration", class: "num" }, formatDuration(task.duration)),
    h("td", { "data-label": "Attempts", class: "num" }, attempts),
    h(
      "td",
      { "data-label": "Error", class: "cell-error" },
      task.error ? h("span", { class: "error-text", title: task.error }, task.error) : null,
    ),
  );
  row.addEventListener("click", (event) => {
    if (event.target.closest("a, button, input, label")) return;
    if (onOpen) onOpen(task.task_id);
    else location.hash = "#/tasks/" + encodeURIComponent(task.task_id);
  });
  return row;
}

export function tableHead(columns) {
  return h(
    "thead",
    null,
    h(
      "tr",
      null,
      columns.map((c) =>
        c instanceof Node ? h("th", { scope: "col" }, c) : h("th", { scope: "col" }, c),
      ),
    ),
  );
}

/** Apply one event's delta to a task summary (in place). */
export function applyEvent(task, ev) {
  task.status = ev.status || task.status;
  if (typeof ev.attempts === "number") task.attempts = ev.attempts;
  if (typeof ev.priority === "number") task.priority = ev.priority;
  if (ev.kind === "running") {
    task.started_at = ev.at || task.started_at;
    task.ended_at = null;
    task.duration = null;
    task.error = null;
  } else if (ev.kind === "retrying") {
    task.error = ev.error ?? task.error;
  } else if (ev.kind === "finished") {
    task.ended_at = ev.at || task.ended_at;
    task.error = ev.error ?? null;
    const start = parseTime(task.started_at);
    const end = parseTime(task.ended_at);
    task.duration = start && end ? Math.max(0, (end - start) / 1000) : task.duration;
  }
  if (typeof task.attempts === "number" && task.attempts > 0) {
    task.retries_used = Math.max(0, task.attempts - 1);
  }
  return task;
}

export function mount(container, { params }) {
  const filters = filtersFrom(params);
  const cursors = [null]; // cursor of each page visited; the last one is shown
  const rows = new Map(); // task_id -> {task, tr}
  let queue = [];
  let alive = true;
  let loading = null;
  // Events seen recently, so that a page fetched while they arrived can be brought up
  // to date: seq of log[i] is logBase + i.
  const log = [];
  let logBase = 0;

  const title = h("h1", null, "Tasks ");
  const total = h("span", { class: "count muted" });
  title.append(total);
  const form = buildFilterForm(filters, (next) => {
    location.hash = hashFor(next);
  });
  // On a phone the filters fold away unless one is in use.
  const active =
    filters.status.length +
    [filters.name, filters.tag, filters.q, filters.range].filter(Boolean).length;
  const filterBox = h(
    "details",
    { class: "filter-box", open: active > 0 || !window.matchMedia("(max-width: 640px)").matches },
    h("summary", null, active ? "Filters (" + active + ")" : "Filters"),
    form,
  );
  const tbody = h(
    "tbody",
    null,
    h("tr", null, h("td", { colspan: 7, class: "muted" }, "Loading…")),
  );
  const table = h(
    "table",
    { class: "data-table tasks-table", "aria-describedby": "tasks-caption" },
    h("caption", { id: "tasks-caption", class: "visually-hidden" }, "Tasks, newest first"),
    tableHead(["Task", "Status", "Created", "Started", "Duration", "Attempts", "Error"]),
    tbody,
  );
  const prev = h("button", { type: "button", class: "btn", disabled: true }, "← Newer");
  const next = h("button", { type: "button", class: "btn", disabled: true }, "Older →");
  const pageLabel = h("span", { class: "muted" });
  const status = h("div", { class: "view-status", "aria-live": "polite" });
  container.append(
    title,
    filterBox,
    status,
    h("div", { class: "table-wrap" }, table),
    h("nav", { class: "pager", "aria-label": "Pages" }, prev, pageLabel, next),
  );

  const complexFilter = () => Boolean(filters.tag || filters.q || filters.range);

  function render(page) {
    rows.clear();
    clear(tbody);
    for (const task of page.items) {
      const tr = taskRow(task);
      rows.set(task.task_id, { task, tr });
      tbody.append(tr);
    }
    if (!page.items.length) {
      tbody.append(
        h("tr", { class: "empty" }, h("td", { colspan: 7, class: "muted" }, "No tasks match.")),
      );
    }
    total.textContent = "(" + (page.total ?? page.items.length) + ")";
    prev.disabled = cursors.length <= 1;
    next.disabled = page.next_cursor === null || page.next_cursor === undefined;
    next.dataset.cursor = next.disabled ? "" : String(page.next_cursor);
    pageLabel.textContent = "Page " + cursors.length;
  }

  function updateRow(shown, ev) {
    applyEvent(shown.task, ev);
    const tr = taskRow(shown.task);
    tr.classList.add("flash");
    shown.tr.replaceWith(tr);
    shown.tr = tr;
  }

  async function load() {
    const cursor = cursors[cursors.length - 1];
    const mark = logBase + log.length;
    const request = api("/api/tasks", { query: queryFor(filters, cursor) });
    loading = request;
    try {
      const page = await request;
      if (!alive || loading !== request) return;
      clear(status);
      render(page);
      // Events that arrived while the page was in flight may be newer than it: apply
      // them again (applying one twice changes nothing).
      queue = log.slice(Math.max(0, mark - logBase)).concat(queue);
      flush();
    } catch (err) {
      if (!alive || loading !== request) return;
      fill(status, errorNotice(err));
    }
  }

  const reloadSoon = throttle(load, 1000);
  // Rows made from an `enqueued` event lack max_attempts and tags: fetch the page again
  // now and then to fill them in (row statuses keep following the events meanwhile).
  const fillInSoon = throttle(load, 2000);

  function flush() {
    const events = queue;
    queue = [];
    let needReload = false;
    for (const ev of events) {
      const shown = rows.get(ev.task_id);
      if (shown) {
        updateRow(shown, ev);
        continue;
      }
      const onFirstPage = cursors.length === 1;
      if (!onFirstPage) continue;
      const name = ev.func_name ?? ev.name;
      const statusOk = !filters.status.length || filters.status.includes(ev.status);
      const nameOk = !filters.name || filters.name === name;
      if (!statusOk || !nameOk) continue;
      if (ev.kind !== "enqueued") {
        // The list is ordered by creation, so a task not shown only comes onto this page
        // when its new status (or error text) makes it match the filter.
        if (filters.status.length || (filters.q && ev.kind === "finished")) needReload = true;
        continue;
      }
      if (complexFilter()) {
        needReload = true; // tag, text or time filter: let the server decide
        continue;
      }
      if (tbody.rows.length >= 2 * PAGE_SIZE) {
        needReload = true; // a burst: the reload brings the newest page
        continue;
      }
      const task = applyEvent(
        {
          task_id: ev.task_id,
          func_name: name,
          status: ev.status,
          priority: ev.priority ?? 0,
          tags: [],
          created_at: ev.at,
          started_at: null,
          ended_at: null,
          duration: null,
          attempts: ev.attempts ?? 0,
          max_attempts: "?",
          error: null,
        },
        ev,
      );
      const empty = tbody.querySelector("tr.empty");
      if (empty) empty.remove();
      const tr = taskRow(task);
      tr.classList.add("flash");
      tbody.prepend(tr);
      rows.set(task.task_id, { task, tr });
      fillInSoon();
      const count = parseInt(total.textContent.replace(/\D/g, ""), 10) || 0;
      total.textContent = "(" + (count + 1) + ")";
      // Past a full page, rows stay until the reload brings the page back to its size:
      // the Older cursor follows the last row shown, so a row dropped from the bottom
      // here would be on neither page.
      if (tbody.rows.length > PAGE_SIZE) needReload = true;
    }
    if (needReload) reloadSoon();
  }

  const flushSoon = batch(flush, 100);

  prev.addEventListener("click", () => {
    if (cursors.length > 1) cursors.pop();
    load();
  });
  next.addEventListener("click", () => {
    if (!next.dataset.cursor) return;
    cursors.push(next.dataset.cursor);
    load();
  });

  load();

  return {
    onEvent(ev) {
      queue.push(ev);
      log.push(ev);
      if (log.length > 1000) {
        log.shift();
        logBase += 1;
      }
      flushSoon();
    },
    reload() {
      queue = [];
      load();
    },
    destroy() {
      alive = false;
      flushSoon.cancel();
      reloadSoon.cancel();
      fillInSoon.cancel();
    },
  };
}
