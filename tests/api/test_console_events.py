"""`GET /api/events` and `/api/logs` over real HTTP (hypercorn, in this process) against the node's real event source
(app/console_events.py) fed a status document the test changes: the stream's framing and headers, the keepalive,
the 503 past the stream limit, the cut of a client that fell behind, history kept from other machines' clients.
Waits are deadlines on conditions, never sleeps."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio
from helpers.processes import free_port
from quart_trio import QuartTrio

from meshp2p.api.console_app import create_console_app
from meshp2p.api.console_events import add_event_routes
from meshp2p.api.responses import answer_errors
from meshp2p.api.serve import serve_app
from meshp2p.app.console_events import ConsoleEvents
from meshp2p.wire.console_events import MAX_BACKLOG

LOG = logging.getLogger("meshp2p.test.console_events_api")
LOG.setLevel(logging.INFO)
DEADLINE_S = 10.0
EVENTS = "/api/events"


class Node:
    def __init__(self) -> None:
        self.doc: dict[str, Any] = {"node": {"role": "client", "api_keys": False}, "mesh": None, "splits": [],
                                    "rpc_worker": None, "models": []}

    def status(self) -> dict[str, Any]:
        return copy.deepcopy(self.doc)


@asynccontextmanager
async def serving(app_for: Callable[[ConsoleEvents], QuartTrio], node: Node) -> AsyncIterator[
        tuple[str, ConsoleEvents, httpx.AsyncClient]]:
    """The app on a free port with its event source running, and a client for it."""
    events = ConsoleEvents(node.status, boot="c0ffee00")
    port = free_port()
    async with trio.open_nursery() as nursery:
        await nursery.start(events.run)
        await nursery.start(lambda task_status: serve_app(app_for(events), "127.0.0.1", port, flag="--console",
                                                          task_status=task_status))
        try:
            async with httpx.AsyncClient(timeout=DEADLINE_S) as http:
                yield f"http://127.0.0.1:{port}", events, http
        finally:
            nursery.cancel_scope.cancel()


def events_app(*, local: bool = True, keepalive_s: float = 15.0, max_streams: int = 32) -> Callable[
        [ConsoleEvents], QuartTrio]:
    def build(events: ConsoleEvents) -> QuartTrio:
        app = QuartTrio("test")
        answer_errors(app)
        add_event_routes(app, events, local_only=lambda: local, keepalive_s=keepalive_s, max_streams=max_streams)
        return app
    return build


class Sse:
    """Reads one event stream: blocks (`id`, `event`, `data`) and comments, in order."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()

    async def next(self) -> dict[str, str]:
        block: dict[str, str] = {}
        with trio.fail_after(DEADLINE_S):
            async for line in self.lines:
                if line == "":
                    if block:
                        return block
                    continue
                field, _, value = line.partition(":")
                block[field or "comment"] = value.removeprefix(" ")
        raise EOFError("the stream ended")

    async def until(self, event: str) -> dict[str, str]:
        while (block := await self.next()).get("event") != event:
            pass
        return block


async def test_first_visit_gets_retry_and_snapshot_then_changes_and_logs() -> None:
    node = Node()
    async with serving(events_app(), node) as (url, events, http):
        async with http.stream("GET", url + EVENTS) as r:
            assert r.status_code == 200
            assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert r.headers["cache-control"] == "no-store"
            sse = Sse(r)
            assert await sse.next() == {"retry": "1000"}
            snapshot = [await sse.next() for _ in range(5)]
            assert [b["event"] for b in snapshot] == ["node", "view", "demand", "models", "splits"]
            assert all(b["id"].startswith("c0ffee00.") for b in snapshot)
            node.doc["models"] = [{"id": "tiny", "state": "ready"}]
            LOG.info("started serving tiny")
            line = await sse.until("log")
            assert json.loads(line["data"])["message"] == "started serving tiny"
            models = await sse.until("models")
            assert json.loads(models["data"]) == [{"id": "tiny", "state": "ready"}]
        r = await http.get(url + "/api/logs", params={"limit": 1})
        assert r.status_code == 200 and [x["message"] for x in r.json()] == ["started serving tiny"]
        for bad in ("0", "201", "many"):
            r = await http.get(url + "/api/logs", params={"limit": bad})
            assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        with trio.fail_after(DEADLINE_S):
            while events.streams:  # noqa: ASYNC110 (a condition in another task's hands, polled to a deadline)
                await trio.sleep(0.01)  # the closed stream's slot is released by the server's side


async def test_keepalive_after_the_quiet_interval() -> None:
    async with serving(events_app(keepalive_s=0.2), Node()) as (url, _, http), http.stream("GET", url + EVENTS) as r:
        sse = Sse(r)
        for _ in range(6):
            await sse.next()
        assert await sse.next() == {"comment": "keepalive"}


async def test_past_the_stream_limit_a_503_in_the_console_shape() -> None:
    async with serving(events_app(max_streams=2), Node()) as (url, events, http), \
            http.stream("GET", url + EVENTS) as a, http.stream("GET", url + EVENTS) as b:
        assert a.status_code == b.status_code == 200 and events.streams == 2
        r = await http.get(url + EVENTS)
        assert r.status_code == 503 and r.headers["retry-after"]
        assert r.json()["error"]["type"] == "service_unavailable_error"
        assert r.json()["error"]["code"] == "too_many_streams"


async def test_a_client_that_falls_behind_is_cut_and_resumes_without_a_gap() -> None:
    async with serving(events_app(), Node()) as (url, events, http):
        async with http.stream("GET", url + EVENTS) as r:
            sse = Sse(r)
            await sse.next()
            last = [await sse.next() for _ in range(5)][-1]["id"]
            for i in range(MAX_BACKLOG + 1):  # a burst, faster than any stream is sent
                LOG.info("burst %d", i)
            assert events.streams == 0
            try:
                while True:
                    await sse.next()  # whatever was on its way, then the end
            except (EOFError, httpx.HTTPError):
                pass
        async with http.stream("GET", url + EVENTS, headers={"Last-Event-ID": last}) as r:
            sse = Sse(r)
            assert await sse.next() == {"retry": "1000"}
            got = [json.loads((await sse.next())["data"])["message"] for _ in range(MAX_BACKLOG + 1)]
            assert got == [f"burst {i}" for i in range(MAX_BACKLOG + 1)]


async def test_clients_of_other_machines_get_no_history() -> None:
    node = Node()
    async with serving(events_app(local=False), node) as (url, _, http):
        async with http.stream("GET", url + EVENTS) as r:
            sse = Sse(r)
            for _ in range(6):
                await sse.next()
            LOG.warning("a line for this machine only")
            node.doc["node"]["api_keys"] = True
            LOG.info("and another")
            assert (await sse.next())["event"] == "node"
        r = await http.get(url + "/api/logs")
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"


async def test_the_console_app_serves_events_when_given_a_feed() -> None:
    node = Node()

    async def drop(model_id: str) -> bool:
        return False

    def build(events: ConsoleEvents) -> QuartTrio:
        return create_console_app(node.status, drop, events=events)

    async with serving(build, node) as (url, _, http), \
            http.stream("GET", url + EVENTS, headers={"Last-Event-ID": "deadbeef.3"}) as r:
        sse = Sse(r)
        await sse.next()
        reset = await sse.next()
        assert reset["event"] == "reset" and json.loads(reset["data"]) == {"reason": "unknown_boot"}
        assert (await sse.next())["event"] == "node"
