"""Tool calls and structured output through the mesh, driven by the official clients (openai, anthropic): on a
serving node and on a `--client` node that reaches the model only through the tunnel, both must answer alike.

The model is make_tiny_gguf's `toolcall` variant: a next-token table with Qwen 2.5's chat template, so llama-server
really parses a Hermes-style tool call out of its reply (a model that does not emit one cannot be made to).
Real `meshp2p up` processes and a real bootstrap on loopback, real llama-server.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from helpers.processes import (
    NODE_STOP_TIMEOUT_S,
    BootstrapProcess,
    NodeProcess,
    TinyModels,
    pid_alive,
    start_bootstrap,
    start_node,
    stop_all,
    wait_for,
)
from make_tiny_gguf import (
    TOOLCALL_JSON_ANSWER,
    TOOLCALL_RECITE_PIECE,
    TOOLCALL_RECITE_TOOL,
    TOOLCALL_WEATHER_ARGUMENTS,
    TOOLCALL_WEATHER_TOOL,
)

from meshp2p.inference.binaries import LlamaBinaries

MODEL = "tiny-toolcall"
MESH_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 60.0
SIDES = ("serving", "client")

CITY_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TEXT_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
WEATHER_DESCRIPTION = "Today's weather in a city."
#: The same tool in each API's shape.
CHAT_WEATHER = {"type": "function", "function": {"name": TOOLCALL_WEATHER_TOOL, "description": WEATHER_DESCRIPTION,
                                                 "parameters": CITY_SCHEMA}}
RESPONSES_WEATHER = {"type": "function", "name": TOOLCALL_WEATHER_TOOL, "description": WEATHER_DESCRIPTION,
                     "parameters": CITY_SCHEMA}
ANTHROPIC_WEATHER = {"name": TOOLCALL_WEATHER_TOOL, "description": WEATHER_DESCRIPTION, "input_schema": CITY_SCHEMA}
CHAT_RECITE = {"type": "function", "function": {"name": TOOLCALL_RECITE_TOOL, "description": "Say a text aloud.",
                                                "parameters": TEXT_SCHEMA}}
QUESTION = "What is the weather in Paris?"
MESSAGES = [{"role": "user", "content": QUESTION}]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, tiny_models: TinyModels, llama_binaries: LlamaBinaries
         ) -> Iterator[dict[str, NodeProcess]]:
    """A node serving the toolcall model and an API-only node of the same mesh."""
    root = tmp_path_factory.mktemp("toolcall-mesh")
    boot: BootstrapProcess = start_bootstrap(root / "bootstrap")
    nodes: list[NodeProcess] = []
    try:
        common = ("--mesh-name", "toolcalls", "--bootstrap", boot.addr, "--threads", "1")
        nodes.append(start_node(root / "serving", "--model", str(tiny_models.toolcall), *common))
        nodes.append(start_node(root / "client", "--client", *common))
        for node in nodes:
            node.wait_ready()
        wait_for(lambda: MODEL in model_ids(nodes[1]), MESH_TIMEOUT_S, "the client node to see the toolcall model")
        yield dict(zip(SIDES, nodes, strict=True))
    finally:
        try:
            stop_all(nodes)
        finally:
            assert boot.stop() == 0, boot.log_path.read_text()


def model_ids(node: NodeProcess) -> set[str]:
    return {m["id"] for m in httpx.get(node.base_url + "/models", timeout=10).json()["data"]
            if m["meshp2p"]["state"] != "wanted"}


def openai_client(node: NodeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=node.base_url, api_key="unused", max_retries=0, timeout=REQUEST_TIMEOUT_S)


def anthropic_client(node: NodeProcess) -> anthropic.Anthropic:
    # The Anthropic SDK appends /v1/messages itself: its base URL is the server's root.
    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{node.api_port}", api_key="unused", max_retries=0,
                               timeout=REQUEST_TIMEOUT_S)


# --- OpenAI chat completions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", SIDES)
def test_chat_returns_the_tool_call_with_json_arguments(mesh: dict[str, NodeProcess], side: str) -> None:
    answer = openai_client(mesh[side]).chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=[CHAT_WEATHER], temperature=0, max_tokens=20)  # type: ignore[arg-type]
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    (call,) = choice.message.tool_calls or []
    assert call.id and call.type == "function"
    assert call.function.name == TOOLCALL_WEATHER_TOOL
    assert json.loads(call.function.arguments) == TOOLCALL_WEATHER_ARGUMENTS


@pytest.mark.parametrize("side", SIDES)
def test_streamed_chat_tool_call_accumulates_to_the_same_call(mesh: dict[str, NodeProcess], side: str) -> None:
    chunks = list(openai_client(mesh[side]).chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=[CHAT_WEATHER], temperature=0, max_tokens=20,  # type: ignore[arg-type]
        stream=True))
    assert len({c.id for c in chunks}) == 1
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert {d.index for d in deltas} == {0}
    assert len({d.id for d in deltas if d.id}) == 1
    assert "".join(d.function.name or "" for d in deltas if d.function) == TOOLCALL_WEATHER_TOOL
    arguments = [d.function.arguments for d in deltas if d.function and d.function.arguments]
    assert len(arguments) >= 3, arguments
    assert json.loads("".join(arguments)) == TOOLCALL_WEATHER_ARGUMENTS
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


@pytest.mark.parametrize("side", SIDES)
def test_json_schema_response_format_is_honoured(mesh: dict[str, NodeProcess], side: str) -> None:
    """Moved here from test_agent_apis.py: llama-server refuses any response grammar on the tiny dense model ("Failed
    to initialize samplers"): it feeds the grammar the generation prompt's tokens, and on that model's vocabulary
    `<|im_start|>` is no token but " <", "|", ..., whose leading space token it drops, so the prompt no longer
    matches. The toolcall model has `<|im_start|>` as a control token and no space prefix."""
    schema = {"type": "object", "properties": {"weather": {"enum": ["sunny", "rainy"]}}, "required": ["weather"],
              "additionalProperties": False}
    answer = openai_client(mesh[side]).chat.completions.create(
        model=MODEL, messages=MESSAGES, temperature=0, max_tokens=20,  # type: ignore[arg-type]
        response_format={"type": "json_schema", "json_schema": {"name": "weather", "schema": schema, "strict": True}})
    content = answer.choices[0].message.content or ""
    assert answer.choices[0].finish_reason == "stop", content
    parsed = json.loads(content)
    assert set(parsed) == {"weather"} and parsed["weather"] in schema["properties"]["weather"]["enum"]  # type: ignore[index]
    assert parsed == TOOLCALL_JSON_ANSWER


# --- OpenAI Responses -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", SIDES)
def test_responses_return_a_function_call_item(mesh: dict[str, NodeProcess], side: str) -> None:
    response = openai_client(mesh[side]).responses.create(
        model=MODEL, input=QUESTION, tools=[RESPONSES_WEATHER], temperature=0,  # type: ignore[list-item]
        max_output_tokens=20)
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) == 1, response.output
    assert calls[0].name == TOOLCALL_WEATHER_TOOL and calls[0].call_id
    assert json.loads(calls[0].arguments) == TOOLCALL_WEATHER_ARGUMENTS


@pytest.mark.parametrize("side", SIDES)
def test_streamed_responses_function_call(mesh: dict[str, NodeProcess], side: str) -> None:
    with openai_client(mesh[side]).responses.stream(
            model=MODEL, input=QUESTION, tools=[RESPONSES_WEATHER], temperature=0,  # type: ignore[list-item]
            max_output_tokens=20) as stream:
        deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    assert json.loads("".join(deltas)) == TOOLCALL_WEATHER_ARGUMENTS
    (call,) = [item for item in final.output if item.type == "function_call"]
    assert call.name == TOOLCALL_WEATHER_TOOL and json.loads(call.arguments) == TOOLCALL_WEATHER_ARGUMENTS


# --- Anthropic Messages -----------------------------------------------------------------------------------------


def anthropic_ask(**more: Any) -> dict[str, Any]:
    # anthropic>=2 takes no `temperature` argument (newer Claude models fix it); llama-server still reads it.
    return dict(model=MODEL, max_tokens=20, extra_body={"temperature": 0}, messages=MESSAGES, **more)


@pytest.mark.parametrize("side", SIDES)
def test_anthropic_messages_give_a_tool_use_block(mesh: dict[str, NodeProcess], side: str) -> None:
    message = anthropic_client(mesh[side]).messages.create(**anthropic_ask(tools=[ANTHROPIC_WEATHER]))
    assert message.stop_reason == "tool_use", message
    (block,) = [b for b in message.content if b.type == "tool_use"]
    assert block.name == TOOLCALL_WEATHER_TOOL and block.id
    assert block.input == TOOLCALL_WEATHER_ARGUMENTS


@pytest.mark.parametrize("side", SIDES)
def test_streamed_anthropic_tool_use(mesh: dict[str, NodeProcess], side: str) -> None:
    with anthropic_client(mesh[side]).messages.stream(**anthropic_ask(tools=[ANTHROPIC_WEATHER])) as stream:
        partial = [e.delta.partial_json for e in stream
                   if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
        final = stream.get_final_message()
    assert json.loads("".join(partial)) == TOOLCALL_WEATHER_ARGUMENTS
    assert final.stop_reason == "tool_use"
    (block,) = [b for b in final.content if b.type == "tool_use"]
    assert block.name == TOOLCALL_WEATHER_TOOL and block.input == TOOLCALL_WEATHER_ARGUMENTS


@pytest.mark.parametrize("side", SIDES)
def test_anthropic_count_tokens_counts_the_tools(mesh: dict[str, NodeProcess], side: str) -> None:
    client = anthropic_client(mesh[side])
    bare = client.messages.count_tokens(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    with_tools = client.messages.count_tokens(model=MODEL, messages=MESSAGES,  # type: ignore[arg-type]
                                              tools=[ANTHROPIC_WEATHER])  # type: ignore[list-item]
    assert 0 < bare.input_tokens < with_tools.input_tokens
    # The tools are in the prompt: the count is the prompt llama-server reads for the same request (Anthropic's
    # usage counts tokens read from the cache apart).
    usage = client.messages.create(**anthropic_ask(tools=[ANTHROPIC_WEATHER])).usage
    read = usage.input_tokens + (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0)
    assert read == with_tools.input_tokens


# --- a server dies mid tool call --------------------------------------------------------------------------------

#: Long enough that the serving llama-server is still writing `recite`'s arguments when it is killed.
RECITE_MAX_TOKENS = 4000
PIECES_BEFORE_KILL = 5
RESPONSES_RECITE = {"type": "function", "name": TOOLCALL_RECITE_TOOL, "description": "Say a text aloud.",
                    "parameters": TEXT_SCHEMA}
ANTHROPIC_RECITE = {"name": TOOLCALL_RECITE_TOOL, "description": "Say a text aloud.", "input_schema": TEXT_SCHEMA}
#: One streamed `recite` call per API, read as ("start", name) and ("arguments", piece) events.
STREAM_FORMATS = ("chat", "responses", "anthropic")


class FailoverMesh:
    """Two nodes serving the toolcall model and a client node; a test kills one server, the next gets it back."""

    def __init__(self, root: Any, boot: BootstrapProcess, tiny_models: TinyModels) -> None:
        self.root, self.boot, self.tiny_models = root, boot, tiny_models
        self.common = ("--mesh-name", "toolcall-failover", "--bootstrap", boot.addr, "--threads", "1")
        self.servers = {name: self._serve(name) for name in ("a", "b")}
        self.client = start_node(root / "c", "--client", *self.common)
        self.stopped: list[NodeProcess] = []

    def _serve(self, name: str) -> NodeProcess:
        return start_node(self.root / name, "--model", str(self.tiny_models.toolcall), *self.common)

    def nodes(self) -> list[NodeProcess]:
        return [*self.stopped, *self.servers.values(), self.client]

    def ensure_two_servers(self) -> None:
        """Restart (same home, so same identity) a server an earlier test killed; wait until the client routes to
        both."""
        for name, node in self.servers.items():
            if node.process.poll() is not None:
                self.stopped.append(node)
                self.servers[name] = self._serve(name)
        for node in (*self.servers.values(), self.client):
            node.wait_ready()
        peers = {n.status()["mesh"]["peer_id"] for n in self.servers.values()}

        def both_listed() -> bool:
            listed = [m for m in httpx.get(self.client.base_url + "/models", timeout=10).json()["data"]
                      if m["id"] == MODEL]
            return bool(listed) and set(listed[0]["meshp2p"]["nodes"]) == peers
        wait_for(both_listed, MESH_TIMEOUT_S, "the client node to see both servers")


@pytest.fixture(scope="module")
def failover_mesh(tmp_path_factory: pytest.TempPathFactory, tiny_models: TinyModels, llama_binaries: LlamaBinaries
                  ) -> Iterator[FailoverMesh]:
    root = tmp_path_factory.mktemp("toolcall-failover")
    boot = start_bootstrap(root / "bootstrap")
    mesh: FailoverMesh | None = None
    try:
        mesh = FailoverMesh(root, boot, tiny_models)
        yield mesh
    finally:
        try:
            stop_all(mesh.nodes() if mesh is not None else [])
        finally:
            assert boot.stop() == 0, boot.log_path.read_text()


def recite_events(stream_format: str, node: NodeProcess) -> Iterator[tuple[str, str]]:
    """Stream a `recite` call through `node` in one API's format, as (kind, text) events."""
    if stream_format == "chat":
        for chunk in openai_client(node).chat.completions.create(
                model=MODEL, messages=MESSAGES, tools=[CHAT_RECITE], temperature=0,  # type: ignore[arg-type]
                max_tokens=RECITE_MAX_TOKENS, stream=True):
            for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                assert delta.index == 0, "a second tool call appeared"
                if delta.id or (delta.function and delta.function.name):
                    yield "start", (delta.function.name or "") if delta.function else ""
                if delta.function and delta.function.arguments:
                    yield "arguments", delta.function.arguments
    elif stream_format == "responses":
        for event in openai_client(node).responses.create(
                model=MODEL, input=QUESTION, tools=[RESPONSES_RECITE], temperature=0,  # type: ignore[list-item]
                max_output_tokens=RECITE_MAX_TOKENS, stream=True):
            if event.type == "response.output_item.added":
                yield "start", getattr(event.item, "name", event.item.type)
            elif event.type == "response.function_call_arguments.delta":
                yield "arguments", event.delta
    else:
        for message_event in anthropic_client(node).messages.create(
                model=MODEL, max_tokens=RECITE_MAX_TOKENS, extra_body={"temperature": 0},
                messages=MESSAGES, tools=[ANTHROPIC_RECITE], stream=True):  # type: ignore[list-item,arg-type]
            if message_event.type == "content_block_start":
                yield "start", getattr(message_event.content_block, "name", message_event.content_block.type)
            elif message_event.type == "content_block_delta" and message_event.delta.type == "input_json_delta":
                yield "arguments", message_event.delta.partial_json


def requests_served(node: NodeProcess) -> int:
    return sum(m["requests"] for m in node.status()["models"] if m["id"] == MODEL)


@pytest.mark.parametrize("stream_format", STREAM_FORMATS)
def test_a_tool_call_cut_mid_stream_is_never_replayed(failover_mesh: FailoverMesh, stream_format: str) -> None:
    """Two nodes serve the model; a client node streams a tool call from one of them, which dies (node and
    llama-server SIGKILLed) after a few argument deltas. A tool call cannot be continued on another server the way
    text can (llama-server does not continue a partial call): the client must get an error, never the call started
    again or a second call, since it may already act on the deltas it has."""
    failover_mesh.ensure_two_servers()
    servers = list(failover_mesh.servers.values())
    before = {n.home.name: requests_served(n) for n in servers}
    expected_prefix = '{"text": "' + TOOLCALL_RECITE_PIECE * RECITE_MAX_TOKENS
    arguments, starts, victim_backend, victim = "", [], None, None
    error = openai.APIError if stream_format != "anthropic" else anthropic.APIError
    with pytest.raises(error) as err:
        for kind, text in recite_events(stream_format, failover_mesh.client):
            if kind == "start":
                starts.append(text)
                assert starts == [TOOLCALL_RECITE_TOOL], f"the tool call was started again: {starts}"
                continue
            arguments += text
            assert expected_prefix.startswith(arguments), f"arguments replayed: {arguments[-80:]!r}"
            if victim_backend is None and arguments.count(TOOLCALL_RECITE_PIECE) >= PIECES_BEFORE_KILL:
                serving = [n for n in servers if requests_served(n) > before[n.home.name]]
                assert len(serving) == 1, "one server answers the stream"
                victim_backend = serving[0].status()["models"][0]["pid"]
                # The whole machine dies: the node and its llama-server, without a word.
                serving[0].process.send_signal(signal.SIGKILL)
                os.kill(victim_backend, signal.SIGKILL)
                victim = serving[0]
    assert victim_backend is not None, "the stream ended before the kill"
    # Reaped before the next test looks: a SIGKILLed process can still poll as running for a moment, and the next
    # test would then wait on it instead of starting it again.
    victim.process.wait(NODE_STOP_TIMEOUT_S)
    assert not pid_alive(victim_backend)
    assert starts == [TOOLCALL_RECITE_TOOL]
    assert arguments.count(TOOLCALL_RECITE_PIECE) < RECITE_MAX_TOKENS - 1, "the call was finished elsewhere"
    assert "tool call" in str(err.value), err.value
