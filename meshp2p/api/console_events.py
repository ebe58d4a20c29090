"""`GET /api/events` and `GET /api/logs` on the console port (protocols/console-events.md).

    GET /api/events            server-sent events: `retry: 1000`, then the replay asked for with `Last-Event-ID`
                               or (a `reset` and) a snapshot, then every change as it happens
    GET /api/logs?limit=N      the node's last N log lines at INFO and above (N <= 200), newest last

The ring, the resume rule and the framing are wire/console_events.py's; the node's side (what changed, its log
lines and posts) is app/console_events.py's, reached through the `EventFeed` Protocol. What is HTTP's is here:
the headers, a keepalive comment when nothing was sent for `keepalive_s`, 503 past `MAX_STREAMS` streams, and the
cut of a stream that fell behind. `blackboard` and `log` events go only to this machine's clients, like
`/api/blackboard` (a private mesh's posts are its members' business); `/api/logs` answers only this machine.

A stream is cut from outside its own task: a client that stopped reading blocks the send for ever, so the feed
calls the cancel given to `on_cut`, which cancels a scope put around the whole request (`_hold_event_streams`,
an ASGI wrapper like api/access.py's). The same wrapper closes the subscription however the request ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, Scope
from quart import Response, request
from quart_trio import QuartTrio

from meshp2p.api.errors import INVALID_REQUEST, PERMISSION, UNAVAILABLE, ApiError
from meshp2p.api.responses import json_response
from meshp2p.wire.console_events import (
    HISTORY_TYPES,
    KEEPALIVE_FRAME,
    KEEPALIVE_S,
    MAX_STREAMS,
    Event,
    KeepaliveTimer,
    format_events,
    format_retry,
)

EVENTS_PATH = "/api/events"
#: The most `/api/logs` gives (what the node keeps).
MAX_LOG_LIMIT = 200
DEFAULT_LOG_LIMIT = 100
#: How long a cut stream's end may take to send before the request gives up on the client.
END_GRACE_S = 1.0


class EventStream(Protocol):
    """One open stream (app/console_events.py's `Subscription`)."""

    @property
    def first(self) -> Sequence[Event]: ...

    @property
    def cut(self) -> bool: ...

    async def next_events(self) -> list[Event]: ...

    def on_cut(self, cancel: Callable[[], None]) -> None: ...

    def close(self) -> None: ...


class EventFeed(Protocol):
    """What the routes need of the node (app/console_events.py's `ConsoleEvents`)."""

    @property
    def streams(self) -> int: ...

    def subscribe(self, last_event_id: str | None) -> EventStream: ...

    def recent_logs(self, limit: int) -> list[dict[str, Any]]: ...


@dataclass
class _Slot:
    """The request of one event stream: the scope that ends it, and its subscription once made."""

    scope: trio.CancelScope
    stream: EventStream | None = None


_SLOT: ContextVar[_Slot | None] = ContextVar("meshp2p_event_stream_slot", default=None)


def add_event_routes(app: QuartTrio, feed: EventFeed, *, local_only: Callable[[], bool],
                     keepalive_s: float = KEEPALIVE_S, max_streams: int = MAX_STREAMS) -> None:
    """Register the routes on the console app; `keepalive_s` is shorter in tests."""
    _hold_event_streams(app)

    @app.get(EVENTS_PATH)
    async def events() -> Response:
        if feed.streams >= max_streams:
            raise ApiError(503, f"this node already serves {max_streams} event streams", type=UNAVAILABLE,
                           code="too_many_streams", headers={"Retry-After": "5"},
                           hint="close another console tab, or follow /api/status instead")
        this_machine = local_only()
        stream = feed.subscribe(request.headers.get("Last-Event-ID") or None)
        slot = _SLOT.get()
        if slot is not None:
            slot.stream = stream
            stream.on_cut(slot.scope.cancel)

        def frame(events: Sequence[Event]) -> bytes:
            return format_events(events if this_machine else [e for e in events if e.type not in HISTORY_TYPES])

        async def body() -> AsyncIterator[bytes]:
            try:
                yield format_retry() + frame(stream.first)
                timer = KeepaliveTimer(trio.current_time(), keepalive_s)
                while True:
                    new = await _next_events(stream, timer.next_at())
                    if stream.cut:
                        return
                    data = frame(new) if new else b""
                    if data or timer.due(trio.current_time()):
                        yield data or KEEPALIVE_FRAME
                        timer.sent(trio.current_time())
            finally:
                stream.close()

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        response = Response(body(), status=200, headers=headers, content_type="text/event-stream; charset=utf-8")
        response.timeout = None  # quart's RESPONSE_TIMEOUT would end the stream after a minute
        return response

    @app.get("/api/logs")
    async def logs() -> Response:
        if not local_only():
            raise ApiError(403, "the node's log answers only this machine", type=PERMISSION,
                           hint="run `meshp2p logs` on the node's machine (or through ssh)")
        text = request.args.get("limit", str(DEFAULT_LOG_LIMIT))
        try:
            limit = int(text)
        except ValueError:
            raise ApiError(400, f"limit={text!r} is not a number", type=INVALID_REQUEST,
                           hint=f"use 1..{MAX_LOG_LIMIT}") from None
        if not 1 <= limit <= MAX_LOG_LIMIT:
            raise ApiError(400, f"limit={limit} is out of range", type=INVALID_REQUEST,
                           hint=f"use 1..{MAX_LOG_LIMIT}")
        return json_response(feed.recent_logs(limit))


async def _next_events(stream: EventStream, deadline: float) -> list[Event]:
    """The stream's next events, or [] at `deadline`. A function of its own because the body generator must not
    yield inside a cancel scope."""
    new: list[Event] = []
    with trio.move_on_at(deadline):
        new = await stream.next_events()
    return new


def _hold_event_streams(app: QuartTrio) -> None:
    """Run each `/api/events` request inside a cancel scope the feed can cancel (a cut), and close its subscription
    when the request ends, however it ends (the client went away, the node stops, the cut).

    After a cut the body is ended here (hypercorn leaves a response the app abandoned open, and the client would
    wait for ever): the browser sees the stream end and reconnects. A client cut while a send to it was blocked
    (it stopped reading) is given `END_GRACE_S` to take that end, then left to its TCP connection's fate."""
    inner = app.asgi_app

    async def held(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http" or scope["path"] != EVENTS_PATH:
            await inner(scope, receive, send)
            return
        slot = _Slot(trio.CancelScope())
        started = ended = False

        async def tracked(message: ASGISendEvent) -> None:
            nonlocal started, ended
            await send(message)
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                ended = True

        token = _SLOT.set(slot)
        try:
            with slot.scope:
                await inner(scope, receive, tracked)
            if slot.scope.cancelled_caught and started and not ended:
                with trio.move_on_after(END_GRACE_S):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            _SLOT.reset(token)
            if slot.stream is not None:
                slot.stream.close()

    app.asgi_app = held  # type: ignore[method-assign]
