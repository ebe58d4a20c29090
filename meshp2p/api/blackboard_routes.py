"""The blackboard on the console port: `/api/blackboard/...`, what the CLI, the MCP server and scripts use.

    GET  /api/blackboard              counts, limits, rejections
    GET  /api/blackboard/feed         newest posts      ?limit=20&since=2h&from=PEER|NAME&tag=gpu
    GET  /api/blackboard/search       ranked search     ?q=...&limit&since&from&tag
    POST /api/blackboard/post         {"text", "name"?, "tags"?, "reply_to"?, "scrub"?} → 201 {"post", "redacted"}
    GET  /api/blackboard/watch        server-sent events: the posts since `since` (default none), then new ones

Every blackboard endpoint answers this machine only: a private mesh's posts are its members' business, and a
post is signed with this node's key, so `--listen-all` must not let another machine read or post as this node.
Errors are the API's one shape (api/errors.py), with the HTTP status that fits.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractContextManager
from typing import Any, Protocol

import trio
from quart import Response, request
from quart_trio import QuartTrio

from meshp2p.api.errors import INVALID_REQUEST, PERMISSION, UNAVAILABLE, ApiError
from meshp2p.api.responses import json_response
from meshp2p.blackboard.search import DEFAULT_LIMIT
from meshp2p.blackboard.since import parse_since
from meshp2p.errors import ConfigError
from meshp2p.wire.blackboard import Post

MAX_LIMIT = 500
#: An SSE comment this often keeps proxies and idle timeouts from closing a quiet watch.
WATCH_KEEPALIVE_S = 15.0


class Blackboard(Protocol):
    """What the routes need of the node's blackboard (meshp2p/app/blackboard_service.py)."""

    async def post(self, text: str, *, name: str | None = None, tags: Iterable[str] = (),
                   thread: str | None = None, scrub: bool | None = None) -> tuple[Post, list[str]]: ...

    async def search(self, query: str, *, limit: int = DEFAULT_LIMIT, since_ms: int | None = None,
                     author: str | None = None, tag: str | None = None) -> list[Post]: ...

    def watch(self) -> AbstractContextManager[trio.MemoryReceiveChannel[Post]]: ...

    async def stats(self) -> dict[str, Any]: ...


def post_json(post: Post) -> dict[str, Any]:
    """A post as the console shows it. `text` and `name` are untrusted: display them, never interpret them."""
    return {
        "id": post.id_hex,
        "author": post.author,
        "name": post.name,
        "ts": post.ts,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(post.ts / 1000)),
        "text": post.text,
        "tags": list(post.tags),
        "thread": None if post.thread is None else post.thread.hex(),
    }


def _refused(message: str, hint: str | None = None, status: int = 400) -> ApiError:
    kind = {403: PERMISSION, 503: UNAVAILABLE}.get(status, INVALID_REQUEST)
    return ApiError(status, message, type=kind, hint=hint)


def _filters() -> dict[str, Any]:
    """limit, since, from and tag from the query string, checked."""
    args = request.args
    try:
        limit = int(args.get("limit", DEFAULT_LIMIT))
    except ValueError:
        raise _refused(f"limit={args.get('limit')!r} is not a number", f"use 1..{MAX_LIMIT}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise _refused(f"limit={limit} is out of range", f"use 1..{MAX_LIMIT}")
    since = args.get("since")
    try:
        since_ms = None if not since else parse_since(since, now=time.time())
    except ConfigError as exc:
        raise _refused(exc.message, exc.hint) from None
    return {"limit": limit, "since_ms": since_ms, "author": args.get("from") or None, "tag": args.get("tag") or None}


def add_blackboard_routes(app: QuartTrio, board: Blackboard | None, *, local_only: Any) -> None:
    """Register the routes; `board` is None on a node without a mesh (`--solo`), which then answers 503."""

    def ready() -> Blackboard:
        if not local_only():
            raise _refused("the blackboard answers only this machine", status=403,
                              hint="run the command on the node's machine (or through ssh)")
        if board is None:
            raise _refused("this node runs without a mesh (--solo), so it has no blackboard", status=503,
                              hint="start it without --solo")
        return board

    @app.get("/api/blackboard")
    async def stats() -> Response:
        return json_response(await ready().stats())

    @app.get("/api/blackboard/feed")
    async def feed() -> Response:
        posts = await ready().search("", **_filters())
        return json_response({"posts": [post_json(p) for p in posts]})

    @app.get("/api/blackboard/search")
    async def search() -> Response:
        board = ready()
        query = request.args.get("q", "")
        if not query.strip():
            raise _refused("search needs a query (q=...)", "for the newest posts, use /api/blackboard/feed")
        posts = await board.search(query, **_filters())
        return json_response({"query": query, "posts": [post_json(p) for p in posts]})

    @app.post("/api/blackboard/post")
    async def post() -> Response:
        board = ready()
        body = await request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            raise _refused("the request body must be a JSON object", 'send {"text": "..."}')
        text, name, tags = body.get("text"), body.get("name"), body.get("tags", [])
        reply_to, scrub = body.get("reply_to"), body.get("scrub")
        if not isinstance(text, str):
            raise _refused("'text' must be a string", 'send {"text": "..."}')
        if name is not None and not isinstance(name, str):
            raise _refused("'name' must be a string")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise _refused("'tags' must be a list of strings")
        if reply_to is not None and not isinstance(reply_to, str):
            raise _refused("'reply_to' must be a post id (hex)")
        if scrub is not None and not isinstance(scrub, bool):
            raise _refused("'scrub' must be true or false")
        made, redacted = await board.post(text, name=name, tags=tags, thread=reply_to, scrub=scrub)
        return json_response({"post": post_json(made), "redacted": redacted}, 201)

    @app.get("/api/blackboard/watch")
    async def watch() -> Response:
        board = ready()
        since = request.args.get("since")
        try:
            since_ms = None if not since else parse_since(since, now=time.time())
        except ConfigError as exc:
            raise _refused(exc.message, exc.hint) from None

        async def events() -> AsyncIterator[bytes]:
            with board.watch() as new_posts:
                yield b": watching\n\n"
                seen: set[bytes] = set()
                if since_ms is not None:
                    for old in reversed(await board.search("", limit=MAX_LIMIT, since_ms=since_ms)):
                        seen.add(old.id)
                        yield _event(old)
                while True:
                    try:
                        post = await _next_post(new_posts)
                    except trio.EndOfChannel:
                        return  # this reader fell too far behind; it reconnects with ?since=
                    if post is None:
                        yield b": keepalive\n\n"
                    elif post.id not in seen:
                        yield _event(post)

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        response = Response(events(), status=200, headers=headers, content_type="text/event-stream")
        response.timeout = None  # quart's RESPONSE_TIMEOUT (60 s) would end a watch that is meant to last
        return response


async def _next_post(posts: trio.MemoryReceiveChannel[Post]) -> Post | None:
    """The next post, or None after WATCH_KEEPALIVE_S without one. A function of its own because the generator
    above must not yield inside a cancel scope."""
    post: Post | None = None
    with trio.move_on_after(WATCH_KEEPALIVE_S):
        post = await posts.receive()
    return post


def _event(post: Post) -> bytes:
    return f"event: post\ndata: {json.dumps(post_json(post))}\n\n".encode()
