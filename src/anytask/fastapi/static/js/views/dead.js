// Dead letters (failed + interrupted): select rows or a time window and replay them.
import { api } from "../api.js";
import { DEAD, clear, batch, errorNotice, fill, h, shortId, statusBadge, timeEl } from "../dom.js";
import { replayResult, replayWithConfirm } from "../replay.js";
import { replayNote, taskNote } from "./tasks.js";
import { toast } from "../ui.js";

const PAGE_SIZE = 50;
const WINDOWS = [
  ["1h", "Replay last hour", "the last hour"],
  ["24h", "Replay last 24 h", "the last 24 hours"],
  ["7d", "Replay last 7 days", "the last 7 days"],
];

export function mount(container) {
  let alive = true;
  const cursors = [null];
  const selected = new Set();
  let shownIds = [];

  const total = h("span", { class: "count muted" });
  const replaySelected = h(
    "button",
    { type: "button", class: "btn btn-primary", disabled: true, "data-action": "replay-selected" },
    "Replay selected",
  );
  const windowButtons = WINDOWS.map(([value, label, what]) =>
    h(
      "button",
      {
        type: "button",
        class: "btn",
        "data-window": value,
        onclick: () => run({ window: value }, "failed tasks from " + what, what),
      },
      label,
    ),
  );
  const selectAll = h("input", { type: "checkbox", "aria-label": "Select all on this page" });
  // the same, for small screens, where the table's header row is hidden (rows are cards)
  const selectAllSmall = h("input", { type: "checkbox", "data-action": "select-all-small" });
  const tbody = h(
    "tbody",
    null,
    h("tr", null, h("td", { colspan: 6, class: "muted" }, "Loading…")),
  );
  const status = h("div", { class: "view-status", "aria-live": "polite" });
  const result = h("div", { class: "result-box", "aria-live": "polite" });
  const prev = h("button", { type: "button", class: "btn", disabled: true }, "← Newer");
  const next = h("button", { type: "button", class: "btn", disabled: true }, "Older →");

  container.append(
    h("h1", null, "Dead letters ", total),
    h(
      "p",
      { class: "muted" },
      "Failed and interrupted tasks. Replaying enqueues a new task with the same arguments, once per task; the original stays here for the record.",
    ),
    h(
      "div",
      { class: "toolbar", role: "toolbar", "aria-label": "Replay" },
      replaySelected,
      windowButtons,
      h("label", { class: "select-all-small" }, selectAllSmall, " Select all on this page"),
    ),
    status,
    result,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "data-table dead-table" },
        h(
          "thead",
          null,
          h(
            "tr",
            null,
            h("th", { scope: "col", class: "cell-check" }, selectAll),
            ["Task", "Status", "Ended", "Attempts", "Error"].map((c) =>
              h("th", { scope: "col" }, c),
            ),
          ),
        ),
        tbody,
      ),
    ),
    h("nav", { class: "pager", "aria-label": "Pages" }, prev, next),
  );

  function updateSelection() {
    replaySelected.disabled = selected.size === 0;
    replaySelected.textContent = selected.size
      ? "Replay selected (" + selected.size + ")"
      : "Replay selected";
    selectAll.checked = shownIds.length > 0 && shownIds.every((id) => selected.has(id));
    selectAllSmall.checked = selectAll.checked;
  }

  function row(task) {
    const box = h("input", {
      type: "checkbox",
      class: "row-select",
      value: task.task_id,
      checked: selected.has(task.task_id),
      "aria-label": "Select " + task.func_name + " " + shortId(task.task_id),
    });
    box.addEventListener("change", () => {
      if (box.checked) selected.add(task.task_id);
      else selected.delete(task.task_id);
      updateSelection();
    });
    const tr = h(
      "tr",
      { "data-task-id": task.task_id },
      h("td", { class: "cell-check", "data-label": "Select" }, box),
      h(
        "td",
        { "data-label": "Task" },
        h(
          "a",
          { href: "#/tasks/" + encodeURIComponent(task.task_id), class: "task-link" },
          h("span", { class: "task-name" }, task.func_name),
          h("span", { class: "task-id mono" }, shortId(task.task_id)),
        ),
        replayNote(task),
        // a dead task is replayed once: say where its replay is
        taskNote("replayed as", task.replayed_as, "replayed-as"),
      ),
      h("td", { "data-label": "Status" }, statusBadge(task.status)),
      h("td", { "data-label": "Ended" }, timeEl(task.ended_at)),
      h("td", { "data-label": "Attempts", class: "num" }, String(task.attempts ?? "")),
      h(
        "td",
        { "data-label": "Error", class: "cell-error" },
        h(
          "span",
          { class: "error-text" },
          (task.error_type ? task.error_type + ": " : "") + (task.error || ""),
        ),
      ),
    );
    // A click anywhere on the row (but a link or the box itself) toggles the selection.
    tr.addEventListener("click", (event) => {
      if (event.target.closest("a, input, label")) return;
      box.checked = !box.checked;
      box.dispatchEvent(new Event("change"));
    });
    return tr;
  }

  async function load() {
    try {
      const page = await api("/api/dead-letters", {
        query: { limit: PAGE_SIZE, cursor: cursors[cursors.length - 1] },
      });
      if (!alive) return;
      clear(status);
      clear(tbody);
      shownIds = page.items.map((t) => t.task_id);
      for (const task of page.items) tbody.append(row(task));
      if (!page.items.length)
        tbody.append(
          h(
            "tr",
            { class: "empty" },
            h(
              "td",
              { colspan: 6, class: "muted" },
              "No dead letters. Everything succeeded or is still running.",
            ),
          ),
        );
      total.textContent = "(" + (page.total ?? page.items.length) + ")";
      prev.disabled = cursors.length <= 1;
      next.disabled = page.next_cursor === null || page.next_cursor === undefined;
      next.dataset.cursor = next.disabled ? "" : String(page.next_cursor);
      updateSelection();
    } catch (err) {
      if (alive) fill(status, errorNotice(err));
    }
  }

  async function run(selector, what, where = null) {
    try {
      const res = await replayWithConfirm(selector, what, where);
      if (!res || !alive) return;
      for (const item of res.items || []) selected.delete(item.task_id);
      // the selected ones left out (replayed before) are dealt with too: unselect them
      for (const id of selector.ids || []) selected.delete(id);
      fill(result, replayResult(res));
      toast("Replayed " + res.count + (res.count === 1 ? " task." : " tasks."));
      load();
    } catch (err) {
      toast("Replay failed: " + err.message, "error");
    }
  }

  replaySelected.addEventListener("click", () => {
    const ids = [...selected];
    run({ ids }, ids.length === 1 ? "1 selected task" : ids.length + " selected tasks");
  });
  function selectPage(checked) {
    for (const id of shownIds) {
      if (checked) selected.add(id);
      else selected.delete(id);
    }
    for (const box of tbody.querySelectorAll("input.row-select")) box.checked = checked;
    updateSelection();
  }
  selectAll.addEventListener("change", () => selectPage(selectAll.checked));
  selectAllSmall.addEventListener("change", () => selectPage(selectAllSmall.checked));
  prev.addEventListener("click", () => {
    if (cursors.length > 1) cursors.pop();
    load();
  });
  next.addEventListener("click", () => {
    if (!next.dataset.cursor) return;
    cursors.push(next.dataset.cursor);
    load();
  });

  const reloadSoon = batch(load, 500);
  load();

  return {
    onEvent(ev) {
      if (ev.kind === "finished" && DEAD.has(ev.status)) reloadSoon();
    },
    reload: load,
    destroy() {
      alive = false;
      reloadSoon.cancel();
    },
  };
}
