// Dashboard shell: hash router, live event stream, connection indicator, nav.
import { getSession, logout, prefix, redirectToLogin } from "./api.js";
import { clear, errorNotice, h } from "./dom.js";
import { toast } from "./ui.js";
import * as deadView from "./views/dead.js";
import * as detailView from "./views/detail.js";
import * as metricsView from "./views/metrics.js";
import * as schedulesView from "./views/schedules.js";
import * as tasksView from "./views/tasks.js";

const container = document.getElementById("view");
const conn = document.getElementById("conn");
const nav = document.getElementById("nav");
const navToggle = document.getElementById("nav-toggle");

let current = null; // {route, view}

/** A part of the address as written when it is not valid percent-encoding ("%E0"):
 * decodeURIComponent throws on it, which would stop the router (and the page's start-up). */
function decodePart(part) {
  try {
    return decodeURIComponent(part);
  } catch (_err) {
    return part;
  }
}

export function parseHash(hash = location.hash) {
  const raw = hash.replace(/^#\/?/, "");
  const [pathPart, queryPart = ""] = raw.split("?");
  const parts = pathPart.split("/").filter(Boolean).map(decodePart);
  return { parts, params: new URLSearchParams(queryPart) };
}

function resolve({ parts, params }) {
  const [first = "tasks", second] = parts;
  if (first === "tasks" && second) return { name: "tasks", module: detailView, id: second, params };
  if (first === "tasks") return { name: "tasks", module: tasksView, params };
  if (first === "dead") return { name: "dead", module: deadView, params };
  if (first === "metrics") return { name: "metrics", module: metricsView, params };
  if (first === "schedules") return { name: "schedules", module: schedulesView, params };
  return null;
}

function setActiveNav(name) {
  for (const link of nav.querySelectorAll("a[data-route]")) {
    if (link.dataset.route === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function closeNav() {
  nav.classList.remove("open");
  navToggle.setAttribute("aria-expanded", "false");
}

function route() {
  if (current && current.view.destroy) current.view.destroy();
  current = null;
  closeNav();
  const target = resolve(parseHash());
  clear(container);
  if (!target) {
    setActiveNav(null);
    container.append(
      h("h1", null, "Not found"),
      h("p", null, h("a", { href: "#/tasks" }, "Back to the task list")),
    );
    return;
  }
  setActiveNav(target.name);
  try {
    const view = target.module.mount(container, { id: target.id, params: target.params });
    current = { target, view };
  } catch (err) {
    container.append(errorNotice(err));
  }
}

// ---- live events -------------------------------------------------------------------

let source = null;
let everOpened = false;
let retryDelay = 1000;
let retryTimer = null;

function setConn(state, label) {
  conn.className = "conn conn-" + state;
  conn.textContent = label || state;
  document.documentElement.dataset.conn = state;
}

function dispatch(message) {
  let event;
  try {
    event = JSON.parse(message.data);
  } catch (_err) {
    return;
  }
  if (!current || !current.view) return;
  if (event.kind === "overflow") {
    if (current.view.reload) current.view.reload();
  } else if (current.view.onEvent) {
    current.view.onEvent(event);
  }
}

async function onStreamClosed() {
  // EventSource gives up on HTTP errors (e.g. 401): check the session, then retry.
  try {
    const session = await getSession(true);
    if (session.auth && !session.user) {
      redirectToLogin();
      return;
    }
  } catch (_err) {
    // server unreachable: keep retrying
  }
  retryTimer = setTimeout(connect, retryDelay);
  retryDelay = Math.min(retryDelay * 2, 30000);
}

function connect() {
  retryTimer = null;
  if (source) source.close();
  setConn(everOpened ? "reconnecting" : "connecting");
  source = new EventSource(prefix + "/api/events");
  source.addEventListener("open", () => {
    setConn("live");
    retryDelay = 1000;
    // Anything may have changed before the stream (re)opened: reload what is shown.
    if (current && current.view.reload) current.view.reload();
    everOpened = true;
  });
  source.addEventListener("task", dispatch);
  source.addEventListener("message", dispatch);
  source.addEventListener("error", () => {
    setConn("reconnecting");
    if (source.readyState === EventSource.CLOSED && retryTimer === null) onStreamClosed();
  });
}

// ---- start-up ------------------------------------------------------------------------

navToggle.addEventListener("click", () => {
  const open = !nav.classList.contains("open");
  nav.classList.toggle("open", open);
  navToggle.setAttribute("aria-expanded", String(open));
});

document.getElementById("logout").addEventListener("click", () => {
  logout().catch((err) => toast("Log out failed: " + err.message, "error"));
});

async function start() {
  try {
    const session = await getSession();
    if (session.auth && !session.user) {
      redirectToLogin();
      return;
    }
    if (session.user) {
      const user = document.getElementById("user");
      user.textContent = session.user;
      user.hidden = false;
      document.getElementById("logout").hidden = false;
    }
  } catch (err) {
    toast("Could not read the session: " + err.message, "error");
  }
  if (!location.hash || location.hash === "#" || location.hash === "#/") {
    history.replaceState(null, "", "#/tasks");
  }
  window.addEventListener("hashchange", route);
  route();
  connect();
}

start();
