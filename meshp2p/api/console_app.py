"""The console's JSON API (default http://127.0.0.1:3131). The web console itself comes later.

Read-only status answers anyone who can reach the port; endpoints that change the node (dropping a model) and
the blackboard (api/blackboard_routes.py) answer only local clients, so `--listen-all` never lets another
machine steer this one, read a private mesh's posts or post as this node. While API keys are on, the write
endpoints need a key or the node's console token as well (api/access.py's `guard_console_writes`, attached by
app/node.py): another user of this machine must not steer the node either.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from meshp2p.api.blackboard_routes import Blackboard, add_blackboard_routes
from meshp2p.api.console_events import EventFeed, add_event_routes
from meshp2p.api.errors import NOT_FOUND, PERMISSION, ApiError
from meshp2p.api.responses import answer_errors, json_response


def _from_this_machine() -> bool:
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


def create_console_app(status: Callable[[], dict[str, Any]], drop: Callable[[str], Awaitable[bool]],
                       blackboard: Blackboard | None = None, events: EventFeed | None = None) -> QuartTrio:
    app = QuartTrio("meshp2p.api.console")
    answer_errors(app)
    add_blackboard_routes(app, blackboard, local_only=_from_this_machine)
    if events is not None:  # `/api/events`, `/api/logs` (api/console_events.py)
        add_event_routes(app, events, local_only=_from_this_machine)

    @app.get("/api/status")
    async def get_status() -> Response:
        return json_response(status())

    @app.post("/api/models/<path:model_id>/drop")
    async def drop_model(model_id: str) -> Response:
        if not _from_this_machine():
            raise ApiError(403, "only this machine may change the node", type=PERMISSION,
                           hint="run `meshp2p drop` on the node's machine (or through ssh)")
        if not await drop(model_id):
            raise ApiError(404, f"this node does not serve '{model_id}'", type=NOT_FOUND, code="model_not_found",
                           hint="`meshp2p status` lists what it serves")
        return json_response({"dropped": model_id})

    return app
