"""OpenAI-shaped error responses: `{"error": {"message", "type", "param", "code"}}`.

Clients (the official SDKs, agents) branch on the status and on `error.type`/`error.code`, so every
error the API returns, ours or a backend's, has this shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

INVALID_REQUEST = "invalid_request_error"
NOT_FOUND = "not_found_error"
SERVER_ERROR = "server_error"
UNAVAILABLE = "service_unavailable_error"


class ApiError(Exception):
    """An error answered to the client as OpenAI JSON with `status`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID_REQUEST,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, code=self.code, param=self.param)


def error_body(message: str, *, type: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def sse_error_event(message: str, *, code: str) -> bytes:
    """An error as a final server-sent event, for failures after a stream has started."""
    payload = json.dumps(error_body(message, type=SERVER_ERROR, code=code))
    return f"data: {payload}\n\n".encode()
