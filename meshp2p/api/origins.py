"""Which web pages may use the node from a browser: the console's own origins, nobody else's.

A browser attaches `Origin` to cross-site requests, and any page the user visits can make one to `localhost`. So:

- the console (:3131) refuses a write (POST, PUT, PATCH, DELETE: a blackboard post, dropping a model) that
  carries an `Origin` other than the console's own with 403 in the console's error shape (`refuse_foreign_writes`):
  without that check any web page could post to the blackboard as this node (CSRF). Requests without `Origin`
  (curl, the CLI, scripts) are not browser requests and pass. The console sends no `Access-Control-Allow-Origin`,
  so no foreign page can read its answers either;
- the model API (:9337) lets the console's page call it, so a page on :3131 streams chat from :9337
  (`allow_console_origins`): CORS preflights from a console origin are answered before the key check (a browser
  never sends credentials on a preflight) and its answers carry `Access-Control-Allow-Origin` for that origin
  only. Every other origin gets no CORS header, so the browser keeps the answer from the page (a backend's own
  CORS headers, which llama-server sends and the proxy passes on, are removed from every answer).

The console's origins are `http://localhost:PORT`, `http://127.0.0.1:PORT`, `http://[::1]:PORT` and the host the
node was told to listen on (`--host`), unless that is the all-addresses host.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, Scope
from quart import request
from quart_trio import QuartTrio

from meshp2p.api.access import WRITE_METHODS, AsgiApp
from meshp2p.api.errors import PERMISSION, ApiError
from meshp2p.backends.endpoints import family_of
from meshp2p.hosts import ALL_HOSTS

#: What a console page may send to the model API: the SDKs' key headers, JSON bodies, Anthropic's version header.
ALLOWED_HEADERS = "Authorization, Content-Type, x-api-key, anthropic-version"
ALLOWED_METHODS = "GET, POST, OPTIONS"
#: How long a browser may reuse a preflight's answer.
PREFLIGHT_MAX_AGE_S = 600


def console_origins(host: str, port: int) -> frozenset[str]:
    """The origins the console's page is served from."""
    hosts = {"localhost", "127.0.0.1", "[::1]"}
    if host and host not in (ALL_HOSTS, "::"):
        hosts.add(f"[{host}]" if ":" in host else host)
    return frozenset(f"http://{h}:{port}" for h in hosts)


def refuse_foreign_writes(app: QuartTrio, origins: frozenset[str]) -> None:
    """On the console app: a write from a page of another origin is refused (403, the console's error shape)."""

    @app.before_request
    async def same_origin_writes_only() -> None:
        if request.method not in WRITE_METHODS:
            return
        origin = request.headers.get("Origin")
        if origin is not None and origin not in origins:
            raise ApiError(403, f"requests from the web page at {origin} may not change this node", type=PERMISSION,
                           code="foreign_origin",
                           hint="use the console this node serves, the `meshp2p` command, or a script (no Origin)")


def allow_console_origins(app: QuartTrio, origins: frozenset[str]) -> None:
    """On the model API app, outermost (after `guard_api`): preflights and CORS headers for the console's page."""
    inner: AsgiApp = app.asgi_app

    async def cors(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return
        headers = _headers(scope["headers"])
        origin = headers.get("origin")
        allowed = origin is not None and origin in origins
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await _preflight(send, scope["path"], origin if allowed else None)
            return
        added = [] if not allowed or origin is None else [
            (b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]

        async def with_cors(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.start":
                # A backend's own CORS headers (llama-server sends some) are not the API's answer: only ours go out.
                kept = [(k, v) for k, v in message.get("headers", ()) if not k.lower().startswith(b"access-control-")]
                message = {**message, "headers": [*kept, *added]}
            await send(message)

        await inner(scope, receive, with_cors)

    app.asgi_app = cors  # type: ignore[method-assign]


async def _preflight(send: ASGISendCallable, path: str, origin: str | None) -> None:
    """204 with the CORS grant for a console origin; 403 (the path family's error shape, no grant) otherwise."""
    if origin is not None:
        headers = [(b"access-control-allow-origin", origin.encode("latin-1")),
                   (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
                   (b"access-control-allow-headers", ALLOWED_HEADERS.encode()),
                   (b"access-control-max-age", str(PREFLIGHT_MAX_AGE_S).encode()),
                   (b"vary", b"Origin"), (b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 204, "headers": headers, "trailers": False})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    error = ApiError(403, "this API answers browser pages of this node's console only", type=PERMISSION,
                     code="foreign_origin", hint="call it from a server or a script, or through the node's console")
    status, body = error.render(family_of(path))
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
               (b"vary", b"Origin")]
    await send({"type": "http.response.start", "status": status, "headers": headers, "trailers": False})
    await send({"type": "http.response.body", "body": data, "more_body": False})


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in raw}
