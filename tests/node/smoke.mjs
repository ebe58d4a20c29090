// The official Node `openai` package against a meshp2p node: chat, completions, Responses (whole and streamed),
// embeddings and an unknown model, printed as one JSON object on stdout for tests/api/test_node_client.py to check.
//
// usage: node tests/node/smoke.mjs BASE_URL MODEL [EMBED_MODEL]
//        (or MESHP2P_BASE_URL, MESHP2P_MODEL, MESHP2P_EMBED_MODEL; BASE_URL ends in /v1)
//
// Every call runs at temperature 0 with a small token budget, so a streamed answer must join to the whole one.
// A call that throws is recorded as {"error": {...}} under its name instead of stopping the script, so one failure
// does not hide the others; the exit status is 0 once the JSON is printed.

import OpenAI from "openai";
import { VERSION } from "openai/version";

const [baseURL = process.env.MESHP2P_BASE_URL, model = process.env.MESHP2P_MODEL,
  embedModel = process.env.MESHP2P_EMBED_MODEL] = process.argv.slice(2);
if (!baseURL || !model) {
  console.error("usage: node smoke.mjs BASE_URL MODEL [EMBED_MODEL]");
  process.exit(2);
}

const MAX_TOKENS = 12;
const PROMPT = "Tell me about meshes.";
const client = new OpenAI({ baseURL, apiKey: process.env.MESHP2P_API_KEY || "unused", maxRetries: 0,
  timeout: 60_000 });

function describe(err) {
  return { class: err?.constructor?.name ?? typeof err, status: err?.status ?? null,
    not_found: err instanceof OpenAI.NotFoundError, api_error: err instanceof OpenAI.APIError,
    type: err?.type ?? null, code: err?.code ?? null, message: String(err?.message ?? err) };
}

async function attempt(fn) {
  try {
    return await fn();
  } catch (err) {
    return { error: describe(err) };
  }
}

const chatBody = { model, messages: [{ role: "user", content: PROMPT }], temperature: 0, max_tokens: MAX_TOKENS };

async function chat() {
  const r = await client.chat.completions.create(chatBody);
  return { id: r.id, object: r.object, model: r.model, text: r.choices[0].message.content,
    finish_reason: r.choices[0].finish_reason, usage: r.usage };
}

async function chatStream() {
  const stream = await client.chat.completions.create({ ...chatBody, stream: true,
    stream_options: { include_usage: true } });
  const pieces = [], ids = new Set();
  let usage = null, finish_reason = null;
  for await (const chunk of stream) {
    ids.add(chunk.id);
    const choice = chunk.choices[0];
    if (choice?.delta?.content) pieces.push(choice.delta.content);
    if (choice?.finish_reason) finish_reason = choice.finish_reason;
    if (chunk.usage) usage = chunk.usage;
  }
  return { pieces, text: pieces.join(""), ids: [...ids], finish_reason, usage };
}

const completionBody = { model, prompt: "The capital of France is", temperature: 0, max_tokens: MAX_TOKENS };

async function completion() {
  const r = await client.completions.create(completionBody);
  return { text: r.choices[0].text, finish_reason: r.choices[0].finish_reason, usage: r.usage };
}

async function completionStream() {
  const stream = await client.completions.create({ ...completionBody, stream: true });
  const pieces = [];
  for await (const chunk of stream) {
    if (chunk.choices[0]?.text) pieces.push(chunk.choices[0].text);
  }
  return { pieces, text: pieces.join("") };
}

const responsesBody = { model, input: PROMPT, temperature: 0, max_output_tokens: MAX_TOKENS };

async function responses() {
  const r = await client.responses.create(responsesBody);
  return { id: r.id, status: r.status, text: r.output_text, usage: r.usage };
}

// The SDK's helper (`responses.stream`) checks every event against the response it accumulates (output_index,
// item ids...); the raw stream (`create({stream: true})`) only parses each event. Both are tried and reported.
async function responsesStreamHelper() {
  const deltas = [], types = [];
  const stream = client.responses.stream(responsesBody);
  for await (const event of stream) {
    types.push(event.type);
    if (event.type === "response.output_text.delta") deltas.push(event.delta);
  }
  const final = await stream.finalResponse();
  return { deltas, text: deltas.join(""), event_types: [...new Set(types)], final_text: final.output_text,
    status: final.status, usage: final.usage };
}

async function responsesStreamRaw() {
  const deltas = [], types = [];
  let completed = null;
  const stream = await client.responses.create({ ...responsesBody, stream: true });
  for await (const event of stream) {
    types.push(event.type);
    if (event.type === "response.output_text.delta") deltas.push(event.delta);
    if (event.type === "response.completed") completed = event.response;
  }
  return { deltas, text: deltas.join(""), event_types: [...new Set(types)], status: completed?.status ?? null,
    usage: completed?.usage ?? null };
}

async function embeddings() {
  const r = await client.embeddings.create({ model: embedModel, input: ["a mesh of nodes", "a plate of pasta"] });
  return { count: r.data.length, dims: r.data.map((d) => d.embedding.length), usage: r.usage };
}

async function unknownModel() {
  const out = {};
  for (const [name, fn] of Object.entries({
    chat: () => client.chat.completions.create({ ...chatBody, model: "no-such-model" }),
    chat_stream: () => client.chat.completions.create({ ...chatBody, model: "no-such-model", stream: true }),
    responses: () => client.responses.create({ ...responsesBody, model: "no-such-model" }),
  })) {
    out[name] = await attempt(async () => ({ unexpected: await fn() }));
  }
  return out;
}

const results = {
  sdk: { name: "openai", version: VERSION, node: process.version },
  settings: { base_url: baseURL, model, embed_model: embedModel ?? null, max_tokens: MAX_TOKENS },
  chat: await attempt(chat),
  chat_stream: await attempt(chatStream),
  completion: await attempt(completion),
  completion_stream: await attempt(completionStream),
  responses: await attempt(responses),
  responses_stream_helper: await attempt(responsesStreamHelper),
  responses_stream_raw: await attempt(responsesStreamRaw),
  embeddings: embedModel ? await attempt(embeddings) : null,
  unknown_model: await unknownModel(),
};
console.log(JSON.stringify(results));
