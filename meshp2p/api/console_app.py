"""The console's JSON API (default http://127.0.0.1:3131). The web console itself comes later."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from quart import Response
from quart_trio import QuartTrio


def create_console_app(status: Callable[[], dict[str, Any]]) -> QuartTrio:
    app = QuartTrio("meshp2p.api.console")

    @app.get("/api/status")
    async def get_status() -> Response:
        return Response(json.dumps(status()), content_type="application/json")

    return app
