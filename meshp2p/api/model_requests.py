"""The model paths (backends/endpoints.py's table) answered by a plain ASGI handler in front of quart.

Every answer the mesh gives passes here, so what this costs is the latency meshp2p adds (issue 14's target: 2 ms of
time-to-first-token over llama-server alone). A quart view cost ~0.45 ms before it ran (the request and app
contexts, a task per request watching for the client's disconnect, request and response objects) and more per
streamed chunk (the response body's iterator and its timeout), measured with timestamps along the path on this
2-core machine. The handler does what the view did with ASGI's own messages:

- read the body: 413 when Content-Length or the bytes read pass MAX_REQUEST_BYTES, 408 past BODY_TIMEOUT_S;
- answer: the router picks the servers, backends/failover.py asks them; a whole body goes out in one message;
- stream: chunks go out as they come while a second task waits for `http.disconnect` and cancels the answer (the
  upstream stream is closed, so llama-server stops generating for a client that left);
- errors: MeshP2PError by api/errors.py's table in the path family's shape, anything else as a 500 in that shape
  (logged), exactly as quart's error handlers (api/responses.py) answer the other paths;
- any other method: OPTIONS says what is allowed, the rest get 405 (CORS preflights are answered further out, by
  api/origins.py, which with api/access.py's gate wraps this handler as it wrapped quart).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope
from quart_trio import QuartTrio

from meshp2p.api.access import AsgiApp
from meshp2p.api.errors import INVALID_REQUEST, SERVER_ERROR, ApiError, anthropic_upstream_error, api_error
from meshp2p.api.metrics import ApiMetrics
from meshp2p.api.model_ids import DEFAULT_ALIAS, Router
from meshp2p.api.stream_errors import ending_in_family_error
from meshp2p.api.validation import parse_request_body, validate_request
from meshp2p.backends import failover
from meshp2p.backends.base import BackendRequest, Reply, when_done
from meshp2p.backends.endpoints import ENDPOINTS, Family, family_of
from meshp2p.errors import MeshP2PError
from meshp2p.wire.tunnel import MAX_REQUEST_BODY

log = logging.getLogger(__name__)

#: Larger bodies get 413 before they are read whole. Generous: long contexts and base64 images are big. The same
#: limit as a tunnelled request's (protocols/http-tunnel.md), so what this node accepts, a peer accepts too.
MAX_REQUEST_BYTES = MAX_REQUEST_BODY
#: A client that has not sent its whole body by then gets 408 (quart's BODY_TIMEOUT, which the view had).
BODY_TIMEOUT_S = 120.0
ALLOWED = "POST, OPTIONS"
_STREAM_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]


def answer_model_paths(app: QuartTrio, router: Router, metrics: ApiMetrics) -> None:
    """Put in front of `app` (quart's documented middleware seam, `app.asgi_app`) a handler answering ENDPOINTS'
    paths itself; every other request goes on to quart."""
    inner: AsgiApp = app.asgi_app

    async def model_paths(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http" or scope["path"] not in ENDPOINTS:
            await inner(scope, receive, send)
            return
        path = scope["path"]
        family = family_of(path)
        method = scope["method"]
        if method == "OPTIONS":
            await _send_whole(send, 204, [(b"allow", ALLOWED.encode())], b"")
            return
        try:
            if method != "POST":
                raise ApiError(405, f"{method} is not allowed on {path}", type=INVALID_REQUEST,
                               code="method_not_allowed", headers={"Allow": ALLOWED})
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            raw = await _read_body(receive, headers.get("content-length"))
            if raw is None:  # the client left before its request was whole: nothing to answer
                return
            reply = await _answer(router, metrics, path, raw, headers.get("x-session-id"))
        except Exception as exc:
            await _send_error(send, exc, family)
            return
        if reply.chunks is None:
            status, body = reply.status, reply.body or b""
            if family is Family.ANTHROPIC and status >= 400:
                status, body = anthropic_upstream_error(status, body)
            await _send_whole(send, status, _header_list(reply.headers), body)
            return
        await _stream(send, receive, reply.status, [*_header_list(reply.headers), *_STREAM_HEADERS],
                      ending_in_family_error(path, reply))

    app.asgi_app = model_paths  # type: ignore[method-assign]


async def _answer(router: Router, metrics: ApiMetrics, path: str, raw: bytes, session_header: str | None) -> Reply:
    """What the mesh answers to `raw` on `path`: validated, routed by its model, asked with failover, metered."""
    row = ENDPOINTS[path]
    payload = parse_request_body(raw)
    validate_request(row, payload)
    requested = payload.get("model")
    gateway = router.gateway
    if gateway is not None and isinstance(requested, str) and requested not in ("", DEFAULT_ALIAS):
        gateway.record_demand(requested)  # before resolving: demand for a model nobody serves is the point
    model_id = router.resolve_id(requested)
    candidates, backend_for = router.route(model_id)
    meter = metrics.start(model_id)
    router.load.started()
    try:
        reply = await failover.answer(candidates, meter.tracking(backend_for),
                                      BackendRequest(path, payload, raw, model_id),
                                      session_key=session_key(payload, session_header), local_id=router.local_id)
    except BaseException as exc:
        router.load.done()
        meter.failed(exc)
        raise
    return meter.watch(when_done(reply, router.load.done))


def session_key(payload: dict[str, Any], header: str | None) -> str | None:
    """Requests of one conversation stick to one server (its KV cache stays warm): an `x-session-id` header,
    OpenAI's `user` or `prompt_cache_key`, or Anthropic's `metadata.user_id`."""
    metadata = payload.get("metadata")
    for value in (header, payload.get("user"), payload.get("prompt_cache_key"),
                  metadata.get("user_id") if isinstance(metadata, dict) else None):
        if isinstance(value, str) and value:
            return value
    return None


async def _read_body(receive: ASGIReceiveCallable, content_length: str | None) -> bytes | None:
    """The whole body; None when the client disconnected before sending it."""
    too_large = ApiError(413, f"request body is larger than the {MAX_REQUEST_BYTES // (1024 * 1024)} MiB limit",
                         type=INVALID_REQUEST, code="request_entity_too_large")
    if content_length is not None and content_length.isdigit() and int(content_length) > MAX_REQUEST_BYTES:
        raise too_large
    parts: list[bytes] = []
    size = 0
    with trio.move_on_after(BODY_TIMEOUT_S):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body = bytes(message.get("body", b""))  # type: ignore[call-overload]
            size += len(body)
            if size > MAX_REQUEST_BYTES:
                raise too_large
            parts.append(body)
            if not message.get("more_body", False):
                return b"".join(parts)
    raise ApiError(408, f"the request body did not arrive within {BODY_TIMEOUT_S:.0f} s", type=INVALID_REQUEST,
                   code="request_timeout")


async def _stream(send: ASGISendCallable, receive: ASGIReceiveCallable, status: int,
                  headers: list[tuple[bytes, bytes]], chunks: AsyncIterator[bytes]) -> None:
    """Send `chunks` as they come; the client leaving cancels the answer, whose generators then close upstream."""
    try:
        await send({"type": "http.response.start", "status": status, "headers": headers, "trailers": False})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_when_gone, receive, nursery.cancel_scope)
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            with trio.CancelScope(shield=True):
                await close()


async def _cancel_when_gone(receive: ASGIReceiveCallable, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def _send_error(send: ASGISendCallable, exc: Exception, family: Family) -> None:
    if isinstance(exc, MeshP2PError):
        error = api_error(exc)
    else:
        log.exception("answering a model request failed")
        error = ApiError(500, f"internal error: {type(exc).__name__}: {exc}", type=SERVER_ERROR,
                         code="internal_error")
    status, body = error.render(family)
    await _send_whole(send, status, [*_header_list(error.headers), (b"content-type", b"application/json")],
                      json.dumps(body).encode())


async def _send_whole(send: ASGISendCallable, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers, "trailers": False})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _header_list(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
