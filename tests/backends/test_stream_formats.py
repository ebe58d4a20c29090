"""Each stream format's tracker over real llama-server b11434 streams (tests/backends/streams/, recorded by
capture_streams.py from the tiny dense model): a stream passed through alone, and two spliced as failover splices
them (the first answer cut after CUT_AFTER text deltas, then the recorded answer to the continuation body). What
the client would read is checked with the official SDKs' own event types and accumulators, not by our reading.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import anthropic.types
import openai.types.chat
import openai.types.responses
import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState

from meshp2p.backends.streams import tracker_for
from meshp2p.backends.streams.sse import SseEvent, SseParser, parse_block, serialize
from meshp2p.backends.streams.tracker import StreamTracker

from .capture_streams import CUT_AFTER, MAX_TOKENS, REQUESTS

STREAMS = Path(__file__).resolve().parent / "streams"
NOW = 1_800_000_000
#: openai's Responses event classes by their `type` (its union is not a tagged one that pydantic can pick from).
RESPONSE_EVENTS: dict[str, type[pydantic.BaseModel]] = {
    get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in get_args(get_args(openai.types.responses.ResponseStreamEvent)[0])}
MESSAGE_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)


def recorded(name: str) -> bytes:
    return (STREAMS / f"{name}.sse").read_bytes()


def payload_of(name: str) -> dict[str, Any]:
    _path, extra = REQUESTS[name]
    return {"model": "tiny-dense", "stream": True, "temperature": 0, **extra}


def events_in(raw: bytes, step: int = 7) -> list[SseEvent]:
    """The events of `raw` as a parser gets them cut into `step`-byte chunks."""
    parser = SseParser()
    out = [e for i in range(0, len(raw), step) for e in parser.feed(raw[i:i + step])]
    return out + parser.close()


def tracker(name: str) -> StreamTracker:
    found = tracker_for(REQUESTS[name][0], payload_of(name), now=NOW)
    assert found is not None
    return found


def passed(name: str) -> list[SseEvent]:
    """What the client reads of one unbroken recorded stream."""
    t = tracker(name)
    return [out for event in events_in(recorded(name)) for out in t.take(event)]


def spliced(name: str) -> tuple[list[SseEvent], dict[str, Any]]:
    """What the client reads when the server breaks after CUT_AFTER deltas and the continuation answers; and the
    continuation body the tracker built."""
    t = tracker(name)
    out: list[SseEvent] = []
    for event in events_in(recorded(name)):
        out += t.take(event)
        if t.delivered.tokens == CUT_AFTER:  # type: ignore[attr-defined]
            break
    assert t.done() is None and t.refusal() is None
    body = t.continuation(payload_of(name))
    assert body is not None
    t.next_server()
    out += [o for event in events_in(recorded(f"{name}-continued"), step=13) for o in t.take(event)]
    return out, body


def datas(events: list[SseEvent]) -> list[Any]:
    return [e.json() for e in events if e.json() is not None]


def wire(events: list[SseEvent]) -> list[SseEvent]:
    """The events as the client parses them off the wire."""
    return events_in(b"".join(serialize(e) for e in events), step=5)


# The SSE core.

@pytest.mark.parametrize("name", sorted(p.stem for p in STREAMS.glob("*.sse")))
def test_whole_events_however_the_bytes_are_cut(name):
    raw = recorded(name)
    whole = events_in(raw, step=len(raw))
    assert whole and all(e.data is not None for e in whole)
    for step in (1, 2, 7, 64):
        assert events_in(raw, step) == whole
    assert events_in(b"".join(serialize(e) for e in whole)) == whole


def test_event_fields_comments_and_line_endings():
    assert parse_block(b"event: message_start\r\ndata: {\"a\":1}") == SseEvent('{"a":1}', "message_start")
    assert parse_block(b"data: one\ndata: two") == SseEvent("one\ntwo")
    assert parse_block(b":") == SseEvent(comment="")  # llama-server's keep-alive ping
    assert serialize(SseEvent(comment="")) == b":\n\n"
    assert serialize(SseEvent("one\ntwo", "x")) == b"event: x\ndata: one\ndata: two\n\n"
    parser = SseParser()
    assert parser.feed(b"data: [DONE]\r\n\r") == [] and parser.feed(b"\n") == [SseEvent("[DONE]")]
    assert parser.feed(b"data: half") == [] and parser.close() == [SseEvent("half")]


# Responses: normalized on every stream, and spliced.

def response_events(events: list[SseEvent]) -> list[Any]:
    """Each event validated as openai's own type (strictly: every required field there), then read by the SDK's
    `responses.stream()` accumulator; returns what the helper hands its user."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    handed: list[Any] = []
    for event in wire(events):
        assert event.event == event.json()["type"]
        handed += state.handle_event(RESPONSE_EVENTS[event.json()["type"]].model_validate(event.json()))
    assert state._completed_response is not None
    return handed


def test_a_responses_stream_is_made_whole_for_the_openai_sdk():
    raw = datas(events_in(recorded("responses")))
    assert "sequence_number" not in raw[0] and "output_index" not in raw[2], "llama-server leaves them out"
    events = passed("responses")
    handed = response_events(events)
    numbers = [d["sequence_number"] for d in datas(events)]
    assert numbers == list(range(len(numbers)))
    deltas = [e.delta for e in handed if e.type == "response.output_text.delta"]
    final = handed[-1].response
    assert handed[-1].type == "response.completed" and final.output_text == "".join(deltas)
    assert final.id == raw[0]["response"]["id"] and final.usage.output_tokens == MAX_TOKENS


def test_a_broken_responses_stream_continues_as_one_response():
    events, body = spliced("responses")
    assert body == json.loads((STREAMS / "responses-continued.json").read_text())
    assert body["input"][-1]["role"] == "assistant" and body["max_output_tokens"] == MAX_TOKENS - CUT_AFTER
    handed = response_events(events)
    first = datas(events_in(recorded("responses")))
    kinds = [e.type for e in handed]
    assert kinds.count("response.created") == kinds.count("response.output_item.added") == 1
    assert kinds.count("response.content_part.added") == 1 and kinds[-1] == "response.completed"
    assert {d["response"]["id"] for d in datas(events) if "response" in d} == {first[0]["response"]["id"]}
    message_id = first[2]["item"]["id"]
    item_ids = {d.get("item_id") or d.get("item", {}).get("id") for d in datas(events) if "response" not in d}
    assert item_ids == {message_id}
    deltas = "".join(e.delta for e in handed if e.type == "response.output_text.delta")
    before = body["input"][-1]["content"][0]["text"]
    continued = "".join(d["delta"] for d in datas(events_in(recorded("responses-continued")))
                        if d["type"] == "response.output_text.delta")
    assert continued.startswith(before), "llama-server repeats the prefill: the tracker must cut it"
    assert deltas == continued, "the prefill once, then the continuation"
    final = handed[-1].response
    assert final.output_text == deltas and [o.id for o in final.output] == [message_id]
    assert final.usage.output_tokens == MAX_TOKENS
    unbroken = first[-1]["response"]["usage"]
    assert final.usage.input_tokens == unbroken["input_tokens"], "the prompt as the client sent it"


# Chat and completions.

def chunks(events: list[SseEvent]) -> list[openai.types.chat.ChatCompletionChunk]:
    assert wire(events)[-1].data == "[DONE]"
    return [openai.types.chat.ChatCompletionChunk.model_validate(d) for d in datas(wire(events))]


def test_a_broken_chat_stream_continues_as_one_stream():
    events, body = spliced("chat")
    assert body["messages"][-1]["role"] == "assistant" and body["max_tokens"] == MAX_TOKENS - CUT_AFTER
    got = chunks(events)
    first = datas(events_in(recorded("chat")))
    assert {(c.id, c.created) for c in got} == {(first[0]["id"], first[0]["created"])}
    assert sum(1 for c in got if c.choices and c.choices[0].delta.role) == 1
    text = "".join(c.choices[0].delta.content or "" for c in got if c.choices)
    before = body["messages"][-1]["content"]
    continued = "".join((d["choices"][0]["delta"].get("content") or "")
                        for d in datas(events_in(recorded("chat-continued"))) if d.get("choices"))
    assert continued.startswith(before) and text == continued
    usage = got[-1].usage
    assert usage is not None and usage.completion_tokens == MAX_TOKENS
    assert usage.prompt_tokens == first[-1]["usage"]["prompt_tokens"]


def test_a_broken_completion_continues_from_its_prompt():
    events, body = spliced("completions")
    first = datas(events_in(recorded("completions")))
    before = "".join(d["choices"][0]["text"] for d in first[:CUT_AFTER])
    assert body["prompt"] == "Once" + before and body["max_tokens"] == MAX_TOKENS - CUT_AFTER
    got = datas(wire(events))
    assert {c["id"] for c in got} == {first[0]["id"]} and wire(events)[-1].data == "[DONE]"
    continued = "".join(d["choices"][0]["text"] for d in datas(events_in(recorded("completions-continued")))
                        if d.get("choices"))
    assert "".join(c["choices"][0]["text"] for c in got if c.get("choices")) == before + continued, "no echo here"
    assert got[-1]["usage"]["completion_tokens"] == MAX_TOKENS
    assert got[-1]["usage"]["prompt_tokens"] == first[-1]["usage"]["prompt_tokens"]


# Anthropic.

def test_a_broken_messages_stream_continues_as_one_message():
    events, body = spliced("messages")
    assert body["messages"][-1]["role"] == "assistant" and body["max_tokens"] == MAX_TOKENS - CUT_AFTER
    snapshot = None
    for event in wire(events):
        assert event.event == event.json()["type"]
        snapshot = accumulate_event(event=MESSAGE_EVENTS.validate_python(event.json()), current_snapshot=snapshot,
                                    json_bufs={})
    first = datas(events_in(recorded("messages")))
    kinds = [d["type"] for d in datas(events)]
    assert kinds.count("message_start") == kinds.count("content_block_start") == 1 and kinds[-1] == "message_stop"
    assert snapshot is not None and snapshot.id == first[0]["message"]["id"]
    continued = "".join(d["delta"].get("text", "") for d in datas(events_in(recorded("messages-continued")))
                        if d["type"] == "content_block_delta")
    assert continued.startswith(body["messages"][-1]["content"])
    assert [b.type for b in snapshot.content] == ["text"] and snapshot.content[0].text == continued
    assert snapshot.usage.output_tokens == MAX_TOKENS
    assert snapshot.usage.input_tokens == first[0]["message"]["usage"]["input_tokens"]


# What is never continued, and streams that broke when their answer was whole.

def event(data: dict[str, Any], name: str | None = None) -> SseEvent:
    return SseEvent(json.dumps(data), name if name is not None else data.get("type"))


IN_FLIGHT = {
    "chat tool call": ("chat", [event({"id": "c1", "created": 1, "choices": [{"index": 0, "delta": {
        "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                        "function": {"name": "get", "arguments": "{\"ci"}}]}}]}, "")], "tool call"),
    "chat reasoning": ("chat", [event({"id": "c1", "created": 1, "choices": [{"index": 0, "delta": {
        "reasoning_content": "Hmm"}}]}, "")], "reasoning"),
    "responses function call": ("responses", [
        event({"type": "response.created", "response": {"id": "resp_1", "object": "response"}}),
        event({"type": "response.output_item.added", "item": {"id": "fc_1", "type": "function_call", "arguments": "",
                                                               "call_id": "call_1", "name": "get"}}),
        event({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "delta": "{\"ci"})], "tool call"),
    "responses reasoning": ("responses", [
        event({"type": "response.created", "response": {"id": "resp_1", "object": "response"}}),
        event({"type": "response.output_item.added", "item": {"id": "rs_1", "type": "reasoning", "summary": []}}),
        event({"type": "response.reasoning_text.delta", "item_id": "rs_1", "delta": "Hmm"})], "reasoning"),
    "messages tool use": ("messages", [
        event({"type": "message_start", "message": {"id": "m1"}}),
        event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me"}}),
        event({"type": "content_block_start", "index": 1,
               "content_block": {"type": "tool_use", "id": "t1", "name": "get"}}),
        event({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta",
                                                                    "partial_json": "{\"ci"}})], "tool call"),
    "messages thinking": ("messages", [
        event({"type": "message_start", "message": {"id": "m1"}}),
        event({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        event({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hm"}})],
        "reasoning"),
}


@pytest.mark.parametrize("case", sorted(IN_FLIGHT))
def test_a_tool_call_or_reasoning_in_flight_is_never_replayed(case):
    name, events, why = IN_FLIGHT[case]
    t = tracker(name)
    for e in events:
        assert t.take(e), "passed on while it lasts"
    assert t.done() is None
    assert t.continuation(payload_of(name)) is None and why in (t.refusal() or "")


@pytest.mark.parametrize(("name", "last"), [("chat", "[DONE]"), ("completions", "[DONE]"),
                                            ("messages", "message_stop"), ("responses", None)])
def test_a_stream_that_breaks_when_its_answer_was_whole_just_ends(name, last):
    """Broken before its last event (a finish reason, `message_delta` delivered): the end is added, nothing is
    asked again; and before the final events had all come: not continued (that would add text after its end)."""
    events = events_in(recorded(name))
    t = tracker(name)
    for e in events[:-1]:
        t.take(e)
    ending = t.done()
    if last is None:  # `response.completed` is the last event and the only one that ends a response
        assert ending is None and t.continuation(payload_of(name)) is None and "closing" in (t.refusal() or "")
    else:
        assert ending is not None and [e.data if e.data == "[DONE]" else e.json()["type"] for e in ending] == [last]
    whole = tracker(name)
    for e in events:
        whole.take(e)
    assert whole.done() == []
