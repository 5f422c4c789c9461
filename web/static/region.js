// The Vary (Region) editor: draw rectangles or freehand strokes over the image; the mask (white: repaint) is sent
// as a PNG of the image's own size, with the prompt.
(function () {
  "use strict";
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const editor = document.querySelector(".editor");
  const canvas = document.getElementById("mask");
  const ctx = canvas.getContext("2d");
  const message = document.getElementById("message");
  const brush = document.getElementById("brush");
  let start = null;
  let snapshot = null;

  function tool() { return document.querySelector('input[name="tool"]:checked').value; }
  function point(event) {
    const box = canvas.getBoundingClientRect();
    return { x: (event.clientX - box.left) * canvas.width / box.width,
             y: (event.clientY - box.top) * canvas.height / box.height };
  }
  ctx.fillStyle = ctx.strokeStyle = "rgba(255, 255, 255, 1)";
  ctx.lineCap = ctx.lineJoin = "round";

  canvas.addEventListener("pointerdown", function (event) {
    canvas.setPointerCapture(event.pointerId);
    start = point(event);
    snapshot = ctx.getImageData(0, 0, canvas.width, canvas.height);
    if (tool() === "free") {
      ctx.lineWidth = Number(brush.value) * canvas.width / 512;  // the brush is sized for a 512-pixel image
      ctx.beginPath();
      ctx.moveTo(start.x, start.y);
    }
  });
  canvas.addEventListener("pointermove", function (event) {
    if (!start) return;
    const p = point(event);
    if (tool() === "free") {
      ctx.lineTo(p.x, p.y);
      ctx.stroke();
    } else {
      ctx.putImageData(snapshot, 0, 0);
      ctx.fillRect(Math.min(start.x, p.x), Math.min(start.y, p.y), Math.abs(p.x - start.x), Math.abs(p.y - start.y));
    }
  });
  canvas.addEventListener("pointerup", function () { start = null; });
  document.getElementById("clear").addEventListener("click", function () {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
  });

  document.getElementById("region-form").addEventListener("submit", async function (event) {
    event.preventDefault();
    const body = new URLSearchParams({
      index: editor.dataset.index,
      prompt: document.getElementById("region-prompt").value,
      mask: canvas.toDataURL("image/png"),
    });
    const response = await fetch("/jobs/" + editor.dataset.job + "/region", {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "Accept": "application/json" },
    });
    const answer = await response.json();
    if (response.ok) window.location.assign(answer.url);
    else message.textContent = answer.error;
  });
})();
