// Recent log lines (`GET /api/logs`, then `log` events) and the refusals the node counted (`mesh.rejected`, which
// holds the blackboard's as "blackboard:<reason>").

import { getJSON } from "./api.js";
import { $, clock, h } from "./dom.js";

const KEEP_LINES = 200;

function line(entry) {
  const level = String(entry.level || "INFO").toUpperCase();
  return h("li", { class: `level-${level.toLowerCase()}` },
    h("time", { class: "muted" }, entry.time ? clock(entry.time) : ""), " ",
    h("span", { class: "level" }, level.padEnd(7)), " ",
    h("span", { class: "muted" }, entry.logger || ""), " ",
    h("span", {}, entry.message ?? ""));
}

export function initLogs() {
  const list = $("log");
  // Live lines that arrive while the history loads wait here (null: none loading).
  let pending = null;

  function add(entry) {
    list.append(line(entry));
    while (list.children.length > KEEP_LINES) list.firstElementChild.remove();
    list.scrollTop = list.scrollHeight;
  }

  async function load() {
    pending = [];
    let lines = [];
    try {
      const body = await getJSON(`/api/logs?limit=${KEEP_LINES}`);
      lines = Array.isArray(body) ? body : body.lines || body.logs || body.records || [];
      list.replaceChildren();
    } catch (error) {
      list.replaceChildren(h("li", { class: "muted" }, `no log history: ${error.message}`));
    }
    lines.forEach(add);
    const known = new Set(lines.map((l) => `${l.time} ${l.message}`));
    for (const entry of pending) if (!known.has(`${entry.time} ${entry.message}`)) add(entry);
    pending = null;
  }

  return { load, added: (entry) => (pending ? pending.push(entry) : add(entry)) };
}

export function renderRejections(view) {
  const counts = Object.entries(view?.rejected || {}).sort((a, b) => b[1] - a[1]);
  const box = $("rejected");
  if (!counts.length) {
    box.replaceChildren(h("p", { class: "muted small" }, "No refusals counted since the node started."));
    return;
  }
  box.replaceChildren(h("p", { class: "small" }, "Refused since start:"),
    h("ul", { class: "chips" }, counts.map(([what, n]) => h("li", { class: "chip wanted", title: what }, `${what} × ${n}`))));
}
