// The job page: copy the prompt, press a button (re-roll, U, V; Remix ones with the edited prompt), and follow a
// running job's progress (SSE).
(function () {
  "use strict";
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const article = document.querySelector("article.job");
  const message = document.getElementById("message");
  const jobId = article.dataset.job;

  const copy = document.getElementById("copy");
  copy.addEventListener("click", async function () {
    try {
      await navigator.clipboard.writeText(copy.dataset.copy);
      copy.textContent = "Copied";
    } catch (err) {
      copy.textContent = "Copy failed";
    }
  });

  async function press(event, prompt) {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    button.disabled = true;
    const body = new URLSearchParams({ action: button.dataset.action, index: button.dataset.index });
    if (prompt !== null) body.set("prompt", prompt);
    const response = await fetch("/jobs/" + jobId + "/action", {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "Accept": "application/json" },
    });
    const answer = await response.json();
    button.disabled = false;
    if (response.ok) window.location.assign(answer.url);
    else message.textContent = answer.error;
  }

  const actions = document.getElementById("actions");
  if (actions) actions.addEventListener("click", function (event) { press(event, null); });
  const remix = document.getElementById("remix-actions");
  if (remix) {
    const prompt = document.getElementById("remix-prompt");
    remix.addEventListener("click", function (event) { press(event, prompt.value); });
  }

  if (article.dataset.state === "queued" || article.dataset.state === "running") {
    const text = document.getElementById("progress-text");
    const bar = document.getElementById("progress");
    const source = new EventSource("/jobs/" + jobId + "/events");
    source.addEventListener("progress", function (event) {
      const data = JSON.parse(event.data);
      text.textContent = data.total ? data.state + ", step " + data.step + " of " + data.total : data.state;
      if (data.total) bar.value = data.step / data.total;
    });
    source.addEventListener("outcome", function () {
      source.close();
      window.location.reload();
    });
  }
})();
