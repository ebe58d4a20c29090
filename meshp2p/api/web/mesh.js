// The mesh card: name (or "private"), region, counts, join addresses, members, and the invite token to share.

import { apiKey, postJSON } from "./api.js";
import { $, fill, h, megabytes, shortId } from "./dom.js";

function facts(view, node) {
  if (!view) return [["mesh", node?.role === "idle" ? "none: no node runs here" : "none (--solo)"],
    ["API", node?.api_url ?? "–"]];
  return [
    ["mesh", view.name ?? "private"],
    ["mesh id", `${view.mesh_id.slice(0, 12)}…`],
    ["region", view.region ?? "–"],
    ["nodes", `${view.nodes} serving · ${view.clients} client${view.clients === 1 ? "" : "s"}`],
    ["capacity", megabytes(view.capacity_mb)],
    ["this node", shortId(view.peer_id)],
    ["API", node?.api_url ?? "–"],
  ];
}

export function initMesh() {
  const box = $("invite"), field = $("invite-token"), note = $("invite-note");
  let asked = null; // the mesh id an invite was asked for, so it is asked once per mesh (and again after a key)

  $("invite-copy").addEventListener("click", async () => {
    if (!field.value) return;
    try {
      await navigator.clipboard.writeText(field.value);
    } catch {
      field.select();
      document.execCommand("copy");
    }
    note.textContent = "Copied.";
  });

  async function invite(view) {
    if (!view) {
      box.hidden = true;
      return;
    }
    box.hidden = false;
    if (!view.private) {
      box.querySelector("label").textContent = "Join command";
      field.value = `meshp2p up --mesh-name ${view.name}`;
      note.textContent = "A named mesh is public: anyone can join it by its name.";
      return;
    }
    box.querySelector("label").textContent = "Invite token";
    if (asked === view.mesh_id) return;
    asked = view.mesh_id;
    try {
      const { token } = await postJSON("/api/invite");
      field.value = token;
      note.textContent = "Others join with: meshp2p up --join <token>";
    } catch (error) {
      asked = null;
      field.value = "";
      note.textContent = error.status === 401 && !apiKey.get() ? "Save an API key above to see the invite token."
        : error.message;
    }
  }

  return {
    render(state) {
      const view = state.view;
      fill($("mesh-facts"), facts(view, state.node).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
      const addrs = view?.addrs ?? [];
      const members = view?.members ?? [];
      $("addrs-count").textContent = `(${addrs.length})`;
      $("members-count").textContent = `(${members.length})`;
      fill($("addrs"), addrs.map((a) => h("li", {}, a)));
      fill($("members"), members.map((m) => h("li", {}, m)));
      invite(view);
    },
    forget() {
      asked = null;
    },
  };
}
