"""The `toolcall` tiny model (tools/make_tiny_gguf.py) on a real llama-server, no meshp2p in between: what the mesh
tests (tests/api/test_tool_calls.py) rely on it to say. If llama-server's chat parser changed how it reads the Qwen
2.5 format, these fail first and say so without a mesh around it.

The official `openai` client against llama-server's own OpenAI API.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from helpers.processes import TinyModels, llama_server
from make_tiny_gguf import (
    TOOLCALL_JSON_ANSWER,
    TOOLCALL_PLAIN_ANSWER,
    TOOLCALL_RECITE_PIECE,
    TOOLCALL_RECITE_TOOL,
    TOOLCALL_WEATHER_ARGUMENTS,
    TOOLCALL_WEATHER_TOOL,
    write_tiny_gguf,
)

from meshp2p.inference.binaries import LlamaBinaries

REQUEST_TIMEOUT_S = 60.0

WEATHER = {"type": "function", "function": {
    "name": TOOLCALL_WEATHER_TOOL, "description": "Today's weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
RECITE = {"type": "function", "function": {
    "name": TOOLCALL_RECITE_TOOL, "description": "Say a text aloud.",
    "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_models: TinyModels, llama_binaries: LlamaBinaries
           ) -> Iterator[str]:
    """llama-server on the toolcall model, as meshp2p starts it (the GGUF's own template, jinja on by default)."""
    log_path = tmp_path_factory.mktemp("toolcall-server") / "llama-server.log"
    with llama_server(llama_binaries.server, tiny_models.toolcall, log_path) as base:
        yield base + "/v1"


@pytest.fixture
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server, api_key="unused", max_retries=0, timeout=REQUEST_TIMEOUT_S)


def test_without_tools_it_answers_plain_text_and_stops(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="tiny-toolcall", messages=ASK, temperature=0, max_tokens=20)
    assert answer.choices[0].message.content == TOOLCALL_PLAIN_ANSWER
    assert answer.choices[0].finish_reason == "stop" and not answer.choices[0].message.tool_calls


def test_offered_get_weather_it_calls_it(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="tiny-toolcall", messages=ASK, tools=[WEATHER], temperature=0,
                                            max_tokens=20)
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert not choice.message.content
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id
    assert call.function.name == TOOLCALL_WEATHER_TOOL
    assert json.loads(call.function.arguments) == TOOLCALL_WEATHER_ARGUMENTS


def test_streamed_tool_call_arrives_in_argument_deltas(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="tiny-toolcall", messages=ASK, tools=[WEATHER],
                                                 temperature=0, max_tokens=20, stream=True))
    deltas = [call for chunk in chunks if chunk.choices for call in chunk.choices[0].delta.tool_calls or []]
    assert {d.index for d in deltas} == {0}
    assert [d.function.name for d in deltas if d.function and d.function.name] == [TOOLCALL_WEATHER_TOOL]
    arguments = [d.function.arguments for d in deltas if d.function and d.function.arguments]
    assert len(arguments) >= 3, "the arguments come in parts: what the mid-stream tests read"
    assert json.loads("".join(arguments)) == TOOLCALL_WEATHER_ARGUMENTS
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_offered_recite_it_streams_arguments_until_max_tokens(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="tiny-toolcall", messages=ASK, tools=[RECITE], temperature=0,
                                            max_tokens=30)
    choice = answer.choices[0]
    assert choice.finish_reason == "length"
    (call,) = choice.message.tool_calls or []
    assert call.function.name == TOOLCALL_RECITE_TOOL
    # One token opens the call, every other one is a piece of the text (llama-server trims the unfinished
    # string's trailing space).
    assert call.function.arguments == '{"text": "' + (TOOLCALL_RECITE_PIECE * 29).rstrip()


def test_an_unknown_tool_gets_the_plain_answer(client: openai.OpenAI) -> None:
    other = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
    answer = client.chat.completions.create(model="tiny-toolcall", messages=ASK, tools=[other], temperature=0,
                                            max_tokens=20)
    assert answer.choices[0].message.content == TOOLCALL_PLAIN_ANSWER and answer.choices[0].finish_reason == "stop"


def test_json_schema_grammar_gives_the_object(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"weather": {"enum": ["sunny", "rainy"]}}, "required": ["weather"],
              "additionalProperties": False}
    answer = client.chat.completions.create(
        model="tiny-toolcall", messages=ASK, temperature=0, max_tokens=20,
        response_format={"type": "json_schema", "json_schema": {"name": "weather", "schema": schema, "strict": True}})
    assert answer.choices[0].finish_reason == "stop"
    assert json.loads(answer.choices[0].message.content or "") == TOOLCALL_JSON_ANSWER


def test_the_model_file_is_the_same_every_time(tmp_path: Path, tiny_models: TinyModels) -> None:
    """No randomness: the table is the model. The fixture's file and a fresh one are byte for byte equal."""
    again = write_tiny_gguf(tmp_path / "again.gguf", "toolcall", ctx=8192)
    assert again.read_bytes() == tiny_models.toolcall.read_bytes()
