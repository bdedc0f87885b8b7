// One task: arguments, result, error, traceback, logs, replays; cancel and replay.
import { ApiError, api } from "../api.js";
import {
  DEAD,
  clear,
  batch,
  errorNotice,
  fill,
  formatDuration,
  h,
  prettyJson,
  shortId,
  statusBadge,
  timeEl,
} from "../dom.js";
import { replayResult, replayWithConfirm } from "../replay.js";
import { confirmDialog, toast } from "../ui.js";

const LOG_KEYS = new Set(["ts", "level", "msg", "attempt"]);

function taskLink(id) {
  return h("a", { href: "#/tasks/" + encodeURIComponent(id), class: "mono" }, id);
}

function fact(term, ...value) {
  return [h("dt", null, term), h("dd", null, ...value)];
}

function jsonBlock(title, value, empty) {
  const hasValue =
    value !== undefined &&
    value !== null &&
    !(Array.isArray(value) && !value.length) &&
    !(typeof value === "object" && !Array.isArray(value) && !Object.keys(value).length);
  return h(
    "section",
    { class: "panel" },
    h("h2", null, title),
    hasValue
      ? h("pre", { class: "code json" }, prettyJson(value))
      : h("p", { class: "muted" }, empty),
  );
}

function logsTable(logs) {
  if (!logs || !logs.length) return h("p", { class: "muted" }, "No log lines.");
  const rows = logs.map((line) => {
    const extra = Object.fromEntries(Object.entries(line).filter(([key]) => !LOG_KEYS.has(key)));
    const when = typeof line.ts === "number" ? new Date(line.ts * 1000).toISOString() : line.ts;
    return h(
      "tr",
      { class: "log-" + String(line.level || "info").toLowerCase() },
      h("td", { "data-label": "Time" }, timeEl(when)),
      h("td", { "data-label": "Level" }, String(line.level ?? "")),
      h("td", { "data-label": "Attempt", class: "num" }, String(line.attempt ?? "")),
      h("td", { "data-label": "Message", class: "log-msg" }, String(line.msg ?? "")),
      h(
        "td",
        { "data-label": "Fields", class: "mono" },
        Object.keys(extra).length ? prettyJson(extra) : "",
      ),
    );
  });
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "data-table logs-table" },
      h(
        "thead",
        null,
        h(
          "tr",
          null,
          ["Time", "Level", "Attempt", "Message", "Fields"].map((c) =>
            h("th", { scope: "col" }, c),
          ),
        ),
      ),
      h("tbody", null, rows),
    ),
  );
}

function render(container, task, actions) {
  const replays = task.replays || [];
  const attempts =
    (task.attempts ?? 0) +
    " of " +
    (task.max_attempts ?? "?") +
    (task.retries_used ? " (" + task.retries_used + " retries)" : "");
  const facts = h(
    "dl",
    { class: "facts" },
    fact("ID", h("span", { class: "mono" }, task.task_id)),
    fact("Status", statusBadge(task.status)),
    fact("Priority", String(task.priority ?? 0)),
    fact(
      "Tags",
      (task.tags || []).length
        ? task.tags.map((t) => h("span", { class: "tag" }, t))
        : h("span", { class: "muted" }, "none"),
    ),
    fact("Created", timeEl(task.created_at)),
    fact("Run after", timeEl(task.run_after)),
    fact("Started", timeEl(task.started_at)),
    fact("Ended", timeEl(task.ended_at)),
    fact("Duration", formatDuration(task.duration)),
    fact("Attempts", attempts),
    task.schedule_id
      ? fact("Schedule", h("span", { class: "mono" }, task.schedule_id), " ", timeEl(task.fire_at))
      : null,
    task.idempotency_key
      ? fact("Idempotency key", h("span", { class: "mono" }, task.idempotency_key))
      : null,
    task.replay_of ? fact("Replay of", taskLink(task.replay_of)) : null,
    replays.length
      ? fact(
          "Replays",
          h(
            "ul",
            { class: "plain-list" },
            replays.map((id) => h("li", null, taskLink(id))),
          ),
        )
      : null,
  );

  const errorPanel =
    task.error || task.traceback
      ? h(
          "section",
          { class: "panel panel-error" },
          h("h2", null, "Error"),
          h(
            "p",
            { class: "error-text" },
            (task.error_type ? task.error_type + ": " : "") + (task.error || ""),
          ),
          task.traceback
            ? h(
                "details",
                { open: true },
                h("summary", null, "Traceback"),
                h("pre", { class: "code traceback" }, task.traceback),
              )
            : null,
        )
      : null;

  fill(
    container,
    h("p", { class: "breadcrumb" }, h("a", { href: "#/tasks" }, "← Tasks")),
    h(
      "h1",
      { class: "detail-title" },
      h("span", { class: "task-name" }, task.func_name),
      " ",
      statusBadge(task.status),
    ),
    actions,
    h("div", { class: "view-status", "aria-live": "polite" }),
    h(
      "div",
      { class: "detail-grid" },
      h("section", { class: "panel" }, h("h2", null, "Overview"), facts),
      errorPanel,
    ),
    h(
      "div",
      { class: "detail-grid" },
      jsonBlock("Arguments", task.args, "No positional arguments."),
      jsonBlock("Keyword arguments", task.kwargs, "No keyword arguments."),
    ),
    jsonBlock(
      "Result",
      task.result,
      task.status === "success"
        ? "null"
        : task.status === "pending" || task.status === "running"
          ? "No result yet."
          : "No result.",
    ),
    h("section", { class: "panel" }, h("h2", null, "Logs"), logsTable(task.logs)),
  );
}

export function mount(container, { id }) {
  let alive = true;
  let task = null;
  const actions = h("div", { class: "actions" });
  const resultBox = h("div", { "aria-live": "polite" });

  function renderActions() {
    clear(actions);
    if (!task) return;
    if (task.status === "pending" || task.status === "running") {
      actions.append(
        h(
          "button",
          { type: "button", class: "btn btn-danger", "data-action": "cancel", onclick: cancel },
          "Cancel",
        ),
      );
    }
    // a dead task is replayed once (its replays are listed in the facts), unless its
    // replay was cancelled
    if (DEAD.has(task.status) && !task.replayed_as) {
      actions.append(
        h(
          "button",
          { type: "button", class: "btn btn-primary", "data-action": "replay", onclick: replay },
          "Replay",
        ),
      );
    }
    actions.append(resultBox);
  }

  async function load() {
    try {
      const fresh = await api("/api/tasks/" + encodeURIComponent(id));
      if (!alive) return;
      task = fresh;
      renderActions();
      render(container, task, actions);
    } catch (err) {
      if (!alive) return;
      fill(
        container,
        h("p", { class: "breadcrumb" }, h("a", { href: "#/tasks" }, "← Tasks")),
        h("h1", null, "Task " + shortId(id)),
        err instanceof ApiError && err.status === 404
          ? h("p", { class: "notice" }, "No task with id " + id + ".")
          : errorNotice(err),
      );
    }
  }

  async function cancel() {
    const ok = await confirmDialog({
      title: "Cancel this task?",
      body: h(
        "p",
        null,
        "Cancel ",
        h("strong", null, task.func_name),
        " (",
        h("span", { class: "mono" }, task.task_id),
        ")?",
      ),
      okLabel: "Cancel task",
      danger: true,
    });
    if (!ok) return;
    try {
      const res = await api("/api/tasks/" + encodeURIComponent(id) + "/cancel", { method: "POST" });
      toast("Task is now " + res.status + ".");
      load();
    } catch (err) {
      toast("Cancel failed: " + err.message, "error");
    }
  }

  async function replay() {
    try {
      const result = await replayWithConfirm({ ids: [id] }, "this task");
      if (!result) return;
      fill(resultBox, replayResult(result));
      load();
    } catch (err) {
      toast("Replay failed: " + err.message, "error");
    }
  }

  const reloadSoon = batch(load, 250);
  container.append(h("p", { class: "muted" }, "Loading…"));
  load();

  return {
    onEvent(ev) {
      if (ev.task_id === id) reloadSoon();
      else if (ev.kind === "enqueued" && task && DEAD.has(task.status)) reloadSoon(); // maybe a replay
    },
    reload: load,
    destroy() {
      alive = false;
      reloadSoon.cancel();
    },
  };
}
