"""Forwarding one OpenAI request to a llama-server and passing its answer back.

Streams are passed through as the backend's bytes arrive (no re-framing, no buffering). A backend that
fails before answering becomes a 503 with Retry-After; one that fails mid-stream ends the stream with an
OpenAI-style error event, so a client never hangs on a half-finished answer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import trio

from meshp2p.api.errors import UNAVAILABLE, ApiError, sse_error_event
from meshp2p.api.upstream import UpstreamError, UpstreamPool, UpstreamResponse
from meshp2p.inference.llama_server import LlamaServer
from meshp2p.inference.ports import LOOPBACK

_HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"})


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
    pool: UpstreamPool, server: LlamaServer, path: str, body: bytes, *, stream: bool, on_done: Callable[[], None]
) -> BackendReply:
    """POST `body` to the backend's `path`; raise ApiError(503) if the backend cannot take it.

    `on_done` runs exactly once, when the answer is over: at once for errors and whole bodies, at the end of
    the relay (or when the client goes away) for streams.
    """
    try:
        if not server.is_ready or server.port is None:
            raise unavailable(server, str(server.state.value))
        try:
            response = await pool.request("POST", LOOPBACK, server.port, path, body)
        except UpstreamError as exc:
            raise unavailable(server, "not answering") from exc
        headers = {k: v for k, v in response.headers if k.lower() not in _HOP_HEADERS}
        if stream and response.status == 200:
            return BackendReply(response.status, headers, None, _relay(response, server, on_done))
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


async def _relay(response: UpstreamResponse, server: LlamaServer, on_done: Callable[[], None]) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.iter_body():
            yield chunk
    except UpstreamError as exc:
        yield sse_error_event(
            f"the backend of model '{server.model.id}' failed mid-answer ({exc}); the answer is incomplete",
            code="backend_failed",
        )
    finally:
        on_done()
        with trio.CancelScope(shield=True):
            await response.aclose()


def with_default_stop(payload: dict[str, object], stop: tuple[str, ...]) -> bytes | None:
    """The body with the model's default stop strings, or None when the client set its own."""
    if not stop or payload.get("stop") is not None:
        return None
    return json.dumps({**payload, "stop": list(stop)}).encode()
