// The keys page: copy a new key to the clipboard (the page shows it once). Plain JS; no inline handlers (CSP).
"use strict";

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  const state = document.getElementById("copy-state");
  if (!source) return;
  try {
    await navigator.clipboard.writeText(source.textContent.trim());
    if (state) state.textContent = "Copied.";
  } catch (err) {
    // No clipboard (plain http, or permission refused): select the text so Ctrl+C copies it.
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    if (state) state.textContent = "Selected: press Ctrl+C to copy.";
  }
});
