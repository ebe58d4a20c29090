"""A blackboard watch is meant to stay open for as long as its reader reads: quart's RESPONSE_TIMEOUT (60 s by
default, for the console app's other answers) must not end it."""

from __future__ import annotations

from contextlib import contextmanager

import trio
from quart import request

from meshp2p.api.console_app import create_console_app


class _QuietBoard:
    """Only what the watch route reaches for before its stream is read: nothing is posted."""

    @contextmanager
    def watch(self):
        send, receive = trio.open_memory_channel(1)
        with send, receive:
            yield receive


async def _no_drop(model_id: str) -> bool:
    return False


async def test_a_watch_has_no_response_timeout():
    app = create_console_app(lambda: {"ok": True}, _no_drop, _QuietBoard())  # type: ignore[arg-type]
    assert app.config["RESPONSE_TIMEOUT"]  # the app's own answers keep quart's limit
    async with app.test_request_context("/api/blackboard/watch", method="GET"):
        request.remote_addr = "127.0.0.1"  # a test request context has no peer; the route answers this machine only
        response = await app.view_functions["watch"]()
    assert response.timeout is None
    assert response.mimetype == "text/event-stream"
