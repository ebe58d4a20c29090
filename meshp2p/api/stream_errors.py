"""How a stream that broke after its status was sent ends: with its family's error event, which that family's
official SDK raises as an error (the status, 200, is long gone).

- `/v1/chat/completions`, `/v1/completions` (and any other path): `data: {"error": {...}}`, api/errors.py's body;
  openai raises `APIError`.
- `/v1/responses`: `event: error` + `data: {"type": "error", "code", "message", "param", "sequence_number",
  "error": {...}}`: a `ResponseErrorEvent` to a reader of the event types, and the `error` key makes openai's
  stream raise `APIError` (as it does for the chunk formats).
- `/v1/messages`: `event: error` + `data: {"type": "error", "error": {"type", "message"}}`; anthropic raises
  `APIStatusError`.

Anthropic's type is `overloaded_error` when trying again later may work (no server of the model was left,
`retry_after_s` is set), else `api_error` (the answer could not be continued: a tool call was in flight).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from meshp2p.api.errors import ANTHROPIC_OVERLOADED, SERVER_ERROR, anthropic_body, error_body, sse_error_event
from meshp2p.backends.base import Reply, passed_on
from meshp2p.backends.endpoints import RESPONSES_PATH, Family, family_of
from meshp2p.errors import BackendError

_ANTHROPIC_FAILED = 500


def break_off_event(path: str, exc: BackendError, *, sequence_number: int = 0) -> bytes:
    """The event that ends a stream of `path` broken by `exc`; `sequence_number` is the Responses event's number
    (the events before it were numbered from 0)."""
    if family_of(path) is Family.ANTHROPIC:
        status = ANTHROPIC_OVERLOADED if exc.retry_after_s is not None else _ANTHROPIC_FAILED
        return _event("error", anthropic_body(exc.message, status=status))
    if path.split("?", 1)[0] == RESPONSES_PATH:
        error = error_body(exc.message, type=SERVER_ERROR, code=exc.code)["error"]
        return _event("error", {"type": "error", "code": exc.code, "message": exc.message, "param": None,
                                "sequence_number": sequence_number, "error": error})
    return sse_error_event(exc.message, code=exc.code)


async def ending_in_family_error(path: str, reply: Reply) -> AsyncIterator[bytes]:
    """`reply`'s chunks, then `break_off_event` if it breaks. Failover hands on whole events (each ends in a blank
    line, backends/streams/sse.py's `serialize`), so the blank lines sent count the events: the error event's
    sequence number."""
    sent = 0

    def on_break(exc: BackendError) -> bytes:
        return break_off_event(path, exc, sequence_number=sent)

    async for chunk in passed_on(reply, on_break):
        sent += chunk.count(b"\n\n")
        yield chunk


def _event(name: str, data: dict[str, object]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
