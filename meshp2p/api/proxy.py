"""Forwarding one OpenAI request to a llama-server and passing its answer back.

Streams are passed through as the backend's bytes arrive (no re-framing, no buffering). A backend that
fails before answering becomes a 503 with Retry-After; one that fails mid-stream ends the stream with an
OpenAI-style error event, so a client never hangs on a half-finished answer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import trio

from meshp2p.api.errors import UNAVAILABLE, ApiError, sse_error_event
from meshp2p.inference.llama_server import LlamaServer

#: Between two chunks of one answer; a long prompt on a slow CPU can take this long before its first token.
BACKEND_READ_TIMEOUT_S = 600.0
BACKEND_CONNECT_TIMEOUT_S = 5.0
_HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"})


@dataclass
class BackendReply:
    status: int
    headers: dict[str, str]
    #: The whole body for non-streamed answers.
    body: bytes | None
    #: The body as it arrives, for streamed answers.
    chunks: AsyncIterator[bytes] | None


def make_backend_client() -> httpx.AsyncClient:
    """One pooled client per node: keep-alive to llama-server saves a connect per request."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(BACKEND_READ_TIMEOUT_S, connect=BACKEND_CONNECT_TIMEOUT_S),
        limits=httpx.Limits(max_connections=512, max_keepalive_connections=64),
    )


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
    client: httpx.AsyncClient, server: LlamaServer, path: str, body: bytes, *, stream: bool
) -> BackendReply:
    """POST `body` to the backend's `path`; raise ApiError(503) if the backend cannot take it."""
    if not server.is_ready:
        raise unavailable(server, str(server.state.value))
    request = client.build_request(
        "POST", server.base_url + path, content=body, headers={"content-type": "application/json"}
    )
    try:
        response = await client.send(request, stream=True)
    except httpx.TransportError as exc:
        raise unavailable(server, f"not answering ({type(exc).__name__})") from exc
    headers = {k: v for k, v in response.headers.items() if k.lower() not in _HOP_HEADERS}
    if not stream or response.status_code != 200:
        try:
            data = await response.aread()
        except httpx.TransportError as exc:
            raise unavailable(server, f"failing ({type(exc).__name__})") from exc
        finally:
            await response.aclose()
        return BackendReply(response.status_code, headers, data, None)
    return BackendReply(response.status_code, headers, None, _relay(response, server))


async def _relay(response: httpx.Response, server: LlamaServer) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    except httpx.TransportError as exc:
        yield sse_error_event(
            f"the backend of model '{server.model.id}' failed mid-answer ({type(exc).__name__}); "
            "the answer is incomplete",
            code="backend_failed",
        )
    finally:
        with trio.CancelScope(shield=True):
            await response.aclose()


def with_default_stop(payload: dict[str, object], stop: tuple[str, ...]) -> bytes | None:
    """The body with the model's default stop strings, or None when the client set its own."""
    if not stop or payload.get("stop") is not None:
        return None
    return json.dumps({**payload, "stop": list(stop)}).encode()
