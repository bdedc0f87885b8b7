// Schedules: trigger, next/last fire, last outcome; pause, resume, trigger now.
import { api } from "../api.js";
import { clear, errorNotice, fill, h, prettyJson, statusBadge, throttle, timeEl } from "../dom.js";
import { toast } from "../ui.js";

function pick(item, ...keys) {
  for (const key of keys) if (item[key] !== undefined && item[key] !== null) return item[key];
  return null;
}

function seconds(value) {
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  if (n % 86400 === 0) return n / 86400 + " d";
  if (n % 3600 === 0) return n / 3600 + " h";
  if (n % 60 === 0) return n / 60 + " min";
  return n + " s";
}

/** Items are ScheduleInfo as JSON: {schedule: {id, task_name, every, cron, ...}, paused, ...};
 * a flat item works too. */
function describe(item) {
  const spec = item.schedule && typeof item.schedule === "object" ? item.schedule : item;
  const id = String(pick(item, "id", "schedule_id") ?? pick(spec, "id", "schedule_id", "name"));
  const task = pick(spec, "task_name", "func_name", "task");
  let trigger = "—";
  if (spec.cron) trigger = "cron " + spec.cron + (spec.timezone ? " (" + spec.timezone + ")" : "");
  else if (spec.every !== undefined && spec.every !== null)
    trigger = "every " + seconds(spec.every);
  else if (typeof spec.trigger === "string") trigger = spec.trigger;
  else if (spec.trigger) trigger = prettyJson(spec.trigger);
  return { id, task, trigger };
}

export function mount(container) {
  let alive = true;
  const body = h("div", null, h("p", { class: "muted" }, "Loading…"));
  const status = h("div", { class: "view-status", "aria-live": "polite" });
  container.append(h("h1", null, "Schedules"), status, body);

  async function act(id, action) {
    try {
      const res = await api("/api/schedules/" + encodeURIComponent(id) + "/" + action, {
        method: "POST",
      });
      if (action === "trigger") {
        toast("Triggered " + id + (res && res.task_id ? ": task " + res.task_id : "") + ".");
      } else {
        toast((action === "pause" ? "Paused " : "Resumed ") + id + ".");
      }
      load();
    } catch (err) {
      toast(action + " failed: " + err.message, "error");
    }
  }

  function row(item) {
    const { id, task, trigger } = describe(item);
    const paused = Boolean(pick(item, "paused"));
    const outcome = pick(item, "last_status", "last_outcome");
    const lastTask = pick(item, "last_task_id");
    return h(
      "tr",
      { "data-schedule-id": id, class: paused ? "row-paused" : "" },
      h(
        "td",
        { "data-label": "Schedule" },
        h("span", { class: "task-name" }, id),
        task && task !== id ? h("div", { class: "muted" }, String(task)) : null,
      ),
      h("td", { "data-label": "Trigger", class: "mono" }, trigger),
      h(
        "td",
        { "data-label": "Next fire" },
        paused
          ? h("span", { class: "muted" }, "paused")
          : timeEl(pick(item, "next_fire_at", "next_fire")),
      ),
      h("td", { "data-label": "Last fire" }, timeEl(pick(item, "last_fire_at", "last_fire"))),
      h(
        "td",
        { "data-label": "Last outcome" },
        outcome ? statusBadge(String(outcome)) : h("span", { class: "muted" }, "—"),
        lastTask
          ? [
              " ",
              h(
                "a",
                { href: "#/tasks/" + encodeURIComponent(lastTask), class: "mono last-task" },
                String(lastTask).slice(0, 8),
              ),
            ]
          : null,
      ),
      h(
        "td",
        { "data-label": "State" },
        paused
          ? h("span", { class: "badge badge-paused" }, "paused")
          : h("span", { class: "badge badge-active" }, "active"),
      ),
      h(
        "td",
        { "data-label": "Actions", class: "cell-actions" },
        paused
          ? h(
              "button",
              {
                type: "button",
                class: "btn btn-small",
                "data-action": "resume",
                onclick: () => act(id, "resume"),
              },
              "Resume",
            )
          : h(
              "button",
              {
                type: "button",
                class: "btn btn-small",
                "data-action": "pause",
                onclick: () => act(id, "pause"),
              },
              "Pause",
            ),
        " ",
        h(
          "button",
          {
            type: "button",
            class: "btn btn-small btn-primary",
            "data-action": "trigger",
            onclick: () => act(id, "trigger"),
          },
          "Trigger now",
        ),
      ),
    );
  }

  async function load() {
    try {
      const data = await api("/api/schedules");
      if (!alive) return;
      clear(status);
      const items = (data && data.items) || [];
      if (!items.length) {
        fill(
          body,
          h(
            "p",
            { class: "notice empty-schedules" },
            "No schedules. Interval and cron schedules defined in the app show up here.",
          ),
        );
        return;
      }
      fill(
        body,
        h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "data-table schedules-table" },
            h(
              "thead",
              null,
              h(
                "tr",
                null,
                [
                  "Schedule",
                  "Trigger",
                  "Next fire",
                  "Last fire",
                  "Last outcome",
                  "State",
                  "Actions",
                ].map((c) => h("th", { scope: "col" }, c)),
              ),
            ),
            h("tbody", null, items.map(row)),
          ),
        ),
      );
    } catch (err) {
      if (alive) fill(status, errorNotice(err));
    }
  }

  const reloadThrottled = throttle(load, 3000);
  load();
  return {
    onEvent(ev) {
      if (ev.kind === "finished" || ev.kind === "enqueued") reloadThrottled();
    },
    reload: load,
    destroy() {
      alive = false;
      reloadThrottled.cancel();
    },
  };
}
