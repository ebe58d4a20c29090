"""The one way the HTTP apps answer with JSON (the model API, console, blackboard), errors included: every error in
the shape of the family its path belongs to (backends/endpoints.py's `family_of`)."""

from __future__ import annotations

import json
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from meshp2p.api.errors import INVALID_REQUEST, NOT_FOUND, SERVER_ERROR, ApiError, api_error
from meshp2p.backends.endpoints import family_of
from meshp2p.errors import MeshP2PError


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers, content_type="application/json")


def answer_errors(app: QuartTrio, *, max_request_bytes: int | None = None) -> None:
    """Answer every MeshP2PError (api/errors.py's table) and every HTTP error (404, 405, 413...) in the one shape."""

    @app.errorhandler(MeshP2PError)
    async def mesh_error(exc: MeshP2PError) -> Response:
        error = api_error(exc)
        status, body = error.render(family_of(request.path))
        return json_response(body, status, error.headers)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        kind = NOT_FOUND if status == 404 else INVALID_REQUEST if status < 500 else SERVER_ERROR
        messages = {404: f"no such endpoint: {request.method} {request.path}",
                    405: f"{request.method} is not allowed on {request.path}"}
        if max_request_bytes is not None:
            messages[413] = f"request body is larger than the {max_request_bytes // (1024 * 1024)} MiB limit"
        message = messages.get(status, exc.description or exc.name)
        error = ApiError(status, message, type=kind, code=exc.name.lower().replace(" ", "_"))
        status, body = error.render(family_of(request.path))
        return json_response(body, status)
