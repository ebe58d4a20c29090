"""The model API every node answers on (default http://127.0.0.1:9337): OpenAI's paths, Anthropic's `/v1/messages`
and llama-server's own, each routed across the mesh by its `model` field (backends/endpoints.py is the table, and
api/model_requests.py answers them); quart serves the model list and health around them."""

from __future__ import annotations

import time
from typing import Any

from quart import Response
from quart_trio import QuartTrio

from meshp2p.api.metrics import ApiMetrics
from meshp2p.api.model_ids import Router
from meshp2p.api.model_requests import BODY_TIMEOUT_S, MAX_REQUEST_BYTES, answer_model_paths
from meshp2p.api.responses import answer_errors, json_response


def create_openai_app(router: Router, metrics: ApiMetrics | None = None) -> QuartTrio:
    """The quart-trio app; `router` knows the node's own servers and, through its gateway, the mesh's; `metrics`
    counts each request that reached a model (api/metrics.py)."""
    metrics = metrics if metrics is not None else ApiMetrics()
    app = QuartTrio("meshp2p.api.openai")
    app.config.update(MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES, RESPONSE_TIMEOUT=None, BODY_TIMEOUT=BODY_TIMEOUT_S)
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

    # The model paths are answered in front of quart (api/model_requests.py says why); quart answers the rest.
    answer_model_paths(app, router, metrics)
    return app


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
