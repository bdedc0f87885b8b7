// Small DOM helpers. Everything goes through createElement/textContent/setAttribute:
// data from the server is never parsed as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function applyAttrs(el, attrs) {
  if (!attrs) return;
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") el.textContent = String(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
}

function appendChildren(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** h("a", {href: "#/x", class: "c"}, "text", otherNode) */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  applyAttrs(el, attrs);
  appendChildren(el, children);
  return el;
}

/** An SVG element; attributes are presentation attributes, never style="". */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  applyAttrs(el, attrs);
  appendChildren(el, children);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

const dateFormat = new Intl.DateTimeFormat(undefined, {
  year: "numeric",
  month: "short",
  day: "2-digit",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});

export function parseTime(iso) {
  if (!iso) return null;
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? null : date;
}

export function formatTime(iso) {
  const date = parseTime(iso);
  return date ? dateFormat.format(date) : "—";
}

/** <time> in the browser's local time, the ISO value in title and datetime. */
export function timeEl(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: iso, title: iso }, formatTime(iso));
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  if (seconds < 0.001) return "<1 ms";
  if (seconds < 1) return Math.round(seconds * 1000) + " ms";
  if (seconds < 60) return seconds.toFixed(seconds < 10 ? 2 : 1) + " s";
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return minutes + " m " + Math.round(seconds % 60) + " s";
  return Math.floor(minutes / 60) + " h " + (minutes % 60) + " m";
}

export const STATUSES = ["pending", "running", "success", "failed", "cancelled", "interrupted"];
export const DEAD = new Set(["failed", "interrupted"]);

export function statusBadge(status) {
  const known = STATUSES.includes(status) ? status : "unknown";
  return h("span", { class: "badge badge-" + known, "data-status": status }, status || "?");
}

export function prettyJson(value) {
  try {
    return JSON.stringify(value, null, 2);
  } catch (_err) {
    return String(value);
  }
}

/** Run `fn` at most once per `wait` ms, after the last call (trailing debounce). */
export function debounce(fn, wait) {
  let timer = null;
  const wrapped = (...args) => {
    if (timer !== null) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = null;
      fn(...args);
    }, wait);
  };
  wrapped.cancel = () => {
    if (timer !== null) clearTimeout(timer);
    timer = null;
  };
  return wrapped;
}

/** Run `fn` at most once per `wait` ms, leading and trailing. */
export function throttle(fn, wait) {
  let last = 0;
  let timer = null;
  const wrapped = () => {
    const now = Date.now();
    const remaining = last + wait - now;
    if (remaining <= 0) {
      last = now;
      fn();
    } else if (timer === null) {
      timer = setTimeout(() => {
        timer = null;
        last = Date.now();
        fn();
      }, remaining);
    }
  };
  wrapped.cancel = () => {
    if (timer !== null) clearTimeout(timer);
    timer = null;
  };
  return wrapped;
}

export function shortId(id) {
  return id ? String(id).slice(0, 8) : "";
}

/** Error box shown inside a view. */
export function errorNotice(err) {
  return h("p", { class: "notice notice-error", role: "alert" }, "Error: " + (err.message || err));
}

/** Replace the children of `el` (arrays are flattened, null/false skipped). */
export function fill(el, ...children) {
  clear(el);
  appendChildren(el, children);
  return el;
}

/** Run `fn` once, `wait` ms after the first call since it last ran: batches bursts
 * without starving under a steady stream (unlike a debounce). */
export function batch(fn, wait) {
  let timer = null;
  const wrapped = () => {
    if (timer !== null) return;
    timer = setTimeout(() => {
      timer = null;
      fn();
    }, wait);
  };
  wrapped.cancel = () => {
    if (timer !== null) clearTimeout(timer);
    timer = null;
  };
  return wrapped;
}
