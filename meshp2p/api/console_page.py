"""The web console: one page at `/` and its files under `/ui/`, read from the package (meshp2p/api/web/).

The page is plain HTML, ES modules and one stylesheet, written by hand: no build step, no CDN, nothing fetched from
elsewhere, so an installed wheel serves it offline. It reads the console's JSON API and `GET /api/events`
(protocols/console-events.md) on this port and streams chat from the node's model API (`node.api_url`).

Its Content-Security-Policy allows scripts and styles from this origin only and connections to this origin and to
the model API's port on the host the page was loaded from: blackboard posts and log lines are other people's text,
and even a display bug must not let them run.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

from quart import Response, request
from quart_trio import QuartTrio

from meshp2p.api.errors import NOT_FOUND, ApiError

#: The package folder the page's files ship in (setup.cfg's package_data lists it).
PAGE_PACKAGE = "meshp2p.api.web"
PAGE_INDEX = "index.html"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


def page_files() -> dict[str, bytes]:
    """The page's files by name, read once: they are small, and a node serves them as they were at its start."""
    folder = files(PAGE_PACKAGE)
    return {entry.name: entry.read_bytes() for entry in folder.iterdir()
            if entry.is_file() and any(entry.name.endswith(ext) for ext in CONTENT_TYPES)}


def add_page_routes(app: QuartTrio, status: Callable[[], dict[str, Any]]) -> None:
    """`GET /` (the page) and `GET /ui/<name>` (its modules and stylesheet)."""
    page = page_files()

    def answer(name: str) -> Response:
        body = page.get(name)
        if body is None:
            raise ApiError(404, f"the console has no file '{name}'", type=NOT_FOUND)
        content_type = CONTENT_TYPES[name[name.rfind("."):]]
        headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
                   "Referrer-Policy": "no-referrer", "Content-Security-Policy": _policy(status)}
        return Response(body, status=200, headers=headers, content_type=content_type)

    @app.get("/")
    async def index() -> Response:
        return answer(PAGE_INDEX)

    @app.get("/ui/<name>")
    async def asset(name: str) -> Response:
        return answer(name)


def _policy(status: Callable[[], dict[str, Any]]) -> str:
    """Scripts, styles and images from here only; connections here and to the model API on the page's host."""
    connect = "'self'"
    api_port = urlsplit(str(status()["node"]["api_url"])).port
    host = urlsplit(f"//{request.host}").hostname
    if api_port is not None and host:
        shown = f"[{host}]" if ":" in host else host
        connect += f" http://{shown}:{api_port} https://{shown}:{api_port}"
    return (f"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
