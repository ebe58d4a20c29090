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
DELTAS_BEFORE_KILL = 5


def requests_served(node: NodeProcess) -> int:
    return sum(m["requests"] for m in node.status()["models"] if m["id"] == MODEL)


def test_a_tool_call_cut_mid_stream_is_never_replayed(tmp_path_factory: pytest.TempPathFactory,
                                                      tiny_models: TinyModels, llama_binaries: LlamaBinaries) -> None:
    """Two nodes serve the model; a client node streams a tool call from one of them, which dies (node and
    llama-server SIGKILLed) after a few argument deltas. A tool call cannot be continued on another server the way
    text can (its arguments are not a message llama-server continues): the client must get an error, never the
    call started again or a second call, since it may already have acted on the deltas."""
    root = tmp_path_factory.mktemp("toolcall-failover")
    boot = start_bootstrap(root / "bootstrap")
    nodes: list[NodeProcess] = []
    try:
        common = ("--mesh-name", "toolcall-failover", "--bootstrap", boot.addr, "--threads", "1")
        for name in ("a", "b"):
            nodes.append(start_node(root / name, "--model", str(tiny_models.toolcall), *common))
        nodes.append(start_node(root / "c", "--client", *common))
        for node in nodes:
            node.wait_ready()
        a, b, c = nodes
        wait_for(lambda: len(next(m for m in httpx.get(c.base_url + "/models", timeout=10).json()["data"]
                                  if m["id"] == MODEL)["meshp2p"]["nodes"]) == 2,
                 MESH_TIMEOUT_S, "the client node to see both servers")

        stream = openai_client(c).chat.completions.create(
            model=MODEL, messages=MESSAGES, tools=[CHAT_RECITE], temperature=0,  # type: ignore[arg-type]
            max_tokens=RECITE_MAX_TOKENS, stream=True)
        arguments, starts, victim_backend = "", 0, None
        expected_prefix = '{"text": "' + TOOLCALL_RECITE_PIECE * RECITE_MAX_TOKENS
        with pytest.raises(openai.APIError) as err, stream:
            for chunk in stream:
                for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                    assert delta.index == 0, "a second tool call appeared"
                    if delta.id or (delta.function and delta.function.name):
                        starts += 1
                        assert starts == 1, "the tool call was started again"
                    arguments += (delta.function.arguments or "") if delta.function else ""
                    assert expected_prefix.startswith(arguments), f"arguments replayed: {arguments[-80:]!r}"
                if victim_backend is None and arguments.count(TOOLCALL_RECITE_PIECE) >= DELTAS_BEFORE_KILL:
                    serving = [n for n in (a, b) if requests_served(n) > 0]
                    assert len(serving) == 1, "one server answers the stream"
                    victim = serving[0]
                    victim_backend = victim.status()["models"][0]["pid"]
                    # The whole machine dies: the node and its llama-server, without a word.
                    victim.process.send_signal(signal.SIGKILL)
                    os.kill(victim_backend, signal.SIGKILL)
        assert victim_backend is not None, "the stream ended before the kill"
        assert not pid_alive(victim_backend)
        assert arguments.count(TOOLCALL_RECITE_PIECE) < RECITE_MAX_TOKENS - 1, "the call was finished elsewhere"
        assert "tool call" in str(err.value), err.value
    finally:
        try:
            stop_all(nodes)
        finally:
            assert boot.stop() == 0, boot.log_path.read_text()
