// preprocess serve: the item page's comparer ("Compare at 100%"). Without this script the two
// crops stand side by side; with it, a slider (drag, or the arrow keys) or flicker (every 0.6 s;
// hold the mouse on it to stop) shows them in one place, pixel over pixel. No inline code: the
// Content-Security-Policy allows scripts from this server only.
"use strict";
(function () {
  const root = document.getElementById("comparer");
  if (!root) return;
  const modes = root.querySelector(".modes");
  const split = root.querySelector(".split");
  const b = root.querySelector(".view.b img");
  const stage = root.querySelector(".stage");
  let timer = null;
  let held = false;

  function clip() {
    const v = Number(split.value);
    b.style.clipPath = root.dataset.mode === "slider" ? "inset(0 0 0 " + v + "%)" : "";
  }

  function setMode(mode) {
    root.dataset.mode = mode;
    for (const button of modes.querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(button.dataset.mode === mode));
    }
    split.hidden = mode !== "slider";
    if (timer) { clearInterval(timer); timer = null; }
    root.classList.remove("showing-a");
    if (mode === "flicker") {
      timer = setInterval(function () { if (!held) root.classList.toggle("showing-a"); }, 600);
    }
    clip();
  }

  modes.hidden = false;
  for (const button of modes.querySelectorAll("button")) {
    button.addEventListener("click", function () { setMode(button.dataset.mode); });
  }
  split.addEventListener("input", clip);
  stage.addEventListener("mousedown", function (e) { held = true; e.preventDefault(); });
  document.addEventListener("mouseup", function () { held = false; });
  stage.addEventListener("mousemove", function (e) {
    if (root.dataset.mode !== "slider" || e.buttons !== 1) return;
    const box = b.getBoundingClientRect();
    split.value = String(Math.round(100 * Math.min(1, Math.max(0, (e.clientX - box.left) / box.width))));
    clip();
  });
  setMode(root.dataset.mode || "side");
})();
