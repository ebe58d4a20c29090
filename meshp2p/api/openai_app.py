"""The model API every node answers on (default http://127.0.0.1:9337): OpenAI's paths, Anthropic's `/v1/messages`
and llama-server's own, each routed across the mesh by its `model` field (backends/endpoints.py is the table)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from meshp2p.api.errors import anthropic_upstream_error
from meshp2p.api.metrics import ApiMetrics
from meshp2p.api.model_ids import DEFAULT_ALIAS, Router
from meshp2p.api.responses import answer_errors, json_response
from meshp2p.api.stream_errors import ending_in_family_error
from meshp2p.api.validation import parse_request_body, validate_request
from meshp2p.backends import failover
from meshp2p.backends.base import BackendRequest, when_done
from meshp2p.backends.endpoints import ENDPOINTS, Family
from meshp2p.wire.tunnel import MAX_REQUEST_BODY

#: Larger bodies get 413 before they are read whole. Generous: long contexts and base64 images are big. The same
#: limit as a tunnelled request's (protocols/http-tunnel.md), so what this node accepts, a peer accepts too.
MAX_REQUEST_BYTES = MAX_REQUEST_BODY
#: The paths we forward, each to the same path on llama-server (backends/endpoints.py says why these).
FORWARDED_PATHS = tuple(ENDPOINTS)
_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def create_openai_app(router: Router, metrics: ApiMetrics | None = None) -> QuartTrio:
    """The quart-trio app; `router` knows the node's own servers and, through its gateway, the mesh's; `metrics`
    counts each request that reached a model (api/metrics.py)."""
    metrics = metrics if metrics is not None else ApiMetrics()
    app = QuartTrio("meshp2p.api.openai")
    app.config.update(MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES, RESPONSE_TIMEOUT=None, BODY_TIMEOUT=120)
    created = int(time.time())

    answer_errors(app, max_request_bytes=MAX_REQUEST_BYTES)

    @app.get("/v1/models")
    async def list_models() -> Response:
        """Served models (here and in the mesh), then the mesh's wanted ones, marked `state: wanted`."""
        entries = [_model_entry(router, m, created) for m in router.model_ids()]
        wanted = router.gateway.wanted_models() if router.gateway is not None else ()
        entries += [{"id": m, "object": "model", "created": created, "owned_by": "meshp2p",
                     "meshp2p": {"local": False, "nodes": [], "state": "wanted"}} for m in wanted]
        return json_response({"object": "list", "data": entries})

    @app.get("/v1/models/<path:model_id>")
    async def get_model(model_id: str) -> Response:
        return json_response(_model_entry(router, router.resolve_id(model_id), created))

    @app.get("/health")
    async def health() -> Response:
        ready = any(s.is_ready for s in router.servers) or bool(router.remote_models())
        return json_response({"status": "ok" if ready else "loading"}, 200 if ready else 503)

    async def proxied(path: str) -> Response:
        row = ENDPOINTS[path]
        data = await request.get_data(cache=False, as_text=False)
        raw = data.encode() if isinstance(data, str) else data
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
                                          session_key=_session_key(payload), local_id=router.local_id)
        except BaseException as exc:
            router.load.done()
            meter.failed(exc)
            raise
        reply = meter.watch(when_done(reply, router.load.done))
        if reply.chunks is not None:
            return Response(ending_in_family_error(path, reply), status=reply.status,
                            headers={**reply.headers, **_STREAM_HEADERS})
        status, body = reply.status, reply.body or b""
        if row.family is Family.ANTHROPIC and status >= 400:
            status, body = anthropic_upstream_error(status, body)
        return Response(body, status=status, headers=reply.headers)

    for path in FORWARDED_PATHS:
        app.add_url_rule(path, endpoint=path, view_func=_bind(proxied, path), methods=["POST"])
    return app


def _session_key(payload: dict[str, Any]) -> str | None:
    """Requests of one conversation stick to one server (its KV cache stays warm): an `x-session-id` header,
    OpenAI's `user` or `prompt_cache_key`, or Anthropic's `metadata.user_id`."""
    metadata = payload.get("metadata")
    for value in (request.headers.get("x-session-id"), payload.get("user"), payload.get("prompt_cache_key"),
                  metadata.get("user_id") if isinstance(metadata, dict) else None):
        if isinstance(value, str) and value:
            return value
    return None


def _bind(view: Callable[[str], Any], path: str) -> Callable[[], Any]:
    async def bound() -> Response:
        result: Response = await view(path)
        return result

    return bound


def _model_entry(router: Router, model_id: str, created: int) -> dict[str, Any]:
    """One /v1/models entry; `meshp2p` says where the model runs (this node, others, or both)."""
    server = router.local(model_id)
    remote_nodes = list(router.remote_models().get(model_id, ()))
    extra: dict[str, Any] = {"local": server is not None, "nodes": remote_nodes}
    if server is not None:
        layout = server.model.layout
        extra.update(state=server.state.value, size_bytes=server.model.size_bytes,
                     architecture=server.model.architecture, embeddings=server.model.embeddings,
                     moe=None if layout is None else layout.to_json())
    else:
        extra["state"] = "remote"
    return {"id": model_id, "object": "model", "created": created, "owned_by": "meshp2p", "meshp2p": extra}
