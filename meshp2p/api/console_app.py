"""The console (default http://127.0.0.1:3131): its JSON API, and the web page at `/` (api/console_page.py).

Read-only status answers anyone who can reach the port; endpoints that change the node (dropping a model) and
the blackboard (api/blackboard_routes.py) answer only local clients, so `--listen-all` never lets another
machine steer this one, read a private mesh's posts or post as this node. `POST /api/invite` mints an invite
token for the private mesh (what `meshp2p invite` prints): a POST, so that while keys are on it needs a key like
the other write endpoints, and local only, since the token lets its holder in. While API keys are on, the write
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
from meshp2p.api.console_page import add_page_routes
from meshp2p.api.errors import INVALID_REQUEST, NOT_FOUND, PERMISSION, ApiError
from meshp2p.api.prometheus import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from meshp2p.api.responses import answer_errors, json_response


def _from_this_machine() -> bool:
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


#: An invite lasts at most this long when the page (or a script) asks for one with a lifetime.
MAX_INVITE_TTL_HOURS = 24 * 365


def create_console_app(status: Callable[[], dict[str, Any]], drop: Callable[[str], Awaitable[bool]],
                       blackboard: Blackboard | None = None, events: EventFeed | None = None,
                       invite: Callable[[int | None], str | None] | None = None, *,
                       metrics: Callable[[], Awaitable[str]] | None = None,
                       refresh: Callable[[], Awaitable[object]] | None = None) -> QuartTrio:
    """`invite(ttl_s)` mints a token for this node's private mesh, or returns None on a named one; None: no mesh.
    `metrics` writes the `/metrics` page (Prometheus text, app/metrics.py; read-only like status, so open like it);
    `refresh` is awaited before status is built (the hardware sample, taken at most every 2 s)."""
    app = QuartTrio("meshp2p.api.console")
    answer_errors(app)
    add_blackboard_routes(app, blackboard, local_only=_from_this_machine)
    if events is not None:  # `/api/events`, `/api/logs` (api/console_events.py)
        add_event_routes(app, events, local_only=_from_this_machine)
    add_page_routes(app, status)

    @app.post("/api/invite")
    async def mint_invite() -> Response:
        if not _from_this_machine():
            raise ApiError(403, "only this machine may hand out invites", type=PERMISSION,
                           hint="run `meshp2p invite` on the node's machine (or through ssh)")
        if invite is None:
            raise ApiError(404, "this node runs without a mesh (--solo), so there is nothing to invite to",
                           type=NOT_FOUND, hint="start it without --solo")
        body = await request.get_json(force=True, silent=True)
        hours = body.get("ttl_hours") if isinstance(body, dict) else None
        if hours is not None and (isinstance(hours, bool) or not isinstance(hours, int | float)
                                  or not 0 < hours <= MAX_INVITE_TTL_HOURS):
            raise ApiError(400, "'ttl_hours' must be a number of hours", type=INVALID_REQUEST,
                           hint=f"use 0 < ttl_hours <= {MAX_INVITE_TTL_HOURS}, or leave it out (no expiry)")
        token = invite(None if hours is None else int(hours * 3600))
        if token is None:
            raise ApiError(404, "this node's mesh is public: others join it by name, with no token",
                           type=NOT_FOUND, code="public_mesh", hint="meshp2p up --mesh-name NAME")
        return json_response({"token": token, "ttl_hours": hours})

    @app.get("/api/status")
    async def get_status() -> Response:
        if refresh is not None:
            await refresh()
        return json_response(status())

    if metrics is not None:
        @app.get("/metrics")
        async def get_metrics() -> Response:
            return Response(await metrics(), content_type=PROMETHEUS_CONTENT_TYPE)

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
