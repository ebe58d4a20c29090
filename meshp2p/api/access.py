"""API keys and rate limits on the HTTP apps: the gate of access/gate.py at the door of :9337, and the key (or the
node's console token) on the console's write endpoints.

`guard_api` wraps the model API's ASGI app (quart's documented middleware seam, `app.asgi_app`) rather than hooking
`before_request`: the wrapper sees the whole answer go out, so it releases the request's in-flight slots when the
last byte of a stream is sent or the client goes away (the ASGI call returns either way), and it reads the
answer's `usage` (access/tokens.py) as it passes, without touching the routes. `/health` is open: load balancers
and `meshp2p` itself ask it without a key.

Refusals are answered in the shape of the path's family (api/errors.py): Anthropic's under `/v1/messages`, so its
SDK raises `AuthenticationError` / `RateLimitError`, and OpenAI's elsewhere, so OpenAI's does.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, Scope
from quart import request
from quart_trio import QuartTrio

from meshp2p.access.gate import Admitted, Denied, Gate, presented_key
from meshp2p.access.keys import Keyring
from meshp2p.access.tokens import TokenCounter
from meshp2p.access.usage import UsageBook
from meshp2p.api.errors import AUTHENTICATION, RATE_LIMIT, ApiError
from meshp2p.backends.endpoints import family_of

#: Paths of the model API anyone may ask.
OPEN_PATHS = frozenset({"/health"})
#: Console methods that change something: they need a key (or the console token) while keys are on.
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

AsgiApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Any]


class KeySource(Protocol):
    def current(self) -> Keyring | None:
        """The keys now; None when keys are off."""
        ...


def guard_api(app: QuartTrio, gate: Gate, keys: KeySource, usage: UsageBook, *,
              clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time,
              on_denied: Callable[[Denied], None] = lambda denied: None) -> None:
    """Put `gate` in front of every path of `app` but OPEN_PATHS, and count what each key did in `usage`;
    `on_denied` hears of every refusal (the node's `/metrics` counts them)."""
    inner: AsgiApp = app.asgi_app

    async def guarded(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await inner(scope, receive, send)
            return
        headers = _headers(scope["headers"])
        client = scope.get("client")
        decision = gate.check(headers, client[0] if client else None, keys.current(), clock())
        if isinstance(decision, Denied):
            on_denied(decision)
            await _answer(send, scope["path"], decision)
            return
        await _admitted(inner, scope, receive, send, gate, decision, usage, wall_clock())

    app.asgi_app = guarded  # type: ignore[method-assign]


async def _admitted(inner: AsgiApp, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable, gate: Gate,
                    admitted: Admitted, usage: UsageBook, now: float) -> None:
    """Run the request; its slots are released when the call returns (answer sent, or the client gone), and with a
    key, its request and the answer's tokens are counted."""
    key = admitted.key
    counter: TokenCounter | None = None

    async def counting(message: ASGISendEvent) -> None:
        nonlocal counter
        if message["type"] == "http.response.start":
            content_type = _headers(message.get("headers", ())).get("content-type", "")
            counter = TokenCounter(stream="text/event-stream" in content_type)
        elif message["type"] == "http.response.body" and counter is not None:
            counter.feed(bytes(message.get("body", b"")))
        await send(message)

    if key is not None:
        usage.request(key.id, now)
    try:
        await inner(scope, receive, send if key is None else counting)
    finally:
        gate.release(admitted)
        if key is not None and counter is not None:
            tokens_in, tokens_out = counter.result()
            if tokens_in or tokens_out:
                usage.tokens(key.id, tokens_in, tokens_out)


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in raw}


def refusal(denied: Denied) -> ApiError:
    """A gate's refusal as the API's error (status, type, code, Retry-After)."""
    headers = {"Retry-After": str(denied.retry_after_s)} if denied.retry_after_s is not None else {}
    if denied.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    kind = AUTHENTICATION if denied.status == 401 else RATE_LIMIT
    return ApiError(denied.status, denied.message, type=kind, code=denied.code, headers=headers, hint=denied.hint)


async def _answer(send: ASGISendCallable, path: str, denied: Denied) -> None:
    error = refusal(denied)
    status, body = error.render(family_of(path))
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers, "trailers": False})
    await send({"type": "http.response.body", "body": data, "more_body": False})


def guard_console_writes(app: QuartTrio, keys: KeySource, console_token: Callable[[], str | None]) -> None:
    """While keys are on, the console's write endpoints (dropping a model, posting to the blackboard) need a valid
    key or the console token this node wrote for its own user's commands (`$MESHP2P_HOME/console.token`)."""

    @app.before_request
    async def need_key() -> None:
        if request.method not in WRITE_METHODS:
            return
        ring = keys.current()
        if ring is None:
            return
        text = presented_key({k.lower(): v for k, v in request.headers.items()})
        token = console_token()
        if text is not None and token is not None and hmac.compare_digest(text.encode(), token.encode()):
            return
        key = None if text is None else ring.find(text)
        if key is not None and not key.revoked:
            return
        denied = Denied(401, "changing this node needs an API key while keys are on",
                        "run the command as the node's user (it sends $MESHP2P_HOME/console.token), or send "
                        "`Authorization: Bearer KEY`", "missing_api_key" if text is None else "invalid_api_key")
        raise refusal(denied)
