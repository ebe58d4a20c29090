// Small DOM and formatting helpers. Text from the mesh (posts, log lines, model names) is only ever set as text.

/** An element: h("li", {class: "x", data: {peer: id}, "aria-label": "…"}, "text", child…). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElementNS(tag === "svg" || attrs.svg ? SVG : HTML, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false || name === "svg") continue;
    if (name === "data") for (const [k, v] of Object.entries(value)) el.dataset[k] = v;
    else if (name === "text") el.textContent = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== undefined && child !== null && child !== false) el.append(child);
  }
  return el;
}

/** An SVG element. */
export const s = (tag, attrs = {}, ...children) => h(tag, { ...attrs, svg: true }, ...children);

const HTML = "http://www.w3.org/1999/xhtml";
const SVG = "http://www.w3.org/2000/svg";

export const $ = (id) => document.getElementById(id);

/** PeerIDs all start alike ("12D3KooW…"): their tail tells them apart. */
export const shortId = (peerId) => (peerId && peerId.length > 10 ? `…${peerId.slice(-8)}` : peerId || "?");

export function megabytes(mb) {
  if (mb >= 1024) return `${(mb / 1024).toFixed(mb >= 10240 ? 0 : 1)} GB`;
  return `${Math.round(mb)} MB`;
}

/** The size in bytes a content id ("sha256_128:<hex>:<size>") names, or 0. */
export const contentSize = (cid) => Number(String(cid || "").split(":")[2]) || 0;

export function clock(unixSeconds) {
  return new Date(unixSeconds * 1000).toLocaleTimeString([], { hour12: false });
}

/** Replace a list's children, keeping the element (and so its focus and scroll) in place. */
export function fill(el, children) {
  el.replaceChildren(...children);
}
