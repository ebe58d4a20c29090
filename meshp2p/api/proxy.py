"""Forwarding one OpenAI request to a llama-server and passing its answer back.

Streams are passed through as the backend's bytes arrive (no re-framing, no buffering). A backend that
fails before answering becomes a 503 with Retry-After; one that fails mid-stream ends the stream with an
OpenAI-style error event, so a client never hangs on a half-finished answer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import trio

from meshp2p.api.errors import UNAVAILABLE, ApiError, sse_error_event
from meshp2p.api.upstream import UpstreamError, UpstreamPool, UpstreamResponse
from meshp2p.hosts import LOOPBACK_HOST
from meshp2p.inference.llama_server import LlamaServer

EMBEDDINGS_PATH = "/v1/embeddings"
_HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"})


class BackendFailed(Exception):
    """The llama-server broke mid-answer (raised instead of an error event when the caller relays elsewhere)."""


@dataclass
class BackendReply:
    status: int
    headers: dict[str, str]
    #: The whole body for non-streamed answers.
    body: bytes | None
    #: The body as it arrives, for streamed answers.
    chunks: AsyncIterator[bytes] | None


def unavailable(server: LlamaServer, why: str) -> ApiError:
    retry = server.retry_after_s()
    return ApiError(
        503,
        f"model '{server.model.id}' is {why}; retry in {retry} s",
        type=UNAVAILABLE,
        code="model_unavailable",
        headers={"Retry-After": str(retry)},
    )


async def forward(
    pool: UpstreamPool, server: LlamaServer, path: str, body: bytes, *, stream: bool, on_done: Callable[[], None],
    raise_mid_stream: bool = False,
) -> BackendReply:
    """POST `body` to the backend's `path`; raise ApiError(503) if the backend cannot take it.

    `on_done` runs exactly once, when the answer is over: at once for errors and whole bodies, at the end of
    the relay (or when the client goes away) for streams. A backend that breaks mid-stream ends the stream with
    an error event, or, with `raise_mid_stream`, raises BackendFailed (the tunnel turns it into an ERROR frame).
    """
    try:
        if not server.is_ready or server.port is None:
            raise unavailable(server, str(server.state.value))
        try:
            response = await pool.request("POST", LOOPBACK_HOST, server.port, path, body)
        except UpstreamError as exc:
            raise unavailable(server, "not answering") from exc
        headers = {k: v for k, v in response.headers if k.lower() not in _HOP_HEADERS}
        if stream and response.status == 200:
            return BackendReply(response.status, headers, None,
                                _relay(response, server, on_done, raise_mid_stream=raise_mid_stream))
        try:
            data = await response.read()
        except UpstreamError as exc:
            raise unavailable(server, "failing") from exc
        finally:
            await response.aclose()
    except BaseException:
        on_done()
        raise
    on_done()
    return BackendReply(response.status, headers, data, None)


async def _relay(response: UpstreamResponse, server: LlamaServer, on_done: Callable[[], None], *,
                 raise_mid_stream: bool) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.iter_body():
            yield chunk
    except UpstreamError as exc:
        if raise_mid_stream:
            raise BackendFailed(f"the backend of model '{server.model.id}' failed mid-answer: {exc}") from exc
        yield sse_error_event(
            f"the backend of model '{server.model.id}' failed mid-answer ({exc}); the answer is incomplete",
            code="backend_failed",
        )
    finally:
        on_done()
        with trio.CancelScope(shield=True):
            await response.aclose()


async def answer_locally(
    pool: UpstreamPool, server: LlamaServer, path: str, payload: dict[str, Any], raw: bytes, *,
    on_done: Callable[[], None], raise_mid_stream: bool = False,
) -> BackendReply:
    """Answer with this node's own llama-server: the one place that knows how a local model is asked.

    Used for the node's own API clients and for requests other nodes send through the tunnel.
    """
    if path == EMBEDDINGS_PATH and not server.model.embeddings:
        on_done()
        raise ApiError(400, f"model '{server.model.id}' does not serve embeddings", param="model",
                       code="embeddings_not_supported")
    body = with_default_stop(payload, server.model.default_stop) or raw
    return await forward(pool, server, path, body, stream=payload.get("stream") is True, on_done=on_done,
                         raise_mid_stream=raise_mid_stream)


def with_default_stop(payload: dict[str, object], stop: tuple[str, ...]) -> bytes | None:
    """The body with the model's default stop strings, or None when the client set its own."""
    if not stop or payload.get("stop") is not None:
        return None
    return json.dumps({**payload, "stop": list(stop)}).encode()
