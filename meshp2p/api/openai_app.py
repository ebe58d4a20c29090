"""The OpenAI-compatible API every node answers on (default http://127.0.0.1:9337/v1)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from meshp2p.api.errors import INVALID_REQUEST, NOT_FOUND, SERVER_ERROR, ApiError, error_body
from meshp2p.api.proxy import forward, with_default_stop
from meshp2p.api.routing import LocalRouter
from meshp2p.api.upstream import UpstreamPool
from meshp2p.inference.llama_server import LlamaServer

#: Larger bodies get 413 before they are read whole. Generous: long contexts and base64 images are big.
MAX_REQUEST_BYTES = 32 * 1024 * 1024
#: OpenAI paths we forward, each to the same path on llama-server.
FORWARDED_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers, content_type="application/json")


def create_openai_app(router: LocalRouter, pool: UpstreamPool) -> QuartTrio:
    """The quart-trio app; `pool` holds the node's keep-alive connections to its llama-servers."""
    app = QuartTrio("meshp2p.api.openai")
    app.config.update(MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES, RESPONSE_TIMEOUT=None, BODY_TIMEOUT=120)
    created = int(time.time())

    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> Response:
        return json_response(exc.body(), exc.status, exc.headers)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        kind = NOT_FOUND if status == 404 else INVALID_REQUEST if status < 500 else SERVER_ERROR
        message = {
            404: f"no such endpoint: {request.method} {request.path}",
            405: f"{request.method} is not allowed on {request.path}",
            413: f"request body is larger than the {MAX_REQUEST_BYTES // (1024 * 1024)} MiB limit",
        }.get(status, exc.description or exc.name)
        return json_response(error_body(message, type=kind, code=exc.name.lower().replace(" ", "_")), status)

    @app.get("/v1/models")
    async def list_models() -> Response:
        return json_response({"object": "list", "data": [_model_entry(s, created) for s in router.servers]})

    @app.get("/v1/models/<path:model_id>")
    async def get_model(model_id: str) -> Response:
        return json_response(_model_entry(router.resolve(model_id), created))

    @app.get("/health")
    async def health() -> Response:
        ready = any(s.is_ready for s in router.servers)
        return json_response({"status": "ok" if ready else "loading"}, 200 if ready else 503)

    async def proxied(path: str) -> Response:
        data = await request.get_data(cache=False, as_text=False)
        raw = data.encode() if isinstance(data, str) else data
        payload = _parse_object(raw)
        server = router.resolve(payload.get("model"))
        if path == "/v1/embeddings" and not server.model.embeddings:
            raise ApiError(400, f"model '{server.model.id}' does not serve embeddings", param="model",
                           code="embeddings_not_supported")
        stream = payload.get("stream") is True
        body = with_default_stop(payload, server.model.default_stop) or raw
        router.in_flight += 1
        reply = await forward(pool, server, path, body, stream=stream, on_done=router.request_done)
        if reply.chunks is not None:
            return Response(reply.chunks, status=reply.status, headers={**reply.headers, **_STREAM_HEADERS})
        return Response(reply.body or b"", status=reply.status, headers=reply.headers)

    for path in FORWARDED_PATHS:
        app.add_url_rule(path, endpoint=path, view_func=_bind(proxied, path), methods=["POST"])
    return app


def _bind(view: Callable[[str], Any], path: str) -> Callable[[], Any]:
    async def bound() -> Response:
        result: Response = await view(path)
        return result

    return bound


def _parse_object(raw: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(payload, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    return payload


def _model_entry(server: LlamaServer, created: int) -> dict[str, Any]:
    model = server.model
    return {
        "id": model.id,
        "object": "model",
        "created": created,
        "owned_by": "meshp2p",
        "meshp2p": {
            "state": server.state.value,
            "local": True,
            "size_bytes": model.size_bytes,
            "architecture": model.architecture,
            "embeddings": model.embeddings,
        },
    }
