// Velo dashboard: the few things a server-rendered page cannot do alone.
// Loaded as a file (the Content-Security-Policy forbids inline script).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  tailLogs();
  revealSecrets();
  confirmDelete();
  copyButtons();
});

// tailLogs streams new log lines (Server-Sent Events from the REST API,
// authenticated by the session cookie) into the log list.
function tailLogs() {
  const list = document.getElementById("log");
  const state = document.getElementById("log-state");
  if (!list || !window.EventSource) {
    if (state) state.textContent = "";
    return;
  }
  let last = Number(list.dataset.last || 0);
  const es = new EventSource(list.dataset.stream);
  es.onopen = () => { state.textContent = "live"; };
  // The server ends the stream when the session ends or access is gone;
  // the reconnect is then refused and the browser gives up (CLOSED).
  es.onerror = () => {
    state.textContent = es.readyState === EventSource.CLOSED ? "stopped: reload the page" : "reconnecting…";
  };
  es.onmessage = (ev) => {
    let line;
    try { line = JSON.parse(ev.data); } catch { return; }
    if (line.id <= last) return; // already on the page
    last = line.id;
    const stick = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
    const empty = list.querySelector(".empty");
    if (empty) empty.remove();
    const li = document.createElement("li");
    li.className = "log-" + line.stream;
    const time = document.createElement("time");
    time.dateTime = line.time;
    const at = new Date(line.time).toISOString();
    time.textContent = at.slice(11, 19);
    time.title = at.slice(0, 19).replace("T", " ") + " UTC";
    const text = document.createElement("span");
    text.className = "line";
    text.textContent = line.line; // text, never markup
    li.append(time, " ", text);
    list.append(li);
    while (list.children.length > 1000) list.firstElementChild.remove();
    if (stick) list.scrollTop = list.scrollHeight;
  };
}

// revealSecrets toggles an environment variable's value.
function revealSecrets() {
  for (const btn of document.querySelectorAll("button.reveal")) {
    btn.addEventListener("click", () => {
      const dd = btn.closest("dd");
      const secret = dd.querySelector(".secret");
      const mask = dd.querySelector(".masked");
      const show = secret.hidden;
      secret.hidden = !show;
      mask.hidden = show;
      btn.textContent = show ? "Hide" : "Reveal";
      btn.setAttribute("aria-pressed", String(show));
    });
  }
}

// confirmDelete enables the delete button only once the name is typed.
function confirmDelete() {
  const input = document.getElementById("confirm");
  const btn = document.getElementById("delete");
  if (!input || !btn) return;
  const sync = () => { btn.disabled = input.value !== input.dataset.name; };
  input.addEventListener("input", sync);
  sync();
}

function copyButtons() {
  for (const btn of document.querySelectorAll("button.copy")) {
    btn.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(btn.dataset.copy);
        btn.textContent = "Copied";
      } catch {
        btn.textContent = "Select and copy";
      }
      setTimeout(() => { btn.textContent = "Copy"; }, 2000);
    });
  }
}
