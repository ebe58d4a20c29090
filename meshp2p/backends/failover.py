"""One request over a model's servers, in the order mesh/routing.py gives, carrying on elsewhere when one fails.

A server that answers nothing (BackendUnavailable) is left for the next one. A stream that breaks mid-answer
continues on another server of the same model: the request is replayed with the text already produced appended
(the prompt for /v1/completions; a partial assistant message, which llama-server continues, for chat), and the
new server's events are rewritten to carry the first server's `id` and `created`, so the client reads one complete,
well-formed stream. When no server is left, the stream raises BackendBroke (the API ends it with an error event)
and a request not yet answered raises BackendUnavailable.

The event tracking and the continuation are pure (`Progress`, `track`, `continuation`); `answer` drives them.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshp2p.backends.base import CHAT_PATH, COMPLETIONS_PATH, Backend, BackendRequest, Reply
from meshp2p.errors import BackendBroke, BackendError, BackendUnavailable
from meshp2p.mesh.routing import ServerCandidate, failover_order

log = logging.getLogger(__name__)

_DONE = b"data: [DONE]"


@dataclass
class Progress:
    """What a stream has delivered so far: enough to continue it elsewhere and to keep it one stream."""

    text: str = ""
    tokens: int = 0
    id: str | None = None
    created: int | None = None
    failed: set[str] = field(default_factory=set)


async def answer(candidates: Sequence[ServerCandidate], backend_for: Callable[[ServerCandidate], Backend],
                 request: BackendRequest, *, session_key: str | None, local_id: str) -> Reply:
    """The answer of the best server that gives one; BackendUnavailable when none does."""
    progress = Progress()
    route = _Route(candidates, backend_for, session_key, local_id, request.model)
    reply, server = await route.first_answer(request, progress)
    if not (request.stream and reply.status == 200):
        return reply
    current = [reply]

    async def close() -> None:
        await current[0].aclose()

    return Reply(reply.status, reply.headers, None, _stream_with_failover(route, request, reply, server, progress,
                                                                          current), close)


@dataclass
class _Route:
    candidates: Sequence[ServerCandidate]
    backend_for: Callable[[ServerCandidate], Backend]
    session_key: str | None
    local_id: str
    model: str

    async def first_answer(self, request: BackendRequest, progress: Progress) -> tuple[Reply, ServerCandidate]:
        retry_after = 1
        last: BackendUnavailable | None = None
        while True:
            order = failover_order(self.candidates, failed=progress.failed, session_key=self.session_key,
                                   local_id=self.local_id)
            if not order:
                if last is not None and len(self.candidates) == 1:
                    raise last  # the only server's own reason says more ("is loading; retry in 9 s")
                raise BackendUnavailable(f"no server of model '{self.model}' is answering; retry in {retry_after} s",
                                         retry_after_s=retry_after)
            server = order[0]
            try:
                return await self.backend_for(server).send(request), server
            except BackendUnavailable as exc:
                log.info("server %s of %s failed before answering: %s", server.peer_id, self.model, exc.message)
                progress.failed.add(server.peer_id)
                retry_after = max(retry_after, exc.retry_after_s or 1)
                last = exc


async def _stream_with_failover(route: _Route, request: BackendRequest, reply: Reply, server: ServerCandidate,
                                progress: Progress, current: list[Reply]) -> AsyncIterator[bytes]:
    while True:
        try:
            async for event in events(reply):
                out = track(event, progress, request.path)
                if out is not None:
                    yield out
            return
        except BackendError as exc:
            progress.failed.add(server.peer_id)
            log.warning("server %s broke mid-stream (%s); continuing elsewhere", server.peer_id, exc.message)
        finally:
            await reply.aclose()
        body = continuation(request.payload, request.path, progress)
        if body is None:
            raise BackendBroke("the stream broke and this request cannot be continued elsewhere")
        try:
            reply, server = await route.first_answer(request.with_payload(body), progress)
        except BackendUnavailable as exc:
            raise BackendBroke(f"the server broke mid-answer and no other is available: {exc.message}") from exc
        current[0] = reply
        if reply.status != 200 or reply.chunks is None:
            await reply.aclose()
            raise BackendBroke(f"the replacement server answered {reply.status}")


async def events(reply: Reply) -> AsyncIterator[bytes]:
    """Whole server-sent events (`data: ...`), however the chunks split them."""
    assert reply.chunks is not None
    buffer = b""
    async for chunk in reply.chunks:
        buffer += chunk
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            if event.strip():
                yield event.strip()
    if buffer.strip():
        yield buffer.strip()


def track(event: bytes, progress: Progress, path: str) -> bytes | None:
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


def continuation(payload: dict[str, Any], path: str, progress: Progress) -> dict[str, Any] | None:
    """The request body that continues the answer after `progress`; None when it cannot be expressed."""
    body = copy.deepcopy(payload)
    for key in ("max_tokens", "max_completion_tokens", "n_predict"):
        if isinstance(body.get(key), int):
            body[key] = max(1, body[key] - progress.tokens)
    if path == COMPLETIONS_PATH and isinstance(body.get("prompt"), str):
        body["prompt"] += progress.text
        return body
    if path == CHAT_PATH and isinstance(body.get("messages"), list):
        if progress.text:
            body["messages"].append({"role": "assistant", "content": progress.text})
        return body
    return None
