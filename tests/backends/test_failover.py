"""Failover on plain data: which server answers, how a broken stream continues on another, and what the client
reads (one id, no second role delta, the text once). The servers are scripted `Backend`s, the seam every real one
(backends/local.py, backends/peer.py) implements; the processes behind them are tested in tests/mesh/."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from meshp2p.backends import failover
from meshp2p.backends.base import CHAT_PATH, COMPLETIONS_PATH, BackendRequest, Reply, when_done
from meshp2p.errors import BackendBroke, BackendUnavailable
from meshp2p.mesh.routing import ServerCandidate


def event(**data: Any) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def chat_event(id_: str, content: str | None = None, role: str | None = None) -> bytes:
    delta = {k: v for k, v in (("content", content), ("role", role)) if v is not None}
    return event(id=id_, created=int(id_[-1]), choices=[{"delta": delta}])


class Scripted:
    """A server that answers with `events` (cut into odd chunks), breaks after `break_after` of them, or refuses."""

    def __init__(self, events: list[bytes] | None = None, *, break_after: int | None = None,
                 refuse_retry_s: int | None = None) -> None:
        self.events, self.break_after, self.refuse_retry_s = events or [], break_after, refuse_retry_s
        self.asked: list[BackendRequest] = []
        self.closed = 0

    async def send(self, request: BackendRequest) -> Reply:
        self.asked.append(request)
        if self.refuse_retry_s is not None:
            raise BackendUnavailable("refused", retry_after_s=self.refuse_retry_s)
        if not request.stream:
            return Reply(200, {"content-type": "application/json"}, b"{}")
        return Reply(200, {"content-type": "text/event-stream"}, None, self._chunks(), self._close)

    async def _chunks(self) -> AsyncIterator[bytes]:
        data = b"".join(self.events[: self.break_after])
        for i in range(0, len(data), 7):  # events split across chunks, as a socket delivers them
            yield data[i:i + 7]
        if self.break_after is not None:
            raise BackendBroke("died")

    async def _close(self) -> None:
        self.closed += 1


def candidates(*ids: str) -> list[ServerCandidate]:
    return [ServerCandidate(peer_id, float(i), 1.0, False) for i, peer_id in enumerate(ids)]


def request(path: str = CHAT_PATH, **payload: Any) -> BackendRequest:
    body = {"model": "m", "stream": True, "max_tokens": 10, **payload}
    if path == CHAT_PATH:
        body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return BackendRequest(path, body, json.dumps(body).encode(), "m")


async def read_all(reply: Reply) -> bytes:
    try:
        return await reply.read()
    finally:
        await reply.aclose()


async def test_a_server_that_refuses_is_left_for_the_next():
    servers = {"a": Scripted(refuse_retry_s=9), "b": Scripted()}
    reply = await failover.answer(candidates("a", "b"), lambda c: servers[c.peer_id], request(stream=False),
                                  session_key=None, local_id="me")
    assert await read_all(reply) == b"{}"
    assert [len(s.asked) for s in servers.values()] == [1, 1]


async def test_when_every_server_refuses_the_longest_retry_is_said():
    servers = {"a": Scripted(refuse_retry_s=9), "b": Scripted(refuse_retry_s=3)}
    with pytest.raises(BackendUnavailable) as caught:
        await failover.answer(candidates("a", "b"), lambda c: servers[c.peer_id], request(),
                              session_key=None, local_id="me")
    assert caught.value.retry_after_s == 9 and "no server of model 'm'" in caught.value.message


async def test_the_only_server_s_own_reason_is_kept():
    with pytest.raises(BackendUnavailable) as caught:
        await failover.answer(candidates("a"), lambda c: Scripted(refuse_retry_s=4), request(),
                              session_key=None, local_id="me")
    assert (caught.value.message, caught.value.retry_after_s) == ("refused", 4)


async def test_a_stream_broken_mid_answer_continues_elsewhere_as_one_stream():
    first = Scripted([chat_event("id1", role="assistant"), chat_event("id1", "Hel"), chat_event("id1", "lo")],
                     break_after=3)
    second = Scripted([chat_event("id2", role="assistant"), chat_event("id2", " world"), b"data: [DONE]\n\n"])
    servers = {"a": first, "b": second}
    reply = await failover.answer(candidates("a", "b"), lambda c: servers[c.peer_id], request(),
                                  session_key=None, local_id="me")
    received = await read_all(reply)
    events = [e for e in received.split(b"\n\n") if e]
    decoded = [json.loads(e[6:]) for e in events[:-1]]
    assert {d["id"] for d in decoded} == {"id1"} and {d["created"] for d in decoded} == {1}
    roles = [d for d in decoded if d["choices"][0]["delta"].get("role")]
    assert len(roles) == 1, "the replacement's opening role delta is dropped"
    assert "".join(d["choices"][0]["delta"].get("content", "") for d in decoded) == "Hello world"
    assert events[-1] == b"data: [DONE]"
    continued = second.asked[0].payload
    assert continued["messages"][-1] == {"role": "assistant", "content": "Hello"}
    assert continued["max_tokens"] == 8, "two tokens were delivered"
    assert first.closed == 1 and second.closed == 1


async def test_a_broken_stream_with_no_other_server_raises_for_the_api_to_end_it():
    servers = {"a": Scripted([chat_event("id1", "x")], break_after=1), "b": Scripted(refuse_retry_s=1)}
    reply = await failover.answer(candidates("a", "b"), lambda c: servers[c.peer_id], request(),
                                  session_key=None, local_id="me")
    with pytest.raises(BackendBroke) as caught:
        await read_all(reply)
    assert "no other is available" in caught.value.message


async def test_a_completion_continues_from_its_prompt():
    first = Scripted([event(id="c1", created=1, choices=[{"index": 0, "text": t}]) for t in ("Once", " upon")],
                     break_after=2)
    second = Scripted([event(id="c2", created=2, choices=[{"index": 0, "text": " a time"}]), b"data: [DONE]\n\n"])
    servers = {"a": first, "b": second}
    reply = await failover.answer(candidates("a", "b"), lambda c: servers[c.peer_id],
                                  request(COMPLETIONS_PATH, prompt="Tell:", max_tokens=5), session_key=None,
                                  local_id="me")
    received = [e for e in (await read_all(reply)).split(b"\n\n") if e]
    assert [json.loads(e[6:])["choices"][0]["text"] for e in received[:-1]] == ["Once", " upon", " a time"]
    assert second.asked[0].payload["prompt"] == "Tell:Once upon" and second.asked[0].payload["max_tokens"] == 3


async def test_a_tool_call_in_flight_is_not_replayed_elsewhere():
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get", "arguments": "{"}}
    first = Scripted([chat_event("id1", role="assistant"),
                      event(id="id1", created=1, choices=[{"index": 0, "delta": {"tool_calls": [call]}}])],
                     break_after=2)
    second = Scripted([chat_event("id2", "never")])
    servers = {"a": first, "b": second}
    reply = await failover.answer(candidates("a", "b"), lambda c: servers[c.peer_id], request(),
                                  session_key=None, local_id="me")
    with pytest.raises(BackendBroke) as caught:
        await read_all(reply)
    assert "tool call" in caught.value.message and second.asked == []


async def test_a_stream_broken_after_its_last_answer_event_is_ended_not_asked_again():
    finish = event(id="id1", created=1, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])
    first = Scripted([chat_event("id1", "Hi"), finish], break_after=2)
    second = Scripted([chat_event("id2", "again")])
    servers = {"a": first, "b": second}
    reply = await failover.answer(candidates("a", "b"), lambda c: servers[c.peer_id], request(),
                                  session_key=None, local_id="me")
    received = await read_all(reply)
    assert received.endswith(b"data: [DONE]\n\n") and second.asked == []


@pytest.mark.parametrize("stop_early", [False, True], ids=["read to the end", "reader stopped early"])
async def test_when_done_counts_a_request_once(stop_early: bool):
    done: list[int] = []
    reply = when_done(await Scripted([event(n=1), event(n=2)]).send(request()), lambda: done.append(1))
    assert reply.chunks is not None
    if stop_early:
        async for _ in reply.chunks:
            break
    else:
        await reply.read()
    await reply.aclose()
    await reply.aclose()
    assert done == [1]
    whole = when_done(Reply(200, {}, b"{}"), lambda: done.append(2))
    assert done == [1, 2] and await whole.read() == b"{}"
