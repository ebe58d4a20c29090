"""The console's event stream and origin rules on a real `meshp2p up` (a one-node private mesh serving two tiny
models): `/api/events` read with httpx the way a browser's EventSource reads it.

- a first visit gets `retry` and the snapshot; a post is a `blackboard` event, a dropped model a `models` event;
- a client that drops, misses two posts and reconnects with `Last-Event-ID` gets exactly what a client that stayed
  connected got after that id: nothing lost, nothing repeated; a foreign boot id gets `reset` and a snapshot;
- the model API answers CORS preflights from the console's origin only; the console refuses writes from pages of
  other origins (CSRF) and grants no other origin.

How fast a change reaches a client is measured by tools/bench/console_events.py (p99 <= 200 ms).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers.processes import NodeProcess, TinyModels, clean_environ, start_node, stop_all, wait_for

from meshp2p.inference.binaries import LlamaBinaries

#: The test posts faster than the default 10 posts a minute.
CONFIG = "[blackboard]\nrate_per_min = 600\n"
#: Generous for a loaded 2-core machine: a change reaches the stream in well under a second.
EVENT_TIMEOUT_S = 10.0
EVIL = "http://evil.example"


class EventReader:
    """One `/api/events` stream read in a thread: every block (`id`, `event`, `data`, `retry`), in order."""

    def __init__(self, node: NodeProcess, last_event_id: str | None = None) -> None:
        self.blocks: list[dict[str, str]] = []
        self.status: int | None = None
        self.socket: socket.socket | None = None
        # The stream sends a keepalive every 15 s: a longer silence is a dead stream, not a quiet one.
        self.client = httpx.Client(timeout=httpx.Timeout(10, read=30))
        self.opened = threading.Event()
        headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
        self.thread = threading.Thread(target=self._read, args=(node.console_url, headers), daemon=True)
        self.thread.start()
        assert self.opened.wait(10), "the event stream did not open"

    def _read(self, url: str, headers: dict[str, str]) -> None:
        try:
            with self.client.stream("GET", url + "/api/events", headers=headers) as r:
                self.status = r.status_code
                self.socket = r.extensions["network_stream"].get_extra_info("socket")
                self.opened.set()
                block: dict[str, str] = {}
                for line in r.iter_lines():
                    if line:
                        field, _, value = line.partition(":")
                        block[field or "comment"] = value.removeprefix(" ")
                    elif block:
                        self.blocks.append(block)
                        block = {}
        except (httpx.HTTPError, OSError):
            pass  # closed by the test
        finally:
            self.opened.set()

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The events so far (retry lines and comments left out), `data` parsed."""
        return [{"id": b["id"], "event": b["event"], "data": json.loads(b["data"])} for b in list(self.blocks)
                if "event" in b and (kind is None or b["event"] == kind)]

    def wait(self, what: str, predicate: Any) -> list[dict[str, Any]]:
        wait_for(lambda: predicate(self.events()), EVENT_TIMEOUT_S, what, interval_s=0.02)
        return self.events()

    def close(self) -> None:
        """Shut the socket, which wakes the reader blocked in recv (a dropped connection), and wait for it."""
        if self.socket is not None:
            with contextlib.suppress(OSError):
                self.socket.shutdown(socket.SHUT_RDWR)
        self.thread.join(10)
        self.client.close()
        assert not self.thread.is_alive(), "the event reader did not stop"


def peers_of(view_event: dict[str, Any]) -> set[str]:
    return {p["peer_id"] for p in view_event["data"]["peers"]}


def seq(event_id: str) -> int:
    return int(event_id.split(".")[1])


def post(node: NodeProcess, text: str, **headers: str) -> httpx.Response:
    return httpx.post(node.console_url + "/api/blackboard/post", json={"text": text}, headers=headers, timeout=10)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, tiny_models: TinyModels,
         llama_binaries: LlamaBinaries) -> Iterator[NodeProcess]:
    home: Path = tmp_path_factory.mktemp("console-events")
    (home / "config.toml").write_text(CONFIG)
    started = start_node(home, "--model", str(tiny_models.dense), "--model", str(tiny_models.other),
                         "--threads", "1", "--ctx-size", "1024")
    try:
        started.wait_ready()
        yield started
    finally:
        stop_all([started])


def test_snapshot_changes_and_a_resume_that_loses_and_repeats_nothing(node: NodeProcess) -> None:
    stays = EventReader(node)  # connected throughout: what a resume must reproduce
    drops = EventReader(node)
    try:
        assert stays.status == drops.status == 200
        snapshot = drops.wait("the snapshot", lambda ev: len(ev) >= 5)[:5]
        assert [e["event"] for e in snapshot] == ["node", "view", "demand", "models", "splits"]
        assert drops.blocks[0] == {"retry": "1000"}
        assert sorted(m["id"] for m in snapshot[3]["data"]) == ["tiny-dense", "tiny-other"]
        assert all(m["state"] == "ready" for m in snapshot[3]["data"])
        boot = snapshot[0]["id"].split(".")[0]

        first = post(node, "before the drop").json()["post"]["id"]
        drops.wait("the post's blackboard event", lambda ev: any(e["event"] == "blackboard"
                                                                 and e["data"]["id"] == first for e in ev))
        r = httpx.post(node.console_url + "/api/models/tiny-other/drop", timeout=30)
        assert r.status_code == 200, r.text
        drops.wait("a models event without tiny-other", lambda ev: any(
            e["event"] == "models" and [m["id"] for m in e["data"]] == ["tiny-dense"] for e in ev))
        drops.wait("the drop's log line", lambda ev: any(
            e["event"] == "log" and "stopped serving tiny-other" in e["data"]["message"] for e in ev))
    finally:
        drops.close()
    last = drops.events()[-1]["id"]
    missed = [post(node, f"while away {i}").json()["post"]["id"] for i in range(2)]
    stays.wait("the posts made while the other was away", lambda ev: missed[-1] in
               {e["data"]["id"] for e in ev if e["event"] == "blackboard"})

    back = EventReader(node, last_event_id=last)
    try:
        back.wait("the missed posts, replayed", lambda ev: missed[-1] in
                  {e["data"]["id"] for e in ev if e["event"] == "blackboard"})
        got = back.events()
        assert back.blocks[0] == {"retry": "1000"}
        assert got[0]["event"] != "reset", got[0]
        assert [e["data"]["id"] for e in got if e["event"] == "blackboard"] == missed
        # Exactly what the connected client got after `last`, in the same order, each once.
        upto = seq(got[-1]["id"])
        stays.wait("the connected client to be as far", lambda ev: any(seq(e["id"]) >= upto for e in ev))
        same = [e for e in stays.events() if seq(last) < seq(e["id"]) <= upto]
        assert [e["id"] for e in got] == [e["id"] for e in same]
        assert got == same
        assert all(e["id"].startswith(boot + ".") for e in got)
    finally:
        back.close()
        stays.close()


def test_a_foreign_boot_id_gets_reset_then_a_snapshot(node: NodeProcess) -> None:
    status_boot = EventReader(node)
    try:
        boot = status_boot.wait("a snapshot", lambda ev: len(ev) >= 5)[0]["id"].split(".")[0]
    finally:
        status_boot.close()
    foreign = "00000000" if boot != "00000000" else "ffffffff"
    reader = EventReader(node, last_event_id=f"{foreign}.7")
    try:
        got = reader.wait("reset and a snapshot", lambda ev: len(ev) >= 6)[:6]
        assert got[0]["event"] == "reset" and got[0]["data"] == {"reason": "unknown_boot"}
        assert [e["event"] for e in got[1:]] == ["node", "view", "demand", "models", "splits"]
        assert seq(got[1]["id"]) == seq(got[0]["id"]) + 1
    finally:
        reader.close()


def test_a_member_joining_and_leaving_is_a_view_event(node: NodeProcess, tmp_path: Path) -> None:
    token = subprocess.run([sys.executable, "-m", "meshp2p", "invite"], capture_output=True, text=True, timeout=60,
                           env={**clean_environ(), "MESHP2P_HOME": str(node.home)}).stdout.strip()
    assert token.startswith("mp1"), token
    reader = EventReader(node)
    other = start_node(tmp_path / "member", "--client", "--join", token)
    try:
        other.wait_ready()
        member = other.status()["mesh"]["peer_id"]
        joined = reader.wait("a view event with the new member", lambda ev: any(
            e["event"] == "view" and member in peers_of(e) for e in ev))
        other.stop()
        reader.wait("a later view event without it", lambda ev: any(
            e["event"] == "view" and member not in peers_of(e) for e in ev[len(joined):]))
    finally:
        reader.close()
        stop_all([other])


def test_logs_endpoint_gives_the_newest_lines_last(node: NodeProcess) -> None:
    r = httpx.get(node.console_url + "/api/logs", params={"limit": 200}, timeout=10)
    assert r.status_code == 200
    lines = r.json()
    assert lines and all(set(x) == {"time", "level", "logger", "message"} for x in lines)
    assert any("API listening on" in x["message"] for x in lines)
    assert [x["time"] for x in lines] == sorted(x["time"] for x in lines)


def test_the_api_answers_the_console_page_and_nobody_else(node: NodeProcess) -> None:
    console_origin = f"http://localhost:{node.console_port}"
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    r = httpx.options(node.base_url + "/chat/completions", headers={"Origin": console_origin, **preflight},
                      timeout=10)
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == console_origin
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-api-key", "anthropic-version"} <= allowed
    assert "POST" in r.headers["access-control-allow-methods"]

    r = httpx.options(node.base_url + "/chat/completions", headers={"Origin": EVIL, **preflight}, timeout=10)
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    assert r.json()["error"]["type"] == "permission_error"

    r = httpx.get(node.base_url + "/models", headers={"Origin": f"http://127.0.0.1:{node.console_port}"},
                  timeout=10)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == f"http://127.0.0.1:{node.console_port}"
    r = httpx.get(node.base_url + "/models", headers={"Origin": EVIL}, timeout=10)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    # The console page can stream chat from the API in the browser: the answer carries the grant.
    body = {"model": "tiny-dense", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}
    with httpx.stream("POST", node.base_url + "/chat/completions", json=body, timeout=60,
                      headers={"Origin": console_origin}) as r:
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == console_origin
        assert any(line.startswith("data:") for line in r.iter_lines())
    # llama-server's own CORS headers never reach a page of another origin.
    r = httpx.post(node.base_url + "/chat/completions", json={**body, "stream": False}, timeout=60,
                   headers={"Origin": EVIL})
    assert r.status_code == 200 and not any(k.lower().startswith("access-control-") for k in r.headers)


def test_the_console_refuses_writes_from_other_origins(node: NodeProcess) -> None:
    r = post(node, "from a hostile page", Origin=EVIL)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["type"] == "permission_error" and r.json()["error"]["code"] == "foreign_origin"
    r = httpx.post(node.console_url + "/api/models/tiny-dense/drop", headers={"Origin": EVIL}, timeout=10)
    assert r.status_code == 403
    assert [m["id"] for m in node.status()["models"]] == ["tiny-dense"]
    r = httpx.post(node.console_url + "/api/models/tiny-dense/drop", headers={"Origin": "null"}, timeout=10)
    assert r.status_code == 403  # a sandboxed page or a file: URL
    r = post(node, "from the console page", Origin=f"http://[::1]:{node.console_port}")
    assert r.status_code == 201, r.text
    r = httpx.get(node.console_url + "/api/status", headers={"Origin": EVIL}, timeout=10)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
