// Models: what the mesh serves and wants, the demand for each, who serves it, and splits by their layer ranges.

import { postJSON } from "./api.js";
import { $, fill, h, shortId } from "./dom.js";
import { nodesOf } from "./topology.js";

/** Every model the page can name: served in the mesh, wanted, in demand, or this node's own. */
export function modelIds(state) {
  const ids = new Set([...(state.view?.served || []), ...(state.demand.wanted || []),
    ...Object.keys(state.demand.demand || {}), ...state.models.map((m) => m.id)]);
  return [...ids].sort();
}

/** The models a chat can use now: served in the mesh, or ready here. */
export function chatModels(state) {
  const ready = state.models.filter((m) => m.state === "ready" && !m.embeddings).map((m) => m.id);
  const embeddings = new Set(state.models.filter((m) => m.embeddings).map((m) => m.id));
  return [...new Set([...(state.view?.served || []), ...ready])].filter((id) => !embeddings.has(id)).sort();
}

function row(id, state, nodes) {
  const servers = nodes.filter((n) => (n.loaded || []).includes(id));
  const loading = nodes.filter((n) => (n.loading || []).includes(id));
  const own = state.models.find((m) => m.id === id);
  const wanted = (state.demand.wanted || []).includes(id);
  const rate = state.demand.demand?.[id];
  const who = (n) => (n.self ? "this node" : shortId(n.peer_id));
  let status = servers.length ? "served" : loading.length ? "loading" : wanted ? "wanted" : "offered";
  if (own && own.state !== "ready" && !servers.length) status = own.state;
  return h("li", { class: "model", data: { model: id, status } },
    h("div", { class: "model-head" },
      h("strong", {}, id),
      h("span", { class: `chip ${status}` }, status),
      rate != null && h("span", { class: "muted small" }, `${rate.toFixed(rate < 10 ? 1 : 0)} req/min`),
      own && h("button", { type: "button", class: "ghost small drop", "aria-label": `Drop ${id} from this node`,
        onclick: (event) => drop(id, event.currentTarget) }, "Drop")),
    h("p", { class: "muted small" },
      servers.length ? `served by ${servers.map(who).join(", ")}` : wanted ? "asked for; nobody serves it yet" : "",
      loading.length ? ` · loading on ${loading.map(who).join(", ")}` : "",
      own && own.state !== "ready" && own.load_progress ? ` · ${Math.round(own.load_progress * 100)}% loaded` : "",
      own?.last_error ? h("span", { class: "error" }, ` · ${own.last_error}`) : ""));
}

/** Stop serving a model here (the console's POST /api/models/ID/drop: this machine only, with a key when keys are
 * on). The `models` event that follows redraws the list; a refusal is shown in the row. */
async function drop(id, button) {
  if (!confirm(`Stop serving ${id} on this node? Its llama-server is stopped; the mesh routes to other nodes.`)) return;
  button.disabled = true;
  try {
    await postJSON(`/api/models/${encodeURIComponent(id)}/drop`);
  } catch (error) {
    button.disabled = false;
    button.after(h("span", { class: "error small", role: "alert" }, ` ${error.message}`));
  }
}

function split(item) {
  const plan = item.plan || [];
  const total = plan.reduce((n, shard) => Math.max(n, shard.last_layer + 1), 0) || 1;
  return h("div", { class: "split", data: { model: item.model } },
    h("p", {}, h("strong", {}, item.model), h("span", { class: "muted small" }, plan.length ? ` split over ${plan.length} nodes` : " not split")),
    plan.length ? h("ol", { class: "layers", "aria-label": `layers of ${item.model}` },
      plan.map((shard) => h("li", {
        data: { share: ((shard.last_layer - shard.first_layer + 1) / total).toFixed(4) },
        title: `${shard.peer_id}: layers ${shard.first_layer}–${shard.last_layer}`,
      }, `${shortId(shard.peer_id)} · layers ${shard.first_layer}–${shard.last_layer}`))) : null,
    item.last_error && h("p", { class: "error small" }, item.last_error));
}

/** A `--moe shard` group: each member's experts per layer and its share of the router's traffic. */
function shardGroup(group) {
  const members = group.members || [];
  return h("div", { class: "split", data: { model: group.model } },
    h("p", {}, h("strong", {}, group.model),
      h("span", { class: "muted small" }, ` in ${members.length} expert shard${members.length === 1 ? "" : "s"}` +
        (group.calibration ? ` · usage by ${group.calibration}` : " · calibrating"))),
    members.length ? h("ol", { class: "layers", "aria-label": `expert shards of ${group.model}` },
      members.map((m) => h("li", {
        data: { share: Math.max(0.05, m.traffic_share || 0).toFixed(4) },
        title: `${m.peer_id}: ${m.experts_per_layer} experts a layer, ${Math.round((m.traffic_share || 0) * 100)}% of router traffic`,
      }, `${shortId(m.peer_id)} · ${m.experts_per_layer} experts · ${Math.round((m.traffic_share || 0) * 100)}%`))) : null,
    group.last_error && h("p", { class: "error small" }, group.last_error));
}

export function renderModels(state) {
  const nodes = nodesOf(state);
  const ids = modelIds(state);
  fill($("models"), ids.length ? ids.map((id) => row(id, state, nodes)) : [h("li", { class: "muted" }, "no models in the mesh yet")]);
  const splits = state.splits.splits || [];
  const shards = state.splits.moe_shards || [];
  fill($("splits"), [
    ...(splits.length ? [h("h3", {}, "Splits"), ...splits.map(split)] : []),
    ...(shards.length ? [h("h3", {}, "Expert shards"), ...shards.map(shardGroup)] : []),
  ]);
  for (const li of $("splits").querySelectorAll(".layers li")) li.style.flexGrow = li.dataset.share;
}
