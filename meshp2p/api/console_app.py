"""The console's JSON API (default http://127.0.0.1:3131). The web console itself comes later.

Read-only endpoints answer anyone who can reach the port; endpoints that change the node (dropping a model)
answer only local clients, so `--listen-all` never lets another machine steer this one.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def _from_this_machine() -> bool:
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


def create_console_app(status: Callable[[], dict[str, Any]], drop: Callable[[str], Awaitable[bool]]) -> QuartTrio:
    app = QuartTrio("meshp2p.api.console")

    @app.get("/api/status")
    async def get_status() -> Response:
        return _json(status())

    @app.post("/api/models/<path:model_id>/drop")
    async def drop_model(model_id: str) -> Response:
        if not _from_this_machine():
            return _json({"error": {"message": "only this machine may change the node"}}, 403)
        if not await drop(model_id):
            return _json({"error": {"message": f"this node does not serve '{model_id}'"}}, 404)
        return _json({"dropped": model_id})

    return app
