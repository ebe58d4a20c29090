"""The request rules of OpenAI's and Anthropic's APIs, checked before anything is proxied, where llama-server is
laxer than they are.

llama-server accepts requests the OpenAI API refuses (it clamps or ignores them), so a client tested against
meshp2p would break on OpenAI and vice versa; and a bad request sent across the mesh costs a tunnel round trip to
learn nothing. The rules (each a 400 `invalid_request_error` with `param` naming the field):
OpenAI's (every path of the OpenAI family):
- `max_tokens`, `max_completion_tokens` and `max_output_tokens` (Responses): an integer >= 1 (or absent/null);
- `n`: 1 (meshp2p streams one choice per request; absent/null means 1);
- `temperature`: a number in [0, 2];
- `messages` (chat): a list;
- `stop`: a string, or a list of at most 4 strings.
Anthropic's (`/v1/messages`, `/v1/messages/count_tokens`), answered in Anthropic's shape:
- `messages`: a list (required);
- `max_tokens`: an integer >= 1, required on `/v1/messages` (Anthropic's API requires it; a client that omits it
  here would break there);
- `temperature`: a number in [0, 1];
- `stop_sequences`: a list of strings.
Booleans are not numbers here (JSON `true` is not `1`).
"""

from __future__ import annotations

import json
from typing import Any

from meshp2p.api.errors import ApiError
from meshp2p.backends.endpoints import CHAT_PATH, MESSAGES_PATH, Endpoint, Family

MAX_STOP_SEQUENCES = 4
TEMPERATURE_RANGE = (0.0, 2.0)
ANTHROPIC_TEMPERATURE_RANGE = (0.0, 1.0)


def _invalid(param: str, message: str) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_value")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_request_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or ApiError 400 (`invalid_json`) saying why it is not one.

    `json.loads` raises more than JSONDecodeError on hostile input: ValueError for an integer of more than 4 300
    digits, RecursionError for arrays nested some thousand deep (found by tests/fuzz); all are the client's 400.
    """
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise ApiError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(payload, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    return payload


def validate_request(row: Endpoint, payload: dict[str, Any]) -> None:
    """Raise ApiError (400) for the first rule of `row`'s family that `payload` breaks."""
    if row.family is Family.ANTHROPIC:
        validate_anthropic_request(row.path, payload)
    else:
        validate_openai_request(row.path, payload)


def _check_max_tokens(payload: dict[str, Any], *keys: str) -> None:
    for key in keys:
        value = payload.get(key)
        if value is not None and (not _is_int(value) or value < 1):
            raise _invalid(key, f"'{key}' must be an integer >= 1, got {value!r}")


def _check_temperature(payload: dict[str, Any], low: float, high: float) -> None:
    temperature = payload.get("temperature")
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                                    or not low <= temperature <= high):
        raise _invalid("temperature", f"'temperature' must be a number in [{low:g}, {high:g}], got {temperature!r}")


def validate_anthropic_request(path: str, payload: dict[str, Any]) -> None:
    """Raise ApiError (400, rendered in Anthropic's shape) for the first Anthropic rule `payload` breaks."""
    if not isinstance(payload.get("messages"), list):
        raise _invalid("messages", "messages: a list of message objects is required")
    if path == MESSAGES_PATH and payload.get("max_tokens") is None:
        raise _invalid("max_tokens", "max_tokens: Field required")
    _check_max_tokens(payload, "max_tokens")
    _check_temperature(payload, *ANTHROPIC_TEMPERATURE_RANGE)
    stop = payload.get("stop_sequences")
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)):
        raise _invalid("stop_sequences", "stop_sequences: must be a list of strings")


def validate_openai_request(path: str, payload: dict[str, Any]) -> None:
    """Raise ApiError (400, OpenAI's shape) for the first rule `payload` breaks."""
    _check_max_tokens(payload, "max_tokens", "max_completion_tokens", "max_output_tokens")
    n = payload.get("n")
    if n is not None and (not _is_int(n) or n != 1):
        raise _invalid("n", f"'n' must be 1 (one choice per request), got {n!r}")
    _check_temperature(payload, *TEMPERATURE_RANGE)
    if path == CHAT_PATH and "messages" in payload and not isinstance(payload["messages"], list):
        raise _invalid("messages", "'messages' must be a list of message objects")
    stop = payload.get("stop")
    if stop is not None and not isinstance(stop, str):
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _invalid("stop", "'stop' must be a string or a list of strings")
        if len(stop) > MAX_STOP_SEQUENCES:
            raise _invalid("stop", f"'stop' takes at most {MAX_STOP_SEQUENCES} sequences, got {len(stop)}")
