// Login page: fetch a CSRF token, post the form, show errors, keep `next`.
import { prefix, safeNext } from "./api.js";

const form = document.getElementById("login-form");
const errorBox = document.getElementById("login-error");
const submit = document.getElementById("login-submit");
const params = new URLSearchParams(location.search);
// The server redirect keeps the dashboard's #/route in our own fragment: carry it on.
const next = withHash(safeNext(params.get("next")));

function withHash(target) {
  if (!target || target.includes("#") || !location.hash) return target;
  return target + location.hash;
}

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
}

async function loadToken() {
  try {
    const res = await fetch(prefix + "/api/session", {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (!res.ok) throw new Error("HTTP " + res.status);
    const session = await res.json();
    document.getElementById("csrf_token").value = session.csrf_token || "";
    if (session.user || session.auth === false) {
      // Already signed in, or no login needed: go straight on.
      location.replace(next || prefix + "/dashboard");
    }
  } catch (err) {
    showError("Could not reach the server (" + err.message + ").");
  }
}

form.action = prefix + "/login" + (next ? "?next=" + encodeURIComponent(next) : "");
document.getElementById("next").value = next || "";
if (params.get("error") === "1") showError("Wrong username or password.");
if (params.get("error") === "throttled")
  showError("Too many attempts. Wait a moment and try again.");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  errorBox.hidden = true;
  submit.disabled = true;
  try {
    const res = await fetch(form.action, {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      credentials: "same-origin",
      redirect: "manual",
      headers: { Accept: "application/json" },
    });
    if (res.type === "opaqueredirect" || res.ok) {
      location.assign(next || prefix + "/dashboard");
      return;
    }
    if (res.status === 401) showError("Wrong username or password.");
    else if (res.status === 429) showError("Too many attempts. Wait a moment and try again.");
    else if (res.status === 403) showError("The form expired. Please try again.");
    else showError("Sign-in failed (HTTP " + res.status + ").");
    await loadToken();
    document.getElementById("password").select();
  } catch (err) {
    showError("Could not reach the server (" + err.message + ").");
  } finally {
    submit.disabled = false;
  }
});

loadToken();
