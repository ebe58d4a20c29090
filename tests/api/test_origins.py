"""Browser origins (api/origins.py) over real HTTP in this process: the model API grants CORS to the console's
origins only, before its key check, and drops a backend's own grants; the console refuses writes from pages of
other origins in its error shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import trio
from helpers.processes import free_port
from quart import Response
from quart_trio import QuartTrio

from meshp2p.access.gate import Gate
from meshp2p.access.keys import Keyring
from meshp2p.access.usage import UsageBook
from meshp2p.api.access import guard_api
from meshp2p.api.origins import ALLOWED_HEADERS, allow_console_origins, console_origins, refuse_foreign_writes
from meshp2p.api.responses import answer_errors, json_response
from meshp2p.api.serve import serve_app

CONSOLE_PORT = 3131
CONSOLE = "http://localhost:3131"
EVIL = "http://evil.example"
PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}


class Keys:
    def __init__(self, ring: Keyring) -> None:
        self.ring = ring

    def current(self) -> Keyring | None:
        return self.ring


@asynccontextmanager
async def served(app: QuartTrio) -> AsyncIterator[httpx.AsyncClient]:
    port = free_port()
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: serve_app(app, "127.0.0.1", port, flag="--port",
                                                          task_status=task_status))
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                yield http
        finally:
            nursery.cancel_scope.cancel()


def test_console_origins() -> None:
    assert console_origins("127.0.0.1", 3131) == {"http://localhost:3131", "http://127.0.0.1:3131",
                                                  "http://[::1]:3131"}
    assert "http://192.168.1.5:4000" in console_origins("192.168.1.5", 4000)
    assert "http://[fd00::5]:3131" in console_origins("fd00::5", 3131)
    assert console_origins("0.0.0.0", 3131) == console_origins("127.0.0.1", 3131)


async def test_the_api_grants_the_console_page_only_and_before_the_key_check() -> None:
    ring, _, key = Keyring().create(name="page", now=0.0)
    app = QuartTrio("api")
    answer_errors(app)

    @app.post("/v1/chat/completions")
    async def chat() -> Response:
        # What a backend may send: llama-server's own grant, passed on by the proxy.
        return json_response({"ok": True}, headers={"Access-Control-Allow-Origin": "*"})

    guard_api(app, Gate(), Keys(ring), UsageBook())
    allow_console_origins(app, console_origins("127.0.0.1", CONSOLE_PORT))
    async with served(app) as http:
        r = await http.options("/v1/chat/completions", headers={"Origin": CONSOLE, **PREFLIGHT})
        assert r.status_code == 204 and r.headers["access-control-allow-origin"] == CONSOLE
        assert r.headers["access-control-allow-headers"] == ALLOWED_HEADERS
        r = await http.options("/v1/chat/completions", headers={"Origin": EVIL, **PREFLIGHT})
        assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
        r = await http.options("/v1/messages", headers={"Origin": EVIL, **PREFLIGHT})
        assert r.json()["type"] == "error"  # Anthropic's shape under /v1/messages

        # Without a key the page reads the 401 (the grant is on it); with one, the answer, with our grant only.
        r = await http.post("/v1/chat/completions", json={}, headers={"Origin": CONSOLE})
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == CONSOLE
        r = await http.post("/v1/chat/completions", json={}, headers={"Origin": CONSOLE,
                                                                      "Authorization": f"Bearer {key}"})
        assert r.status_code == 200 and r.headers.get_list("access-control-allow-origin") == [CONSOLE]
        r = await http.post("/v1/chat/completions", json={}, headers={"Origin": EVIL, "Authorization": f"Bearer {key}"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        r = await http.post("/v1/chat/completions", json={}, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


async def test_the_console_refuses_writes_from_other_origins() -> None:
    app = QuartTrio("console")
    answer_errors(app)
    refuse_foreign_writes(app, console_origins("127.0.0.1", CONSOLE_PORT))

    @app.route("/api/thing", methods=["GET", "POST"])
    async def thing() -> Response:
        return json_response({"ok": True})

    async with served(app) as http:
        r = await http.post("/api/thing", headers={"Origin": EVIL})
        assert r.status_code == 403
        error = r.json()["error"]
        assert (error["type"], error["code"]) == ("permission_error", "foreign_origin") and error["hint"]
        assert (await http.post("/api/thing", headers={"Origin": "null"})).status_code == 403
        for origin in ("http://127.0.0.1:3131", "http://[::1]:3131", CONSOLE):
            assert (await http.post("/api/thing", headers={"Origin": origin})).status_code == 200
        assert (await http.post("/api/thing")).status_code == 200  # curl, the CLI: no Origin
        r = await http.get("/api/thing", headers={"Origin": EVIL})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
