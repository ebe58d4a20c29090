"""This node's own llama-servers as a backend: for its API's clients and for requests that members send through
the tunnel, one code path.

Streams are passed on as llama-server's bytes arrive (no re-framing, no buffering). Failures leave as the
BackendError family, mapped here from h11's: BackendUnavailable when nothing was answered (the server is loading,
restarting or not answering), BackendBroke when a stream breaks off. What the client then sees (a 503 with
Retry-After, an error event, or the answer continued on another server) is decided above.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import NoReturn

import trio

from meshp2p.backends.base import (
    JSON_HEADERS,
    NOT_TUNNELLED,
    BackendRequest,
    Reply,
    end_to_end,
    passed_on,
    when_done,
)
from meshp2p.backends.endpoints import Family, Needs, endpoint, family_of
from meshp2p.backends.http11 import UpstreamError, UpstreamPool, UpstreamResponse
from meshp2p.errors import BackendBroke, BackendError, BackendUnavailable, MeshP2PError, UnsupportedRequest
from meshp2p.hosts import LOOPBACK_HOST
from meshp2p.inference.llama_server import LlamaServer
from meshp2p.inference.models import ModelSpec
from meshp2p.p2p import PeerID
from meshp2p.p2p.tunnel import TunnelAnswer, TunnelError, TunnelHandler
from meshp2p.wire.tunnel import RequestHead

log = logging.getLogger(__name__)

class LocalBackend:
    """One of this node's llama-servers."""

    def __init__(self, pool: UpstreamPool, server: LlamaServer) -> None:
        self.pool = pool
        self.server = server

    async def send(self, request: BackendRequest) -> Reply:
        server = self.server
        refusal = cannot_answer(server.model, request.path)
        if refusal is not None:
            raise refusal
        request = with_default_stop(request, server.model.default_stop)
        if not server.is_ready or server.port is None:
            raise self._unavailable(str(server.state.value))
        try:
            response = await self.pool.request("POST", LOOPBACK_HOST, server.port, request.path, request.raw)
        except UpstreamError as exc:
            raise self._unavailable("not answering") from exc
        headers = end_to_end(response.headers)
        if request.stream and response.status == 200:
            return Reply(response.status, headers, None, self._relay(response), response.aclose)
        try:
            body = await response.read()
        except UpstreamError as exc:
            raise self._unavailable("failing") from exc
        finally:
            await response.aclose()
        return Reply(response.status, headers, body)

    def _unavailable(self, why: str) -> BackendUnavailable:
        retry = self.server.retry_after_s()
        return BackendUnavailable(f"model '{self.server.model.id}' is {why}; retry in {retry} s",
                                  retry_after_s=retry)

    async def _relay(self, response: UpstreamResponse) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.iter_body():
                yield chunk
        except UpstreamError as exc:
            raise BackendBroke(f"the backend of model '{self.server.model.id}' failed mid-answer: {exc}",
                               retry_after_s=1) from exc
        finally:
            with trio.CancelScope(shield=True):
                await response.aclose()


def cannot_answer(model: ModelSpec, path: str) -> UnsupportedRequest | None:
    """Why `model` cannot answer `path` (endpoints.py's `needs`), before llama-server is asked; None when it can.

    llama-server answers these itself too, but only with 501 "start it with --embeddings", which tells the client
    nothing it can act on; and across the mesh the question would cost a tunnel round trip.
    """
    row = endpoint(path)
    needs = row.needs if row is not None else Needs.ANY
    if needs is Needs.EMBED and not model.embeddings:
        return UnsupportedRequest(f"model '{model.id}' does not serve embeddings; use an embedding model "
                                  "(one with a pooling type)", param="model", code="embeddings_not_supported")
    if needs is Needs.RERANK and not model.reranking:
        return UnsupportedRequest(f"model '{model.id}' is not a reranker; use a reranking model "
                                  "(pooling type rank, e.g. bge-reranker)", param="model",
                                  code="rerank_not_supported")
    return None


def with_default_stop(request: BackendRequest, stop: tuple[str, ...]) -> BackendRequest:
    """The request with the model's default stop strings, unless the client set its own: `stop_sequences` under
    Anthropic's paths (llama-server's /v1/messages reads only that field), `stop` elsewhere."""
    field = "stop_sequences" if family_of(request.path) is Family.ANTHROPIC else "stop"
    if not stop or request.payload.get(field) is not None:
        return request
    return request.with_payload({**request.payload, field: list(stop)})


def tunnel_handler(servers: Mapping[str, LlamaServer], pool: UpstreamPool, *,
                   started: Callable[[str], None], done: Callable[[], None],
                   render_error: Callable[[MeshP2PError], tuple[int, bytes]]) -> TunnelHandler:
    """Answer members' requests with this node's own llama-servers (never forwarded again: no loops).

    `started(model)` and `done()` count the request in flight; `render_error` gives the status and body of an
    error the client made (answered as an ordinary response, protocols/http-tunnel.md), in the API's shape.
    """

    async def handle(peer: PeerID, head: RequestHead, body: bytes) -> TunnelAnswer:
        if endpoint(head.path) is None:
            raise TunnelError("not_allowed", f"{head.path} is not a model endpoint this node forwards")
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise TunnelError("bad_request", f"the body is not JSON: {exc}") from exc
        if not isinstance(payload, dict):
            raise TunnelError("bad_request", "the body is not a JSON object")
        model_id = head.model or payload.get("model")
        server = servers.get(model_id) if isinstance(model_id, str) else None
        if server is None:
            raise TunnelError("model_not_here", f"this node does not serve {model_id!r}", retry_after_s=1)
        if not server.is_ready:
            raise TunnelError("model_unavailable", f"{model_id} is {server.state.value}",
                              retry_after_s=server.retry_after_s())
        started(server.model.id)
        try:
            reply = when_done(await LocalBackend(pool, server).send(BackendRequest(head.path, payload, body,
                                                                                  server.model.id)), done)
        except UnsupportedRequest as exc:
            done()
            status, error = render_error(exc)
            return TunnelAnswer(status, JSON_HEADERS, error)
        except BackendError as exc:
            done()
            raise TunnelError(exc.code, exc.message, retry_after_s=exc.retry_after_s) from exc
        except BaseException:
            done()
            raise
        headers = tuple(end_to_end(reply.headers.items(), drop=NOT_TUNNELLED).items())
        if reply.chunks is None:
            return TunnelAnswer(reply.status, headers, reply.body or b"")
        return TunnelAnswer(reply.status, headers, None, passed_on(reply, _as_tunnel_error))

    return handle


def _as_tunnel_error(exc: BackendError) -> NoReturn:
    """A break-off, told to the asking node as the tunnel's `backend_failed`."""
    raise TunnelError("backend_failed", exc.message, retry_after_s=1) from exc
