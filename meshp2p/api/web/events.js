// The node's live state from `GET /api/events` (protocols/console-events.md): a snapshot, then one event per
// change. The browser reconnects by itself (with Last-Event-ID); a `reset` means: forget what you knew.

// `hardware` (the status's readings of this machine) is followed when the stream carries it; until then the page
// reads it once from `/api/status` (`seed`), and shows when it was sampled.
export const STATE_TYPES = ["node", "view", "demand", "models", "splits", "hardware"];

/** What the page knows of the node; each field is the last value of its event type (null: not yet known). */
export function emptyState() {
  return {
    node: null, view: null, demand: { demand: {}, wanted: [] }, models: [], splits: { splits: [], rpc_worker: null },
    hardware: null,
  };
}

/**
 * Follow the node. `on.change(state, type)` after every state event, `on.reset()` before the fresh snapshot,
 * `on.post(post)` and `on.log(line)` for history events, `on.connection(state)` with "live", "reconnecting" or
 * "closed" (the stream was refused: the browser will not retry).
 */
export function follow(on, url = "/api/events") {
  let state = emptyState();
  const source = new EventSource(url);
  const parse = (event) => {
    try {
      return JSON.parse(event.data);
    } catch {
      return undefined;
    }
  };
  for (const type of STATE_TYPES) {
    source.addEventListener(type, (event) => {
      const data = parse(event);
      if (data === undefined) return;
      state = { ...state, [type]: data };
      on.change(state, type);
    });
  }
  source.addEventListener("reset", () => {
    state = emptyState();
    on.reset?.();
  });
  source.addEventListener("blackboard", (event) => {
    const post = parse(event);
    if (post) on.post?.(post);
  });
  source.addEventListener("log", (event) => {
    const line = parse(event);
    if (line) on.log?.(line);
  });
  source.addEventListener("open", () => on.connection?.("live"));
  source.addEventListener("error", () => {
    on.connection?.(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
  });
  /** Fill what no event has told yet (the hardware readings of a node whose stream does not carry them). */
  function seed(values) {
    const missing = Object.entries(values).filter(([type, value]) => value != null && state[type] == null);
    if (!missing.length) return;
    state = { ...state, ...Object.fromEntries(missing) };
    on.change(state, "seed");
  }
  return { source, current: () => state, seed };
}
