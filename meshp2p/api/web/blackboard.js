// The blackboard: the feed (history from `/api/blackboard/feed`, new posts from the events stream), a post box
// and search. Posts are other people's text: shown as text, never as markup.

import { getJSON, postJSON } from "./api.js";
import { $, h, shortId } from "./dom.js";

const FEED_LIMIT = 50;

function item(post) {
  const who = post.name ? `${post.name} (${shortId(post.author)})` : shortId(post.author);
  return h("li", { class: "post", data: { id: post.id } },
    h("div", { class: "post-head" },
      h("strong", { title: post.author }, who),
      h("time", { datetime: post.time, class: "muted small" }, new Date(post.ts).toLocaleString())),
    h("p", { class: "text" }, post.text),
    post.tags?.length ? h("ul", { class: "chips", "aria-label": "tags" },
      post.tags.map((tag) => h("li", { class: "chip offered" }, `#${tag}`))) : null);
}

export function initBlackboard() {
  const feed = $("board-feed"), mode = $("board-mode"), note = $("board-note");
  // Every post known, by id: the history and the live ones, whichever came first (a live post may arrive while
  // the history is still loading).
  const known = new Map();
  let searching = false;

  const show = (posts) => {
    feed.replaceChildren(...posts.map(item));
  };
  const newest = () => [...known.values()].sort((a, b) => b.ts - a.ts).slice(0, FEED_LIMIT * 2);

  async function loadFeed() {
    searching = false;
    try {
      const { posts } = await getJSON(`/api/blackboard/feed?limit=${FEED_LIMIT}`);
      for (const post of posts) known.set(post.id, post);
      if (searching) return;
      show(newest());
      mode.textContent = known.size ? "" : "No posts yet.";
    } catch (error) {
      mode.textContent = error.message;
    }
  }

  $("board-post").addEventListener("submit", async (event) => {
    event.preventDefault();
    const box = $("board-text");
    const text = box.value.trim();
    if (!text) return;
    note.textContent = "posting…";
    try {
      const { post, redacted } = await postJSON("/api/blackboard/post", { text });
      box.value = "";
      note.textContent = redacted.length ? `posted (redacted: ${redacted.join(", ")})` : "posted";
      added(post);
    } catch (error) {
      note.textContent = "";
      note.append(h("span", { class: "error", role: "alert" }, error.message));
    }
  });

  $("board-search").addEventListener("submit", async (event) => {
    event.preventDefault();
    const query = $("board-query").value.trim();
    if (!query) return loadFeed();
    try {
      const { posts } = await getJSON(`/api/blackboard/search?q=${encodeURIComponent(query)}&limit=${FEED_LIMIT}`);
      searching = true;
      show(posts);
      mode.replaceChildren(`${posts.length} post${posts.length === 1 ? "" : "s"} match “${query}” · `,
        h("button", { type: "button", class: "link", onclick: () => { $("board-query").value = ""; loadFeed(); } }, "back to the feed"));
    } catch (error) {
      mode.textContent = error.message;
    }
  });
  $("board-query").addEventListener("search", (event) => { if (!event.target.value) loadFeed(); });

  /** A post stored on the node (its own, or one from the mesh): newest first, each once. */
  function added(post) {
    if (known.has(post.id)) return;
    known.set(post.id, post);
    if (searching) return;
    mode.textContent = "";
    show(newest());
  }

  return { loadFeed, added };
}
