// A chat with any model the mesh serves, streamed from the node's model API (`/v1/chat/completions`,
// stream: true) with fetch and a ReadableStream; Stop aborts the request. Errors show the API's own message.

import { ApiError, apiBase, authHeaders, errorFrom } from "./api.js";
import { $, h } from "./dom.js";
import { chatModels } from "./models.js";

/** The `data:` payloads of a server-sent event stream, as they arrive. */
export async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const data = block.split(/\r?\n/).filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
      if (data) yield data;
    }
  }
}

async function failure(response) {
  const text = await response.text();
  try {
    return errorFrom(response.status, JSON.parse(text));
  } catch {
    return new ApiError(response.status, text.trim().slice(0, 300) || `the API answered ${response.status}`);
  }
}

function bubble(role, text = "") {
  return h("li", { class: `turn ${role}`, data: { role } },
    h("span", { class: "who" }, role === "user" ? "you" : "model"),
    h("p", { class: "text" }, text));
}

export function initChat(current) {
  const form = $("chat-form"), log = $("chat-log"), input = $("chat-input"), picker = $("chat-model");
  const send = $("chat-send"), stop = $("chat-stop"), rate = $("chat-rate");
  let messages = [];
  let controller = null;
  const maxTokens = () => Math.max(1, Math.round(Number($("chat-max").value) || 512));

  const busy = (on) => {
    send.disabled = on;
    stop.disabled = !on;
  };

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  stop.addEventListener("click", () => controller?.abort());
  $("chat-clear").addEventListener("click", () => {
    controller?.abort();
    messages = [];
    log.replaceChildren();
    rate.textContent = "";
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    const state = current();
    if (!text || controller) return;
    const model = picker.value;
    if (!model || !state.node) {
      rate.textContent = "No model is served yet: start one with `meshp2p up --model …`.";
      return;
    }
    input.value = "";
    messages.push({ role: "user", content: text });
    log.append(bubble("user", text));
    const answer = bubble("assistant");
    answer.classList.add("streaming");
    log.append(answer);
    const out = answer.querySelector(".text");
    controller = new AbortController();
    busy(true);
    rate.textContent = "waiting for the first token…";
    const started = performance.now();
    let first = null, tokens = 0, reply = "";
    const show = () => {
      const secs = (performance.now() - (first ?? started)) / 1000;
      const speed = first && secs > 0 && tokens > 1 ? `${((tokens - 1) / secs).toFixed(1)} tok/s` : "– tok/s";
      const wait = first ? ` · first token ${((first - started) / 1000).toFixed(2)} s` : "";
      rate.textContent = `${tokens} token${tokens === 1 ? "" : "s"} · ${speed}${wait}`;
    };
    try {
      const response = await fetch(`${apiBase(state.node)}/chat/completions`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream", ...authHeaders() },
        body: JSON.stringify({ model, messages, stream: true, max_tokens: maxTokens() }),
        signal: controller.signal,
      });
      if (!response.ok) throw await failure(response);
      for await (const data of sseData(response.body)) {
        if (data === "[DONE]") break;
        let chunk;
        try {
          chunk = JSON.parse(data);
        } catch {
          continue;
        }
        if (chunk.error) throw errorFrom(200, chunk);
        const piece = chunk.choices?.[0]?.delta?.content || "";
        if (piece) {
          first ??= performance.now();
          tokens += 1;
          reply += piece;
          out.textContent = reply;
          log.scrollTop = log.scrollHeight;
        }
        if (chunk.usage?.completion_tokens) tokens = chunk.usage.completion_tokens;
        show();
      }
      messages.push({ role: "assistant", content: reply });
      show();
    } catch (error) {
      if (error.name === "AbortError") {
        answer.classList.add("stopped");
        if (reply) messages.push({ role: "assistant", content: reply });
        else messages.pop();
        show();
        rate.textContent += " · stopped";
      } else {
        messages.pop();
        answer.classList.add("failed");
        const message = error instanceof ApiError ? error.message
          : `could not reach the model API at ${apiBase(state.node)} (${error.message})`;
        answer.append(h("p", { class: "error", role: "alert" }, message));
        rate.textContent = "";
      }
    } finally {
      answer.classList.remove("streaming");
      controller = null;
      busy(false);
    }
  });

  /** Keep the picker in step with what the mesh serves, without losing the user's choice. */
  return function renderPicker(state) {
    const models = chatModels(state);
    const chosen = picker.value;
    const same = models.length === picker.options.length && models.every((m, i) => picker.options[i].value === m);
    if (same) return;
    picker.replaceChildren(...(models.length ? models.map((m) => h("option", { value: m }, m))
      : [h("option", { value: "" }, "no model served yet")]));
    if (models.includes(chosen)) picker.value = chosen;
  };
}
