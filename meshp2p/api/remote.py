"""Answering from another node's llama-server, and carrying on elsewhere when that node fails.

Non-streamed requests that fail are simply sent to the next server. A stream that breaks mid-answer continues
on another server of the same model: the request is replayed with the text already produced appended (the
prompt for /v1/completions; a partial assistant message, which llama-server continues, for chat), and the
new server's events are rewritten to carry the first server's `id` and `created`, so the client reads one
complete, well-formed stream. When no server is left, the stream ends with an OpenAI-style error event.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshp2p.api.errors import UNAVAILABLE, ApiError, sse_error_event
from meshp2p.api.gateway import MeshGateway, RemoteFailure, RemoteReply
from meshp2p.mesh.routing import ServerCandidate, failover_order

log = logging.getLogger("meshp2p.api.remote")

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
_HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"})
_DONE = b"data: [DONE]"


@dataclass
class RemoteAnswer:
    status: int
    headers: dict[str, str]
    body: bytes | None = None
    chunks: AsyncIterator[bytes] | None = None


@dataclass
class _Progress:
    """What a stream has delivered so far: enough to continue it elsewhere and to keep it one stream."""

    text: str = ""
    tokens: int = 0
    id: str | None = None
    created: int | None = None
    failed: set[str] = field(default_factory=set)


def _headers(reply: RemoteReply) -> dict[str, str]:
    return {k: v for k, v in reply.headers if k.lower() not in _HOP_HEADERS}


async def forward_remote(
    gateway: MeshGateway,
    candidates: Sequence[ServerCandidate],
    path: str,
    payload: dict[str, Any],
    raw: bytes,
    *,
    stream: bool,
    session_key: str | None,
    model_id: str,
    on_done: Callable[[], None],
) -> RemoteAnswer:
    """Send the request to the best remote server, falling back to the others; 503 when none answers.

    `on_done` runs once when the answer is over (for a stream: when the stream ends or the client leaves).
    """
    progress = _Progress()
    handed_over = False
    try:
        while True:
            reply, server = await _first_answer(gateway, candidates, path, raw, progress, session_key, model_id)
            if stream and reply.status == 200:
                handed_over = True
                chunks = _stream_with_failover(gateway, candidates, path, payload, reply, server, progress,
                                               session_key, model_id, on_done)
                return RemoteAnswer(reply.status, _headers(reply), None, chunks)
            try:
                return RemoteAnswer(reply.status, _headers(reply), await reply.read())
            except RemoteFailure as exc:
                progress.failed.add(server.peer_id)
                log.info("%s failed mid-answer (%s); retrying elsewhere", server.peer_id, exc)
            finally:
                await reply.aclose()
    finally:
        if not handed_over:
            on_done()


async def _first_answer(
    gateway: MeshGateway, candidates: Sequence[ServerCandidate], path: str, body: bytes, progress: _Progress,
    session_key: str | None, model_id: str,
) -> tuple[RemoteReply, ServerCandidate]:
    retry_after = 1
    while True:
        order = failover_order(candidates, failed=progress.failed, session_key=session_key,
                               local_id=gateway.local_id)
        if not order:
            raise ApiError(503, f"no server of model '{model_id}' is answering; retry in {retry_after} s",
                           type=UNAVAILABLE, code="model_unavailable", headers={"Retry-After": str(retry_after)})
        server = order[0]
        try:
            return await gateway.request(server.peer_id, path, body, model=model_id), server
        except RemoteFailure as exc:
            log.info("server %s of %s failed before answering: %s", server.peer_id, model_id, exc)
            progress.failed.add(server.peer_id)
            retry_after = max(retry_after, exc.retry_after_s or 1)


async def _stream_with_failover(
    gateway: MeshGateway, candidates: Sequence[ServerCandidate], path: str, payload: dict[str, Any],
    reply: RemoteReply, server: ServerCandidate, progress: _Progress, session_key: str | None, model_id: str,
    on_done: Callable[[], None],
) -> AsyncIterator[bytes]:
    try:
        while True:
            try:
                async for event in _events(reply):
                    out = _track(event, progress, path)
                    if out is not None:
                        yield out
                return
            except RemoteFailure as exc:
                progress.failed.add(server.peer_id)
                log.warning("server %s broke mid-stream (%s); continuing elsewhere", server.peer_id, exc)
            finally:
                await reply.aclose()
            continuation = _continuation(payload, path, progress)
            if continuation is None:
                yield sse_error_event("the stream broke and this request cannot be continued elsewhere",
                                      code="backend_failed")
                return
            try:
                reply, server = await _first_answer(gateway, candidates, path, continuation, progress,
                                                    session_key, model_id)
            except ApiError as exc:
                yield sse_error_event(f"the server broke mid-answer and no other is available: {exc.message}",
                                      code="backend_failed")
                return
            if reply.status != 200:
                await reply.aclose()
                yield sse_error_event(f"the replacement server answered {reply.status}", code="backend_failed")
                return
    finally:
        on_done()


async def _events(reply: RemoteReply) -> AsyncIterator[bytes]:
    """Whole server-sent events (`data: ...`), however the chunks split them."""
    buffer = b""
    async for chunk in reply.chunks():
        buffer += chunk
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            if event.strip():
                yield event.strip()
    if buffer.strip():
        yield buffer.strip()


def _track(event: bytes, progress: _Progress, path: str) -> bytes | None:
    """Note what the event delivers and give it the stream's first id/created; None drops it."""
    if event == _DONE or not event.startswith(b"data: "):
        return event + b"\n\n"
    try:
        data = json.loads(event[6:])
    except ValueError:
        return event + b"\n\n"
    if not isinstance(data, dict):
        return event + b"\n\n"
    rewritten = False
    if progress.id is None:
        progress.id, progress.created = data.get("id"), data.get("created")
    elif data.get("id") != progress.id:
        data["id"], data["created"] = progress.id, progress.created
        rewritten = True
    for choice in data.get("choices") or []:
        piece = (choice.get("delta") or {}).get("content") if path == CHAT_PATH else choice.get("text")
        if isinstance(piece, str) and piece:
            progress.text += piece
            progress.tokens += 1
        elif rewritten and path == CHAT_PATH and (choice.get("delta") or {}).get("role") and progress.tokens:
            # The new server opens its stream with a role-only delta: the client already had one.
            return None
    return (b"data: " + json.dumps(data).encode() + b"\n\n") if rewritten else event + b"\n\n"


def _continuation(payload: dict[str, Any], path: str, progress: _Progress) -> bytes | None:
    """The request that continues the answer after `progress`; None when it cannot be expressed."""
    body = copy.deepcopy(payload)
    for key in ("max_tokens", "max_completion_tokens", "n_predict"):
        if isinstance(body.get(key), int):
            body[key] = max(1, body[key] - progress.tokens)
    if path == COMPLETIONS_PATH and isinstance(body.get("prompt"), str):
        body["prompt"] += progress.text
        return json.dumps(body).encode()
    if path == CHAT_PATH and isinstance(body.get("messages"), list):
        if progress.text:
            body["messages"].append({"role": "assistant", "content": progress.text})
        return json.dumps(body).encode()
    return None
