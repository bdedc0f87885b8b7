// The demo page's buttons: POST demo/<kind>, then link to the new task. URLs are
// relative to the page, so that the demo also works below a root path.
const result = document.getElementById("demo-result");

function show(kind, data) {
  result.textContent = "";
  const ids = data.task_ids || [data.task_id];
  result.append("Queued " + kind + ": ");
  const link = document.createElement("a");
  link.href = "tasks/dashboard#/tasks/" + encodeURIComponent(ids[0]);
  link.textContent = ids.length > 1 ? ids.length + " tasks" : ids[0];
  result.append(link);
}

for (const button of document.querySelectorAll("button[data-demo]")) {
  button.addEventListener("click", async () => {
    const kind = button.dataset.demo;
    button.disabled = true;
    try {
      const res = await fetch("demo/" + encodeURIComponent(kind), { method: "POST" });
      if (!res.ok) throw new Error("HTTP " + res.status);
      show(kind, await res.json());
    } catch (err) {
      result.textContent = "Could not queue " + kind + ": " + err.message;
    } finally {
      button.disabled = false;
    }
  });
}
