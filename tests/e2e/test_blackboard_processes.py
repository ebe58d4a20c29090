"""The blackboard as users and agents run it: `meshp2p up` processes in a private mesh, the CLI, the console's
HTTP API and the MCP server driven by the official MCP client.

- posts on A appear on C's live feed, each once (how fast: tools/bench/blackboard_latency.py, p99 <= 1 s);
- a node started later receives the earlier posts; a restarted node keeps its store and catches up;
- `meshp2p blackboard post/read/search/watch`, HTTP errors, search ranking;
- `meshp2p blackboard mcp` answers initialize, tools/list and tools/call.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import anyio
import httpx
import pytest
from helpers.processes import NodeProcess, assert_nothing_left, clean_environ, start_node, stop_all, wait_for
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from meshp2p.blackboard.store import BlackboardStore

#: The tests post faster than the default 10 posts a minute; every member must allow it (config.toml).
CONFIG = "[blackboard]\nrate_per_min = 600\n"
JOIN_TIMEOUT_S = 60.0
#: Generous: a post reaches another member in ~20 ms (tools/bench/blackboard_latency.py).
ARRIVAL_TIMEOUT_S = 10.0
#: The MCP session, start to end; each call answers in well under a second.
MCP_TIMEOUT_S = 60.0
SYNC_TIMEOUT_S = 30.0


def write_config(home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(CONFIG)
    return home


def peer_ids(node: NodeProcess) -> set[str]:
    return {p["peer_id"] for p in node.status()["mesh"]["peers"]}


def cli(node: NodeProcess, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshp2p", "blackboard", *args], capture_output=True, text=True,
                          input=stdin, timeout=60, env={**clean_environ(), "MESHP2P_HOME": str(node.home),
                                                        "COLUMNS": "200"})


def post(node: NodeProcess, text: str, **extra: Any) -> httpx.Response:
    return httpx.post(node.console_url + "/api/blackboard/post", json={"text": text, **extra}, timeout=10)


def feed(node: NodeProcess, **params: Any) -> list[dict[str, Any]]:
    r = httpx.get(node.console_url + "/api/blackboard/feed", params={"limit": 500, **params}, timeout=10)
    assert r.status_code == 200, r.text
    posts: list[dict[str, Any]] = r.json()["posts"]
    return posts


def ids(node: NodeProcess) -> set[str]:
    return {p["id"] for p in feed(node)}


def read_first_line(pipe: IO[str] | None, timeout_s: float) -> str:
    """The first line a child writes to its pipe, or fail after `timeout_s` (a bare readline() can block for
    ever). Reads the file descriptor itself, so nothing is left in the text wrapper's buffer."""
    assert pipe is not None
    fd, data = pipe.fileno(), b""
    deadline = time.monotonic() + timeout_s
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            pytest.fail(f"no whole line within {timeout_s} s (got {data!r})")
        chunk = os.read(fd, 65536)
        if not chunk:
            pytest.fail(f"the pipe closed before a whole line (got {data!r})")
        data += chunk
    return data.split(b"\n", 1)[0].decode()


class Watcher:
    """A live feed (`/api/blackboard/watch`) read in a thread: every post event, in the order it came."""

    def __init__(self, node: NodeProcess) -> None:
        self.events: list[dict[str, Any]] = []
        self.socket: socket.socket | None = None
        # The feed sends a keepalive comment every 15 s: a longer silence is a dead stream, not a quiet one.
        self.client = httpx.Client(timeout=httpx.Timeout(10, read=30))
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(node,), daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "the watch stream did not open"

    def _read(self, node: NodeProcess) -> None:
        try:
            with self.client.stream("GET", node.console_url + "/api/blackboard/watch") as r:
                self.socket = r.extensions["network_stream"].get_extra_info("socket")
                for line in r.iter_lines():
                    self.ready.set()
                    if line.startswith("data:"):
                        self.events.append(json.loads(line[5:]))
        except (httpx.HTTPError, OSError):
            pass  # closed by the test

    @property
    def arrived(self) -> set[str]:
        return {event["id"] for event in self.events}

    def close(self) -> None:
        """Shut the stream's socket, which wakes the reader blocked in recv, and wait for it to end."""
        if self.socket is not None:
            with contextlib.suppress(OSError):
                self.socket.shutdown(socket.SHUT_RDWR)
        self.thread.join(10)
        self.client.close()
        assert not self.thread.is_alive(), "the watch reader did not stop"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NodeProcess]]:
    """A private mesh of three API-only nodes: A starts it, B and C join with its invite token."""
    root = tmp_path_factory.mktemp("blackboard-mesh")
    nodes: list[NodeProcess] = []
    try:
        a = start_node(write_config(root / "a"), "--client")
        nodes.append(a)
        a.wait_ready()
        token = subprocess.run([sys.executable, "-m", "meshp2p", "invite"], capture_output=True, text=True,
                               env={**clean_environ(), "MESHP2P_HOME": str(a.home)}, timeout=30).stdout.strip()
        assert token.startswith("mp1"), token
        for name in ("b", "c"):
            node = start_node(write_config(root / name), "--client", "--join", token)
            nodes.append(node)
            node.wait_ready()
        every = {n.status()["mesh"]["peer_id"] for n in nodes}
        wait_for(lambda: all(peer_ids(n) == every for n in nodes), JOIN_TIMEOUT_S, "three nodes in every view")
        yield nodes
    finally:
        stop_all(nodes)


def test_posts_on_a_appear_on_c_s_live_feed_once_each(mesh: list[NodeProcess]) -> None:
    """Behaviour only; how fast (p99 <= 1 s) is measured by tools/bench/blackboard_latency.py."""
    a, _, c = mesh
    watcher = Watcher(c)
    sent: list[tuple[str, str]] = []
    try:
        for i in range(50):
            r = post(a, f"latency probe {i}", tags=["probe"])
            assert r.status_code == 201, r.text
            sent.append((r.json()["post"]["id"], f"latency probe {i}"))
            wait_for(lambda post_id=sent[-1][0]: post_id in watcher.arrived, ARRIVAL_TIMEOUT_S, f"probe {i} on C")
    finally:
        watcher.close()
    probes = [(e["id"], e["text"]) for e in watcher.events if "probe" in e["tags"]]
    assert probes == sent, "each post once, in the order posted, with its text"
    author = a.status()["mesh"]["peer_id"]
    assert all(e["author"] == author for e in watcher.events if "probe" in e["tags"])
    stored = {p["id"]: p for p in feed(c, tag="probe")}
    assert set(stored) == {post_id for post_id, _ in sent} and all(p["author"] == author for p in stored.values())


def test_a_node_started_later_receives_earlier_posts(mesh, tmp_path):
    a, b, _ = mesh
    mine = {post(b, f"before you came {i}").json()["post"]["id"] for i in range(3)}
    wait_for(lambda: mine <= ids(a), 10, "b's posts on a")
    earlier = ids(a)  # everything the mesh posted so far (the other tests' posts too)
    token = subprocess.run([sys.executable, "-m", "meshp2p", "invite"], capture_output=True, text=True,
                           env={**clean_environ(), "MESHP2P_HOME": str(a.home)}, timeout=30).stdout.strip()
    late = start_node(write_config(tmp_path / "late"), "--client", "--join", token)
    try:
        late.wait_ready()
        wait_for(lambda: earlier <= ids(late), SYNC_TIMEOUT_S, f"the {len(earlier)} earlier posts on the late node")
        assert not late.status()["blackboard"]["rejected"]
    finally:
        late.stop()
        assert_nothing_left(late)


def test_a_restarted_node_keeps_its_store_and_catches_up(mesh):
    a, _, c = mesh
    own = {post(a, f"before C went down {i}").json()["post"]["id"] for i in range(2)}
    wait_for(lambda: own <= ids(c), SYNC_TIMEOUT_S, "C to hold the posts made before it went down")
    before = ids(c)
    c.stop()
    stores = list((c.home / "blackboard").glob("*.sqlite"))
    assert len(stores) == 1
    with BlackboardStore(stores[0]) as store:  # what is on disk while the node is down
        assert {p.id_hex for p in store.feed(1000)} == before
    missed = {post(a, f"while C was down {i}").json()["post"]["id"] for i in range(3)}
    c._start(c.api_port, c.console_port)
    c.wait_ready()
    assert before <= ids(c)  # from its own store, at once
    wait_for(lambda: missed <= ids(c), SYNC_TIMEOUT_S, "the posts C missed, by sync")


def test_cli_post_read_search_and_watch(mesh):
    a, b, _ = mesh
    watch = subprocess.Popen([sys.executable, "-m", "meshp2p", "blackboard", "watch", "--json"], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**clean_environ(), "MESHP2P_HOME": str(b.home)})
    try:
        wait_for(lambda: b.status()["blackboard"]["watchers"] == 1, 30, "the watch command to connect")
        r = cli(a, "post", "quantized llama on the spare 3090, ask me", "--tag", "GPU", "--name", "alice")
        assert r.returncode == 0, r.stderr
        assert "posted" in r.stderr
        watched = json.loads(read_first_line(watch.stdout, 30))
        assert (watched["text"], watched["name"], watched["tags"]) == (
            "quantized llama on the spare 3090, ask me", "alice", ["gpu"])
    finally:
        watch.terminate()
        try:
            watch.wait(10)
        except subprocess.TimeoutExpired:
            watch.kill()
            watch.wait(10)
            raise

    r = cli(b, "post", "-", "--reply", watched["id"][:10], "--json", stdin="token sk-ant-api03-" + "x1Y2" * 20)
    assert r.returncode == 0, r.stderr
    reply = json.loads(r.stdout)
    assert reply["redacted"] == ["anthropic key"] and "[redacted: anthropic key]" in reply["post"]["text"]
    assert reply["post"]["thread"] == watched["id"]

    wait_for(lambda: reply["post"]["id"] in ids(a), 10, "the reply on A")
    r = cli(a, "read", "--limit", "2")
    assert r.returncode == 0 and "quantized llama" in r.stdout and "redacted" in r.stdout
    r = cli(a, "search", "quant 3090", "--json")
    assert json.loads(r.stdout)[0]["id"] == watched["id"]
    r = cli(a, "search", "nothing-like-this-anywhere")
    assert r.returncode == 0 and "no posts match" in r.stdout
    r = cli(a, "read", "--from", "alice", "--json")
    assert [p["id"] for p in json.loads(r.stdout)] == [watched["id"]]


def test_search_ranks_by_matched_terms_then_recency(mesh):
    a, _, _ = mesh
    one = post(a, "zebra crossing").json()["post"]["id"]
    both = post(a, "zebra stripes on a zebra crossing? no, zebra ROWS").json()["post"]["id"]
    newer = post(a, "another zebra").json()["post"]["id"]
    r = httpx.get(a.console_url + "/api/blackboard/search", params={"q": "zebra rows"}, timeout=10)
    assert [p["id"] for p in r.json()["posts"]][:3] == [both, newer, one]


def test_bad_requests_get_clear_errors(mesh):
    a, _, _ = mesh
    url = a.console_url + "/api/blackboard"
    r = httpx.post(url + "/post", content=b"{not json", timeout=10)
    assert r.status_code == 400 and "JSON object" in r.json()["error"]["message"]
    assert post(a, "   ").status_code == 400
    r = post(a, "x" * 5000)
    assert r.status_code == 413 and "4096" in r.json()["error"]["message"]
    r = post(a, "hi", tags=["not a tag!"])
    assert r.status_code == 400 and r.json()["error"]["hint"]
    assert post(a, "hi", reply_to="ffffffffff").status_code == 404
    assert httpx.get(url + "/feed", params={"limit": "lots"}, timeout=10).status_code == 400
    r = httpx.get(url + "/feed", params={"since": "last tuesday"}, timeout=10)
    assert r.status_code == 400 and "2h" in r.json()["error"]["hint"]
    assert httpx.get(url + "/search", timeout=10).status_code == 400
    assert a.status()["blackboard"]["rejected"] == {}


def test_mcp_server_answers_a_real_client_session(mesh):
    a, b, _ = mesh

    async def session() -> tuple[Any, ...]:
        params = StdioServerParameters(command=sys.executable, args=["-m", "meshp2p", "blackboard", "mcp",
                                                                     "--name", "test-agent"],
                                       env={**clean_environ(), "MESHP2P_HOME": str(a.home)})
        with anyio.fail_after(MCP_TIMEOUT_S):
            return await calls(params)

    async def calls(params: StdioServerParameters) -> tuple[Any, ...]:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
            init = await client.initialize()
            tools = await client.list_tools()
            posted = await client.call_tool("blackboard_post", {"text": "benchmarks done: 27 tok/s", "tags": ["bench"]})
            found = await client.call_tool("blackboard_search", {"query": "benchmarks tok", "limit": 5})
            latest = await client.call_tool("blackboard_feed", {"tag": "bench"})
            missing = await client.call_tool("blackboard_post", {})
            return init, tools, posted, found, latest, missing

    init, tools, posted, found, latest, missing = anyio.run(session)
    assert init.serverInfo.name == "meshp2p-blackboard"
    assert {t.name for t in tools.tools} == {"blackboard_post", "blackboard_search", "blackboard_feed"}
    assert not posted.isError
    post_id = posted.structuredContent["post"]["id"]
    assert posted.structuredContent["post"]["name"] == "test-agent"
    assert found.structuredContent["posts"][0]["id"] == post_id
    assert "benchmarks done: 27 tok/s" in found.content[0].text
    assert [p["id"] for p in latest.structuredContent["posts"]] == [post_id]
    assert missing.isError and "text" in missing.content[0].text
    wait_for(lambda: post_id in ids(b), 10, "the agent's post on another member")
