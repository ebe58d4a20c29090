// The node's two HTTP APIs: the console on this page's origin, the model API on the port `node.api_url` names.

const KEY_STORAGE = "meshp2p.apiKey";

export const apiKey = {
  get: () => localStorage.getItem(KEY_STORAGE) || "",
  set: (key) => localStorage.setItem(KEY_STORAGE, key.trim()),
  forget: () => localStorage.removeItem(KEY_STORAGE),
};

/** The Bearer header while a key is stored (the model API, and the console's write endpoints when keys are on). */
export function authHeaders() {
  const key = apiKey.get();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** An error answer of either API, with its message (and hint) as the user should read it. */
export class ApiError extends Error {
  constructor(status, message, hint) {
    super(hint ? `${message} (${hint})` : message);
    this.status = status;
  }
}

/** The error in a body of the API's one shape ({"error": {"message", "hint"}}), or Anthropic's, or plain text. */
export function errorFrom(status, body) {
  const error = body && typeof body === "object" ? body.error : null;
  if (error && typeof error === "object" && error.message) return new ApiError(status, error.message, error.hint);
  if (typeof error === "string") return new ApiError(status, error);
  return new ApiError(status, `the node answered ${status}`);
}

async function answer(response) {
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = { error: text.slice(0, 300) };
  }
  if (!response.ok) throw errorFrom(response.status, body);
  return body;
}

/** GET a console path (this origin). */
export async function getJSON(path) {
  return answer(await fetch(path, { headers: { Accept: "application/json" } }));
}

/** POST JSON to a console path, with the key when one is stored. */
export async function postJSON(path, body = {}) {
  const headers = { "Content-Type": "application/json", Accept: "application/json", ...authHeaders() };
  return answer(await fetch(path, { method: "POST", headers, body: JSON.stringify(body) }));
}

/** The model API as this browser reaches it: the page's host (it may be another machine), the API's port. */
export function apiBase(node) {
  const url = new URL(node.api_url);
  const host = location.hostname.includes(":") && !location.hostname.startsWith("[")
    ? `[${location.hostname}]` : location.hostname;
  return `${location.protocol}//${host}:${url.port || 80}${url.pathname.replace(/\/$/, "")}`;
}
