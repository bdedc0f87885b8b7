// JSON API client: prefix, session/CSRF, errors, 401 -> login redirect.

function derivePrefix() {
  const meta = document.querySelector('meta[name="anytask-prefix"]');
  if (meta && meta.content) return meta.content.replace(/\/+$/, "");
  const path = location.pathname.replace(/\/+$/, "");
  const match = path.match(/^(.*)\/(dashboard|login)(\.html)?$/);
  return match ? match[1] : path;
}

export const prefix = derivePrefix();

/** A `next` value we are willing to follow: a path under the dashboard's prefix on this
 * site. Resolved the way the browser will resolve it (which drops tabs and newlines, so
 * "/\t/evil.example" would otherwise become "//evil.example"), then checked. */
export function safeNext(value) {
  if (!value || typeof value !== "string") return null;
  let url;
  try {
    url = new URL(value, location.origin);
  } catch (_) {
    return null;
  }
  if (url.origin !== location.origin) return null;
  if (url.pathname !== prefix && !url.pathname.startsWith(prefix + "/")) return null;
  return url.pathname + url.search + url.hash;
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || "HTTP " + status);
    this.status = status;
    this.detail = detail;
  }
}

let session = null;

export function loginUrl() {
  const next = location.pathname + location.search + location.hash;
  return prefix + "/login?next=" + encodeURIComponent(next);
}

export function redirectToLogin() {
  location.assign(loginUrl());
}

export async function getSession(refresh = false) {
  if (session && !refresh) return session;
  const res = await fetch(prefix + "/api/session", {
    credentials: "same-origin",
    headers: { Accept: "application/json" },
  });
  if (!res.ok) throw new ApiError(res.status, "could not read the session");
  session = await res.json();
  return session;
}

function buildQuery(query) {
  if (!query) return "";
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === null || value === "") continue;
    params.set(key, Array.isArray(value) ? value.join(",") : String(value));
  }
  const text = params.toString();
  return text ? "?" + text : "";
}

async function readDetail(res) {
  try {
    const body = await res.json();
    if (body && typeof body.detail === "string") return body.detail;
    if (body && body.detail) return JSON.stringify(body.detail);
  } catch (_err) {
    // not JSON
  }
  return res.statusText || "HTTP " + res.status;
}

/**
 * Call the API: `api("/api/tasks", {query})` or `api("/api/replay", {method: "POST", body})`.
 * Resolves to the parsed JSON; throws ApiError. A 401 sends the browser to the login page.
 */
export async function api(path, { method = "GET", query = null, body = undefined } = {}) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin" };
  if (method !== "GET") {
    const current = await getSession();
    headers["Content-Type"] = "application/json";
    if (current.csrf_token) headers["X-CSRF-Token"] = current.csrf_token;
    init.body = JSON.stringify(body === undefined ? {} : body);
  }
  let res = await fetch(prefix + path + buildQuery(query), init);
  if (res.status === 403 && method !== "GET") {
    // The CSRF token may have rotated: fetch a fresh one and retry once.
    const fresh = await getSession(true);
    if (fresh.csrf_token) headers["X-CSRF-Token"] = fresh.csrf_token;
    res = await fetch(prefix + path + buildQuery(query), init);
  }
  if (res.status === 401) {
    redirectToLogin();
    throw new ApiError(401, "not signed in");
  }
  if (!res.ok) throw new ApiError(res.status, await readDetail(res));
  if (res.status === 204) return null;
  return res.json();
}

export async function logout() {
  const current = await getSession();
  await fetch(prefix + "/logout", {
    method: "POST",
    credentials: "same-origin",
    redirect: "manual",
    headers: { "X-CSRF-Token": current.csrf_token || "", "Content-Type": "application/json" },
    body: "{}",
  });
  location.assign(prefix + "/login");
}
