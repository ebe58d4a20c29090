"""The one shape of a request to a model and of its answer, whichever server gives it.

A `Backend` is anything that answers a `BackendRequest` with a `Reply`: this node's llama-server (`local.py`) or a
peer's, through the HTTP tunnel (`peer.py`); `failover.py` tries them in the order `mesh/routing.py` gives. Their
failures are the `BackendError` family of `meshp2p/errors.py` and nothing else: each backend maps its foreign
errors (h11's, the tunnel's) once, where it meets them, and api/errors.py maps the family to HTTP.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

# Re-exported: the paths failover treats specially were defined here before endpoints.py's table.
from meshp2p.backends.endpoints import CHAT_PATH as CHAT_PATH
from meshp2p.backends.endpoints import COMPLETIONS_PATH as COMPLETIONS_PATH
from meshp2p.errors import BackendError

#: The headers of a JSON body (requests sent on through the tunnel, error answers).
JSON_HEADERS = (("content-type", "application/json"),)
#: Headers of one hop only (RFC 9110 §7.6.1, and the framing a relay redoes): never passed on.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
                        "upgrade", "content-length", "server", "date"})
#: What never crosses the tunnel either: the asking node's host and its client's credentials, OpenAI's and
#: Anthropic's alike (protocols/http-tunnel.md): the asking node's gate checked them, and a peer must not see them.
NOT_TUNNELLED = HOP_BY_HOP | {"host", "authorization", "x-api-key", "cookie"}


def end_to_end(headers: Iterable[tuple[str, str]], *, drop: frozenset[str] = HOP_BY_HOP) -> dict[str, str]:
    """The headers worth passing on, names lower-cased."""
    return {k.lower(): v for k, v in headers if k.lower() not in drop}


@dataclass(frozen=True)
class BackendRequest:
    """One OpenAI request as it is sent to a model: the path, the parsed body and the bytes it came as."""

    path: str
    payload: dict[str, Any]
    raw: bytes
    model: str

    @property
    def stream(self) -> bool:
        return self.payload.get("stream") is True

    def with_payload(self, payload: dict[str, Any]) -> BackendRequest:
        """The same request with another body (a continuation, the model's default stop strings)."""
        return BackendRequest(self.path, payload, json.dumps(payload).encode(), self.model)


async def _nothing() -> None:
    return None


@dataclass
class Reply:
    """A model's answer: the head, then either the whole `body` or `chunks` as they arrive.

    `chunks` raises a BackendError when the answer breaks off, and releases what carries the answer (a pooled
    connection, a tunnel stream) when it ends. `aclose` releases it too, for an answer not read to its end; it is
    safe to call more than once.
    """

    status: int
    headers: dict[str, str]
    body: bytes | None = None
    chunks: AsyncIterator[bytes] | None = None
    _close: Callable[[], Awaitable[None]] = field(default=_nothing, repr=False)

    async def read(self) -> bytes:
        """The whole body (a streamed one read to its end)."""
        if self.chunks is None:
            return self.body or b""
        return b"".join([chunk async for chunk in self.chunks])

    async def aclose(self) -> None:
        close, self._close = self._close, _nothing
        chunks_close = getattr(self.chunks, "aclose", None)
        if chunks_close is not None:
            await chunks_close()
        await close()


def when_done(reply: Reply, done: Callable[[], None]) -> Reply:
    """`reply` that calls `done()` exactly once, when it is over: at once for a whole body, when the stream ends
    (or its reader stops early) for chunks. The API and the tunnel count requests in flight with it."""
    if reply.chunks is None:
        done()
        return reply
    inner, called = reply.chunks, False

    def once() -> None:
        nonlocal called
        if not called:
            called = True
            done()

    async def counted() -> AsyncIterator[bytes]:
        try:
            async for chunk in inner:
                yield chunk
        finally:
            once()

    async def close() -> None:
        once()
        await reply.aclose()

    return Reply(reply.status, reply.headers, None, counted(), close)


async def passed_on(reply: Reply, on_break: Callable[[BackendError], bytes]) -> AsyncIterator[bytes]:
    """`reply`'s chunks as they come, then what `on_break` makes of a break-off: a last chunk (the API's error
    event), or it raises (the tunnel's error frame). The reply is released at the end either way."""
    assert reply.chunks is not None, "a streamed reply"
    try:
        async for chunk in reply.chunks:
            yield chunk
    except BackendError as exc:
        yield on_break(exc)
    finally:
        await reply.aclose()


class Backend(Protocol):
    async def send(self, request: BackendRequest) -> Reply:
        """The answer's head (and, unless streamed, its body); BackendUnavailable when nothing was answered."""
        ...
