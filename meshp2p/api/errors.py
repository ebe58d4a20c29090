"""Error responses in the shape of the API family asked: OpenAI's everywhere, Anthropic's under `/v1/messages`.

OpenAI: `{"error": {"message", "type", "param", "code", "hint"}}`; Anthropic:
`{"type": "error", "error": {"type", "message"}}` with Anthropic's type names (`ANTHROPIC_TYPES`, by status) and
529 `overloaded_error` in place of 503, so each family's official SDK raises its own exception classes. Errors are
built once, as an `ApiError` with OpenAI's type names; `ApiError.render(family)` gives the family's status and body.

Clients (the official SDKs, agents) branch on the status and on `error.type`/`error.code`, so every
error the API and the console return, ours or a backend's, has this shape; `hint` (OpenAI's clients ignore it)
is the next thing a person can do, which `meshp2p` commands print. `api_error` is the one table from the error tree
(meshp2p/errors.py) to status, type and code:

| error | status | type | code |
|---|---|---|---|
| `BackendUnavailable` | 503 + `Retry-After` | `service_unavailable_error` | its code (`model_unavailable`) |
| any other `BackendError` (a `BackendBroke` before a stream was handed on) | 502 | `server_error` | `backend_failed` |
| `UnsupportedRequest` | 400 | `invalid_request_error` | its code, `param` set |
| `PostRefused` | 404 `not_found`, 413 `too_long`, 429 `rate_limited`, else 400 | `invalid_request_error` | reason |
| any other `MeshP2PError` | 500 | `server_error` | `internal_error` |

A stream that breaks after it was handed on ends with its family's error event instead (api/stream_errors.py: the
status is long sent).
llama-server's own error answers are OpenAI-shaped on every path; `anthropic_upstream_error` translates them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from meshp2p.backends.endpoints import Family
from meshp2p.errors import BackendError, BackendUnavailable, MeshP2PError, PostRefused, UnsupportedRequest

INVALID_REQUEST = "invalid_request_error"
NOT_FOUND = "not_found_error"
SERVER_ERROR = "server_error"
UNAVAILABLE = "service_unavailable_error"
PERMISSION = "permission_error"
AUTHENTICATION = "authentication_error"
RATE_LIMIT = "rate_limit_error"

#: Anthropic's error type for each status it uses (https://docs.anthropic.com/en/api/errors); others by class.
ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                   404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                   529: "overloaded_error"}
#: Anthropic answers "try again later" as 529 overloaded_error; its clients (Claude Code) retry on it.
ANTHROPIC_OVERLOADED = 529

#: The console's answer to a refused blackboard action, by PostRefused.reason (any other reason: 400).
POST_REFUSED_STATUS = {"not_found": 404, "too_long": 413, "rate_limited": 429}


class ApiError(MeshP2PError):
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
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, code=self.code, param=self.param, hint=self.hint)

    def render(self, family: Family) -> tuple[int, dict[str, Any]]:
        """The status and JSON body this error is answered with to a client of `family`."""
        if family is Family.OPENAI:
            return self.status, self.body()
        status = ANTHROPIC_OVERLOADED if self.status == 503 else self.status
        message = self.message if self.hint is None else f"{self.message} ({self.hint})"
        return status, anthropic_body(message, status=status)


def anthropic_body(message: str, *, status: int) -> dict[str, Any]:
    kind = ANTHROPIC_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def anthropic_upstream_error(status: int, body: bytes) -> tuple[int, bytes]:
    """A backend's error answer (llama-server's OpenAI shape, or anything) as Anthropic's status and body."""
    message = body.decode("utf-8", "replace").strip() or f"the model server answered {status}"
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            message = error["message"]
        elif parsed.get("type") == "error":
            return status, body  # already Anthropic's shape
    status = ANTHROPIC_OVERLOADED if status == 503 else status
    return status, json.dumps(anthropic_body(message, status=status)).encode()


def error_body(message: str, *, type: str, code: str | None = None, param: str | None = None,
               hint: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code, "hint": hint}}


def sse_error_event(message: str, *, code: str) -> bytes:
    """An error as a final server-sent event, for failures after a stream has started."""
    payload = json.dumps(error_body(message, type=SERVER_ERROR, code=code))
    return f"data: {payload}\n\n".encode()


def api_error(exc: MeshP2PError) -> ApiError:
    """`exc` as the API answers it (the table in the module docstring)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, BackendUnavailable):
        retry = exc.retry_after_s or 1
        return ApiError(503, exc.message, type=UNAVAILABLE, code=exc.code, headers={"Retry-After": str(retry)},
                        hint=exc.hint)
    if isinstance(exc, BackendError):
        return ApiError(502, exc.message, type=SERVER_ERROR, code=exc.code, hint=exc.hint)
    if isinstance(exc, UnsupportedRequest):
        return ApiError(400, exc.message, param=exc.param, code=exc.code, hint=exc.hint)
    if isinstance(exc, PostRefused):
        status = POST_REFUSED_STATUS.get(exc.reason, 400)
        return ApiError(status, exc.message, type=NOT_FOUND if status == 404 else INVALID_REQUEST, code=exc.reason,
                        hint=exc.hint)
    return ApiError(500, exc.message, type=SERVER_ERROR, code="internal_error", hint=exc.hint)


def render(exc: MeshP2PError, family: Family = Family.OPENAI) -> tuple[int, bytes]:
    """Status and JSON body of `exc`, for answers that do not go through quart (the tunnel's serving side)."""
    status, body = api_error(exc).render(family)
    return status, json.dumps(body).encode()
