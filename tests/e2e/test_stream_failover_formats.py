"""Failover in every streamed format, end to end: chat chunks, Responses events, Anthropic message events.

Real `meshp2p up` processes on loopback with the tiny model: two servers (A, D) of one model and an API-only node C.
The official clients read a stream through C (`chat.completions.create(stream=True)`, `responses.stream()`,
`messages.stream()`); a few text deltas in, the node that serves it dies (SIGKILL, its llama-server too), and the
client must still read one complete, well-formed stream: one id, the usage of the whole answer, and the text the
answer would have had: the dead server's part is the start of the unbroken answer at temperature 0, and the rest is
exactly the survivor's continuation of that part (said once: llama-server repeats a prefilled text, failover cuts
it). Ten kills in a row, the killed node restarted each time, the formats in turn. With no other server left, the
stream ends with the family's error event, which the client raises.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx
import openai
import pytest
from helpers.processes import NODE_STOP_TIMEOUT_S, NodeProcess, wait_for
from prometheus_client.parser import text_string_to_metric_families

from meshp2p.mesh.routing import rendezvous_weight

from .test_mesh_routing import REQUEST_TIMEOUT_S, ROUTING_TIMEOUT_S, _serving, start_mesh

MODEL = "tiny-dense"
FORMATS = ("chat", "responses", "messages")
KILLS = 10
#: Long enough that the answer is still being made when the kill lands (a few dozen deltas in at most).
MAX_TOKENS = 300
#: Tokens of a continuation that tell candidate splits apart (split_at).
PROBE_TOKENS = 12
#: Text deltas the client reads before the serving node is killed.
KILL_AFTER = 5
QUESTION = "Tell me about meshes."
#: Every request computes its whole prompt afresh: what a server has cached (the unbroken answer, an earlier round)
#: changes the last digits of its logits, and the tiny model's near-ties turn on them. The continuation failover
#: sends carries it on, so the survivor's answer to it is what `continued` asks again.
NO_CACHE = {"cache_prompt": False}


def openai_client(node: NodeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=node.base_url, api_key="unused", max_retries=0, timeout=REQUEST_TIMEOUT_S)


def anthropic_client(node: NodeProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{node.api_port}", api_key="unused", max_retries=0,
                               timeout=REQUEST_TIMEOUT_S)


@dataclass
class Read:
    """What a client read of one stream."""

    pieces: list[str] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    final_text: str = ""
    output_tokens: int = 0
    input_tokens: int = 0


def read_stream(fmt: str, node: NodeProcess, on_piece: Callable[[int], None] = lambda n: None,
                extra: dict[str, Any] | None = None, session: str | None = None) -> Read:
    """One streamed answer to QUESTION in `fmt` through `node`; `on_piece(n)` after the n-th text delta; a
    `session` routes it to that session's server (mesh/routing.py)."""
    read, extra = Read(), extra or {}
    headers = {"x-session-id": session} if session is not None else {}

    def got(piece: str | None) -> None:
        if piece:
            read.pieces.append(piece)
            on_piece(len(read.pieces))

    if fmt == "chat":
        stream = openai_client(node).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": QUESTION}], temperature=0, max_tokens=MAX_TOKENS,
            stream=True, stream_options={"include_usage": True}, extra_body=extra,
            extra_headers=headers)
        for chunk in stream:
            read.ids.add(chunk.id)
            if chunk.choices:
                got(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                read.output_tokens, read.input_tokens = chunk.usage.completion_tokens, chunk.usage.prompt_tokens
        read.final_text = "".join(read.pieces)
    elif fmt == "responses":
        with openai_client(node).responses.stream(model=MODEL, input=QUESTION, temperature=0,
                                                  max_output_tokens=MAX_TOKENS, extra_body=extra,
                                                  extra_headers=headers) as responses:
            for event in responses:
                if event.type == "response.output_text.delta":
                    read.ids.add(event.item_id)
                    got(event.delta)
                elif event.type in ("response.created", "response.completed"):
                    read.ids.add(event.response.id)
            final = responses.get_final_response()
        assert final.usage is not None
        read.final_text, read.output_tokens, read.input_tokens = (final.output_text, final.usage.output_tokens,
                                                                   final.usage.input_tokens)
        read.ids.add(final.id)
    else:
        with anthropic_client(node).messages.stream(model=MODEL, max_tokens=MAX_TOKENS,
                                                    messages=[{"role": "user", "content": QUESTION}],
                                                    extra_body={"temperature": 0, **extra},
                                                    extra_headers=headers) as messages:
            for event in messages:
                if event.type == "message_start":
                    read.ids.add(event.message.id)
                elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                    got(event.delta.text)
            message = messages.get_final_message()
        read.ids.add(message.id)
        read.final_text = "".join(b.text for b in message.content if b.type == "text")
        read.output_tokens, read.input_tokens = message.usage.output_tokens, message.usage.input_tokens
    return read


def continued(fmt: str, node: NodeProcess, before: str, tokens: int) -> str:
    """`node`'s own answer, not streamed, to the request that continues QUESTION after `before` (as failover asks
    it), without llama-server's repeat of the prefill."""
    if fmt == "chat":
        text = openai_client(node).chat.completions.create(
            model=MODEL, temperature=0, max_tokens=tokens, extra_body=NO_CACHE,
            messages=[{"role": "user", "content": QUESTION}, {"role": "assistant", "content": before}],
        ).choices[0].message.content or ""
    elif fmt == "responses":
        text = openai_client(node).responses.create(
            model=MODEL, temperature=0, max_output_tokens=tokens, extra_body=NO_CACHE,
            input=[{"role": "user", "content": QUESTION},
                   {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": before}]}],
        ).output_text
    else:
        message = anthropic_client(node).messages.create(
            model=MODEL, max_tokens=tokens, extra_body={"temperature": 0, **NO_CACHE},
            messages=[{"role": "user", "content": QUESTION}, {"role": "assistant", "content": before}])
        text = "".join(b.text for b in message.content if b.type == "text")
    return text.removeprefix(before)


def split_at(fmt: str, read: Read, unbroken: list[str], survivor: NodeProcess) -> int:
    """How many deltas the dead server gave: the split where the dead server's part is the unbroken answer's start
    and the rest the survivor's continuation of it. Deltas already on their way when the kill landed still reached
    the client, so the split is found, not assumed: the latest one the text allows, then earlier."""
    same = next((i for i, (x, y) in enumerate(zip(read.pieces, unbroken, strict=False)) if x != y),
                min(len(read.pieces), len(unbroken)))
    assert same >= KILL_AFTER, f"{fmt}: the client's first deltas are not the unbroken answer's"
    for split in range(same, KILL_AFTER - 1, -1):
        before, rest = "".join(read.pieces[:split]), "".join(read.pieces[split:])
        # A few tokens tell the splits apart; the one that fits is then checked to the end.
        if rest.startswith(continued(fmt, survivor, before, PROBE_TOKENS)) \
                and rest == continued(fmt, survivor, before, MAX_TOKENS - split):
            return split
    raise AssertionError(f"{fmt}: no split makes the text the unbroken start plus the survivor's continuation "
                         f"(the first {same} deltas are the unbroken answer's)")


def servers_seen(node: NodeProcess) -> int:
    models = httpx.get(node.base_url + "/models", timeout=10).json()["data"]
    return sum(len(m["meshp2p"]["nodes"]) for m in models if m["id"] == MODEL)


def killer(node: NodeProcess) -> Callable[[int], None]:
    """An `on_piece` that kills the whole machine of `node` KILL_AFTER deltas in: the node and its llama-server,
    without a word. Nothing is asked at that moment (every request to a node's console lets more of the answer
    through before the kill lands)."""
    backend = node.status()["models"][0]["pid"]

    def on_piece(n: int) -> None:
        if n == KILL_AFTER:
            node.process.send_signal(signal.SIGKILL)
            os.kill(backend, signal.SIGKILL)

    return on_piece


def session_for(node: NodeProcess, other: NodeProcess) -> str:
    """A session that mesh/routing.py sends to `node` rather than `other` (rendezvous hashing)."""
    mine, theirs = node.status()["mesh"]["peer_id"], other.status()["mesh"]["peer_id"]
    return next(key for key in (f"session-{i}" for i in range(1000))
                if rendezvous_weight(key, mine) > rendezvous_weight(key, theirs))


def restart(node: NodeProcess) -> None:
    node._start(node.api_port, node.console_port)
    node.wait_ready()


def formats() -> Iterator[str]:
    while True:
        yield from FORMATS


def test_every_format_fails_over_mid_stream_ten_kills_in_a_row(node_factory, tiny_models, bootstrap):
    a, d, c = start_mesh(node_factory, bootstrap, "formats-failover",
                         ("a", ("--model", str(tiny_models.dense))),
                         ("d", ("--model", str(tiny_models.dense))),
                         ("c", ("--client",)))
    wait_for(lambda: servers_seen(c) == 2, ROUTING_TIMEOUT_S, "C to see both servers")
    unbroken = {fmt: read_stream(fmt, a, extra=NO_CACHE).pieces for fmt in FORMATS}
    started = time.monotonic()
    next_format = formats()
    sessions = {a: session_for(a, d), d: session_for(d, a)}
    for round_ in range(KILLS):
        fmt = next(next_format)
        victim, survivor = (a, d) if round_ % 2 == 0 else (d, a)
        where = f"round {round_} ({fmt}, {victim.home.name} killed)"
        served = _serving((survivor,), MODEL)[survivor]
        t0 = time.monotonic()
        read = read_stream(fmt, c, killer(victim), extra=NO_CACHE, session=sessions[victim])
        t1 = time.monotonic()
        victim.process.wait(NODE_STOP_TIMEOUT_S)
        # One request more: the continuation (none would mean the answer was whole before the kill landed).
        assert _serving((survivor,), MODEL)[survivor] == served + 1, f"{where}: the survivor did not continue it"
        assert len(read.ids) == 1 + (fmt == "responses"), f"{where}: ids {read.ids}"  # responses: + its message
        assert len(read.pieces) == MAX_TOKENS and read.final_text == "".join(read.pieces), where
        assert read.output_tokens == MAX_TOKENS, f"{where}: usage says {read.output_tokens} output tokens"
        assert read.input_tokens > 0, where
        split = split_at(fmt, read, unbroken[fmt], survivor)
        t2 = time.monotonic()
        restart(victim)
        t3 = time.monotonic()
        wait_for(lambda: servers_seen(c) == 2, ROUTING_TIMEOUT_S, "C to see the restarted server")
        print(f"{where}: split {split}, stream {t1 - t0:.1f} s, check {t2 - t1:.1f} s, restart {t3 - t2:.1f} s, "
              f"seen {time.monotonic() - t3:.1f} s")
    took = time.monotonic() - started
    print(f"{KILLS} kills mid-stream, each answer completed on the other server: {took:.1f} s")
    # C's /metrics: each answer one request begun through a peer, and one move to the other server.
    counted = {(s.name, tuple(sorted(s.labels.items()))): s.value for family in text_string_to_metric_families(
        httpx.get(c.console_url + "/metrics", timeout=10).text) for s in family.samples}
    assert counted[("meshp2p_failovers_total", (("model", MODEL),))] == KILLS
    assert counted[("meshp2p_requests_total", (("model", MODEL), ("route", "peer"), ("status_class", "2xx")))] == KILLS


ERRORS: dict[str, type[Exception]] = {"chat": openai.APIError, "responses": openai.APIError,
                                      "messages": anthropic.APIStatusError}


@pytest.mark.parametrize("fmt", FORMATS)
def test_with_no_other_server_the_stream_ends_with_the_family_error(node_factory, tiny_models, bootstrap, fmt):
    a, c = start_mesh(node_factory, bootstrap, f"formats-last-{fmt}",
                      ("a", ("--model", str(tiny_models.dense))),
                      ("c", ("--client",)))
    wait_for(lambda: servers_seen(c) == 1, ROUTING_TIMEOUT_S, "C to see A")

    with pytest.raises(ERRORS[fmt]) as raised:
        read_stream(fmt, c, killer(a))
    assert "no other is available" in str(raised.value)
    if fmt == "messages":
        assert raised.value.body["error"]["type"] == "overloaded_error"  # type: ignore[attr-defined]
