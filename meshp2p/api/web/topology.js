// The mesh as a map (this node in the middle, members around it, RTT on the links) and as a list of node cards.

import { $, clock, contentSize, fill, h, megabytes, s, shortId } from "./dom.js";

/** Every node to draw: the view's members, or this node alone outside a mesh. */
export function nodesOf(state) {
  const peers = state.view?.peers;
  if (peers?.length) return peers;
  if (!state.node) return [];
  const ready = state.models.filter((m) => m.state === "ready").map((m) => m.id);
  return [{
    peer_id: "this node", self: true, role: state.node.role, region: null, ram_mb: 0, vram_mb: 0, gpu: null,
    loaded: ready, loading: state.models.filter((m) => m.state !== "ready").map((m) => m.id), available: [],
    files: {}, load: 0, rtt_ms: null,
  }];
}

/** Memory the node's models take against what it offers, in MB. */
function memory(peer, state) {
  const offered = peer.vram_mb > 0 ? peer.vram_mb : peer.ram_mb;
  const running = new Set([...(peer.loaded || []), ...(peer.loading || [])]);
  let used = 0;
  if (peer.self && state.models.length) {
    for (const m of state.models) used += m.size_bytes || 0;
  } else {
    for (const id of running) used += contentSize(peer.files?.[id]);
  }
  return { used: used / 2 ** 20, offered };
}

/** What `/api/status`'s `hardware` reads now (this node only: peers do not gossip it), as short facts. */
function readings(hardware) {
  if (!hardware || typeof hardware !== "object") return [];
  const number = (v) => typeof v === "number";
  const facts = (hardware.gpus || []).map((gpu) => {
    const parts = [];
    if (number(gpu.utilization_pct)) parts.push(`${Math.round(gpu.utilization_pct)}%`);
    if (number(gpu.temperature_c)) parts.push(`${Math.round(gpu.temperature_c)} °C`);
    if (number(gpu.vram_used_mb) && number(gpu.vram_total_mb)) {
      parts.push(`${megabytes(gpu.vram_used_mb)} / ${megabytes(gpu.vram_total_mb)}`);
    }
    return parts.length ? `GPU${(hardware.gpus.length > 1) ? ` ${gpu.index}` : ""} ${parts.join(" · ")}` : null;
  });
  if (number(hardware.cpu_pct)) facts.push(`CPU ${Math.round(hardware.cpu_pct)}%`);
  const shown = facts.filter(Boolean);
  if (shown.length && number(hardware.sampled_at)) shown.push(`read ${clock(hardware.sampled_at)}`);
  return shown;
}

function chips(models, kind) {
  return models.map((id) => h("li", { class: `chip ${kind}`, title: `${id}: ${kind}` }, id));
}

function card(peer, state) {
  const { used, offered } = memory(peer, state);
  const loading = peer.loading || [];
  const served = peer.loaded || [];
  const offeredOnly = (peer.available || []).filter((m) => !served.includes(m) && !loading.includes(m));
  const hardware = peer.hardware ?? (peer.self ? state.hardware : null);
  const inFlight = Math.round(peer.load || 0);
  const name = peer.self ? "this node" : shortId(peer.peer_id);
  const facts = [
    peer.region && h("span", { class: "fact" }, `region ${peer.region}`),
    !peer.self && h("span", { class: "fact" }, peer.rtt_ms == null ? "RTT –" : `RTT ${peer.rtt_ms.toFixed(1)} ms`),
    h("span", { class: "fact", data: { inflight: inFlight } }, `${inFlight} in flight`),
    peer.gpu && h("span", { class: "fact" }, peer.gpu),
    ...readings(hardware).map((text) => h("span", { class: "fact gpu", data: { hardware: "" } }, text)),
  ];
  const share = offered > 0 ? Math.min(1, used / offered) : 0;
  return h("li", { class: `node role-${peer.role}`, data: { peer: peer.peer_id, role: peer.role }, "aria-label": `node ${name}` },
    h("div", { class: "node-head" },
      h("span", { class: "dot", "aria-hidden": "true" }),
      h("strong", { class: "mono", title: peer.peer_id }, name),
      peer.self && peer.peer_id !== "this node" && h("span", { class: "badge" }, "you"),
      h("span", { class: "role" }, peer.role)),
    h("div", { class: "node-facts" }, facts),
    (served.length || loading.length || offeredOnly.length)
      ? h("ul", { class: "chips", "aria-label": `models of ${name}` },
        chips(served, "served"), chips(loading, "loading"), chips(offeredOnly, "offered"))
      : h("p", { class: "muted small" }, peer.role === "client" ? "uses the mesh, serves nothing" : "no models"),
    offered > 0 && h("div", { class: "capacity" },
      h("div", { class: "bar", role: "meter", "aria-label": `memory of ${name}`, "aria-valuemin": 0,
        "aria-valuemax": Math.round(offered), "aria-valuenow": Math.round(used) },
      h("span", { class: "fill", data: { share: share.toFixed(3) } })),
      h("span", { class: "muted small" }, `${megabytes(used)} of ${megabytes(offered)}`)));
}

function map(svg, nodes) {
  const cx = 200, cy = 110;
  const self = nodes.find((n) => n.self) || nodes[0];
  const others = nodes.filter((n) => n !== self);
  // Two peers sit left and right of this node, three in a triangle, and so on round the ellipse.
  const start = others.length === 1 ? 0 : -Math.PI / 2 + Math.PI / others.length;
  const spots = others.map((n, i) => {
    const angle = start + (2 * Math.PI * i) / others.length;
    return { n, x: cx + 150 * Math.cos(angle), y: cy + 72 * Math.sin(angle) };
  });
  const dot = (n, x, y) => s("g", { class: `spot role-${n.role}${n === self ? " self" : ""}`,
    transform: `translate(${x.toFixed(1)} ${y.toFixed(1)})` },
  s("title", {}, `${n.peer_id} (${n.role})`),
  s("circle", { r: n === self ? 18 : 12 }),
  n === self ? s("text", { y: 4, "text-anchor": "middle", class: "inside" }, "you")
    : s("text", { y: 26, "text-anchor": "middle" }, shortId(n.peer_id)));
  fill(svg, [
    ...spots.map(({ n, x, y }) => s("g", { class: "link" },
      s("line", { x1: cx, y1: cy, x2: x.toFixed(1), y2: y.toFixed(1) }),
      n.rtt_ms != null && s("text", { x: (cx + (x - cx) * 0.55).toFixed(1), y: (cy + (y - cy) * 0.55 - 5).toFixed(1),
        "text-anchor": "middle" }, `${n.rtt_ms.toFixed(n.rtt_ms < 10 ? 1 : 0)} ms`))),
    ...(self ? [dot(self, cx, cy)] : []),
    ...spots.map(({ n, x, y }) => dot(n, x, y)),
  ]);
  // Frame the drawing (one peer or twenty) at its natural size: no empty half, no giant dots.
  const xs = [cx, ...spots.map((p) => p.x)], ys = [cy, ...spots.map((p) => p.y)];
  const left = Math.min(...xs) - 60, top = Math.min(...ys) - 30;
  const width = Math.max(...xs) + 60 - left, height = Math.max(...ys) + 42 - top;
  svg.setAttribute("viewBox", `${left.toFixed(0)} ${top.toFixed(0)} ${width.toFixed(0)} ${height.toFixed(0)}`);
  svg.setAttribute("width", (width * 1.25).toFixed(0));
  svg.setAttribute("height", (height * 1.25).toFixed(0));
}

export function renderTopology(state) {
  const nodes = nodesOf(state);
  $("topology-count").textContent = nodes.length ? `· ${nodes.length} node${nodes.length === 1 ? "" : "s"}` : "";
  map($("topology-map"), nodes);
  const list = $("topology");
  fill(list, nodes.map((peer) => card(peer, state)));
  // Widths from data attributes: the page's CSP allows no inline style attributes.
  for (const bar of list.querySelectorAll(".fill")) bar.style.width = `${Number(bar.dataset.share) * 100}%`;
}
