// The replay flow: dry run -> confirmation dialog listing exactly what will run -> replay
// those ids for real -> result.
import { api } from "./api.js";
import { h, shortId, statusBadge, timeEl } from "./dom.js";
import { confirmDialog } from "./ui.js";

function previewBody(preview, where) {
  if (!preview.count) {
    return h(
      "p",
      { class: "muted" },
      "Nothing to replay: there are no failed or interrupted tasks in " +
        where +
        " that were not replayed already.",
    );
  }
  const items = preview.items.map((item) =>
    h(
      "li",
      { class: "replay-item", "data-task-id": item.task_id },
      h(
        "div",
        { class: "replay-head" },
        h("span", { class: "task-name" }, item.func_name),
        statusBadge(item.status),
        h("span", { class: "muted" }, "created ", timeEl(item.created_at)),
      ),
      h("div", { class: "task-id mono" }, item.task_id),
      item.error ? h("div", { class: "error-text" }, item.error) : null,
    ),
  );
  return h(
    "div",
    null,
    h(
      "p",
      { class: "replay-count" },
      preview.count === 1
        ? "1 task will be enqueued again with the same arguments:"
        : preview.count + " tasks will be enqueued again with the same arguments:",
    ),
    h("ul", { class: "replay-list" }, items),
  );
}

/**
 * `selector` is {ids: [...]} or {window: "1h"} (or since/until). Returns the replay
 * result, or null when the user cancelled or there was nothing to replay.
 */
export async function replayWithConfirm(selector, what, where = null) {
  const preview = await api("/api/replay", {
    method: "POST",
    body: { ...selector, dry_run: true },
  });
  const ids = preview.items.map((item) => item.task_id);
  const ok = await confirmDialog({
    title: "Replay " + what + "?",
    body: previewBody(preview, where || what),
    okLabel: preview.count ? "Replay " + preview.count : "Replay",
    okDisabled: !preview.count,
  });
  if (!ok || !ids.length) return null;
  // Replay exactly the ids that were listed, even for a time window: what the user
  // confirmed is what runs.
  return api("/api/replay", { method: "POST", body: { ids, dry_run: false } });
}

/** A result panel: original -> new task links. */
export function replayResult(result) {
  const items = (result.items || []).map((item) =>
    h(
      "li",
      null,
      h("span", { class: "task-name" }, item.func_name),
      " ",
      h(
        "a",
        { href: "#/tasks/" + encodeURIComponent(item.task_id), class: "mono" },
        shortId(item.task_id),
      ),
      " → ",
      item.new_task_id
        ? h(
            "a",
            { href: "#/tasks/" + encodeURIComponent(item.new_task_id), class: "mono new-task" },
            shortId(item.new_task_id),
          )
        : h("span", { class: "muted" }, "not replayed"),
    ),
  );
  return h(
    "div",
    { class: "notice notice-ok replay-result" },
    h("p", null, "Replayed " + result.count + (result.count === 1 ? " task." : " tasks.")),
    h("ul", { class: "replay-list" }, items),
  );
}
