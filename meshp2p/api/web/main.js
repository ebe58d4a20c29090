// The console page: follows the node's events and hands each change to the module that shows it.

import { apiKey, getJSON } from "./api.js";
import { initBlackboard } from "./blackboard.js";
import { initChat } from "./chat.js";
import { $, fill, h } from "./dom.js";
import { follow } from "./events.js";
import { initLogs, renderRejections } from "./logs.js";
import { initMesh } from "./mesh.js";
import { renderModels } from "./models.js";
import { renderTopology } from "./topology.js";

const CONNECTION_TEXT = { live: "live", reconnecting: "reconnecting…", closed: "disconnected" };

const mesh = initMesh();
const board = initBlackboard();
const logs = initLogs();
let renderPicker = () => {};
let frame = 0;
let stream = null;

/** One render per animation frame, however many events came in it (a snapshot is five). */
function schedule() {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    const state = stream.current();
    if (!state.node) return;
    $("node-version").textContent = `v${state.node.version} · ${state.node.role}`;
    renderIdle(state.node);
    keyBar(state.node.api_keys);
    mesh.render(state);
    renderTopology(state);
    renderModels(state);
    renderPicker(state);
    renderRejections(state.view);
  });
}

/** `meshp2p` with no command serves this page with no node behind it: say what to run instead. */
function renderIdle(node) {
  const idle = node.role === "idle";
  $("idle").hidden = !idle;
  if (!idle) return;
  fill($("idle-steps"), (node.next_steps || []).map((step) =>
    h("li", {}, h("code", { text: step.command }), h("span", { class: "muted", text: ` ${step.what}` }))));
}

function keyBar(keysOn) {
  const open = $("key-open");
  open.hidden = !keysOn;
  open.textContent = apiKey.get() ? "API key ✓" : "API key";
  if (keysOn && !apiKey.get() && !$("key-form").dataset.dismissed) $("key-form").hidden = false;
}

$("key-open").addEventListener("click", () => {
  $("key-form").hidden = !$("key-form").hidden;
});
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("key-input").value;
  if (!key.trim()) return;
  apiKey.set(key);
  $("key-input").value = "";
  $("key-form").hidden = true;
  $("key-form").dataset.dismissed = "1";
  mesh.forget();
  schedule();
});
$("key-forget").addEventListener("click", () => {
  apiKey.forget();
  mesh.forget();
  schedule();
});

stream = follow({
  change: schedule,
  reset() {
    mesh.forget();
    board.loadFeed();
    logs.load();
  },
  post: board.added,
  log: logs.added,
  connection(state) {
    const pill = $("connection");
    pill.dataset.state = state;
    pill.textContent = CONNECTION_TEXT[state];
  },
});
renderPicker = initChat(stream.current);
board.loadFeed();
logs.load();
getJSON("/api/status").then((status) => stream.seed({ hardware: status.hardware }), () => {});
