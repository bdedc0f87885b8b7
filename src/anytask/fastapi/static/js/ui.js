// Shared widgets: the confirmation <dialog> and a toast line.

/**
 * Show the modal confirmation dialog; resolves true when the user confirms.
 * `body` is a Node (built with h()), never HTML text.
 */
export function confirmDialog({
  title,
  body,
  okLabel = "Confirm",
  danger = false,
  okDisabled = false,
}) {
  const dialog = document.getElementById("confirm");
  const ok = document.getElementById("confirm-ok");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-body").replaceChildren(body);
  ok.textContent = okLabel;
  ok.disabled = okDisabled;
  ok.classList.toggle("btn-danger", danger);
  ok.classList.toggle("btn-primary", !danger);
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    (okDisabled ? document.getElementById("confirm-cancel") : ok).focus();
  });
}

let toastTimer = null;

export function toast(message, kind = "info") {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.className = "toast toast-" + kind;
  box.hidden = false;
  if (toastTimer !== null) clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    box.hidden = true;
    toastTimer = null;
  }, 5000);
}
