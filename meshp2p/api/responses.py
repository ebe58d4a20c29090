"""The one way the HTTP apps answer with JSON (OpenAI API, console, blackboard)."""

from __future__ import annotations

import json
from typing import Any

from quart import Response


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers, content_type="application/json")
