#!/usr/bin/env python3
"""How long a blackboard post takes to reach another member's live feed, next to its own node's, in one run.

Starts three `meshp2p up --client` processes on loopback, each with its own MESHP2P_HOME in a temp dir: A starts
a private mesh, B and C join it with A's invite token (the mesh tests/e2e/test_blackboard_processes.py
runs). Once every view holds all three, it posts --posts notes on A (`POST /api/blackboard/post`), one at a time,
and times each from the moment the POST is sent to its arrival on two live feeds (`GET /api/blackboard/watch`):
A's own (signing, storing and the feed itself, no network) and C's (the same, plus gossip to another member).
Prints p50 / p95 / p99 / max of each and of the difference per post (what the mesh adds).

Target: p99 <= 1 s on C (figures in README, "Tests and benchmarks"). Runtime: ~30 s.

usage: python tools/bench/blackboard_latency.py [--posts 50]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

TARGET_P99_S = 1.0
#: The default is 10 posts a minute per author; every member must allow the bench's rate.
CONFIG = "[blackboard]\nrate_per_min = 6000\n"
READY_TIMEOUT_S = 120.0
ARRIVAL_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 20.0
POLL_S = 0.05


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Node:
    label: str
    home: Path
    console_port: int
    popen: subprocess.Popen[bytes]

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.console_port}"

    def status(self) -> dict[str, Any] | None:
        if self.popen.poll() is not None:
            log = (self.home / "output.log").read_text(errors="replace")[-2000:]
            raise SystemExit(f"{self.label} exited with {self.popen.returncode}:\n{log}")
        try:
            data: dict[str, Any] = httpx.get(self.console_url + "/api/status", timeout=5).json()
            return data
        except (httpx.HTTPError, ValueError):
            return None


def environ(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MESHP2P_BOOTSTRAP", "MESHP2P_HOME")}
    return {**env, "MESHP2P_HOME": str(home)}


def start(root: Path, label: str, *args: str) -> Node:
    home = root / label
    home.mkdir()
    (home / "config.toml").write_text(CONFIG)
    console = free_port()
    with (home / "output.log").open("wb") as out:
        popen = subprocess.Popen([sys.executable, "-m", "meshp2p", "up", "--client", "--no-build",
                                  "--port", str(free_port()), "--console", str(console), *args],
                                 stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environ(home))
    return Node(label, home, console, popen)


def wait_until(what: str, predicate: Any, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(POLL_S)


def peer_ids(node: Node) -> set[str]:
    status = node.status()
    return {p["peer_id"] for p in status["mesh"]["peers"]} if status else set()


def stop(nodes: list[Node]) -> None:
    for node in nodes:
        if node.popen.poll() is None:
            node.popen.send_signal(signal.SIGINT)
    for node in nodes:
        try:
            node.popen.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"{node.label} ignored SIGINT for {STOP_TIMEOUT_S:.0f} s: killed")
            node.popen.kill()
            node.popen.wait(STOP_TIMEOUT_S)


@dataclass
class Watcher:
    """A node's live feed read in a thread: when each post arrived (time.monotonic), by id."""

    node: Node
    arrived: dict[str, float] = field(default_factory=dict)
    sock: socket.socket | None = None

    def __post_init__(self) -> None:
        # The feed sends a keepalive comment every 15 s, so a read that waits longer means the node is gone.
        self.client = httpx.Client(timeout=httpx.Timeout(10, read=30))
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        if not self.ready.wait(10):
            raise SystemExit(f"{self.node.label}'s watch stream did not open")

    def _read(self) -> None:
        try:
            with self.client.stream("GET", self.node.console_url + "/api/blackboard/watch") as r:
                self.sock = r.extensions["network_stream"].get_extra_info("socket")
                for line in r.iter_lines():
                    self.ready.set()
                    if line.startswith("data:"):
                        self.arrived[json.loads(line[5:])["id"]] = time.monotonic()
        except (httpx.HTTPError, OSError):
            pass  # closed by the bench

    def close(self) -> None:
        """Shut the stream's socket (which wakes the reader blocked in recv) and wait for the reader to end."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(10)
        self.client.close()


def quantiles(values: list[float]) -> str:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return (f"p50 {statistics.median(values) * 1000:7.1f} ms  p95 {cuts[94] * 1000:7.1f} ms  "
            f"p99 {cuts[98] * 1000:7.1f} ms  max {max(values) * 1000:7.1f} ms")


def measure(a: Node, c: Node, posts: int) -> tuple[list[float], list[float]]:
    own, other = Watcher(a), Watcher(c)
    on_a, on_c = [], []
    try:
        with httpx.Client(timeout=10) as client:
            for i in range(posts):
                sent = time.monotonic()
                r = client.post(a.console_url + "/api/blackboard/post", json={"text": f"latency probe {i}",
                                                                              "tags": ["probe"]})
                if r.status_code != 201:
                    raise SystemExit(f"post {i} refused: {r.status_code} {r.text}")
                post_id = r.json()["post"]["id"]
                wait_until(f"probe {i} on both feeds", lambda post_id=post_id: post_id in own.arrived
                           and post_id in other.arrived, ARRIVAL_TIMEOUT_S)
                on_a.append(own.arrived[post_id] - sent)
                on_c.append(other.arrived[post_id] - sent)
    finally:
        own.close()
        other.close()
    return on_a, on_c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=50, help="posts timed, one at a time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-blackboard-") as tmp:
        root = Path(tmp)
        nodes: list[Node] = []
        try:
            a = start(root, "a")
            nodes.append(a)
            wait_until("A's console", lambda: a.status() is not None)
            token = subprocess.run([sys.executable, "-m", "meshp2p", "invite"], capture_output=True, text=True,
                                   env=environ(a.home), timeout=60).stdout.strip()
            if not token.startswith("mp1"):
                raise SystemExit(f"no invite token from A: {token!r}")
            nodes += [start(root, name, "--join", token) for name in ("b", "c")]
            ids: set[str] = set()
            for node in nodes:
                wait_until(f"{node.label}'s console", lambda node=node: node.status() is not None)
                status = node.status()
                assert status is not None
                ids.add(status["mesh"]["peer_id"])
            wait_until("three nodes in every view", lambda: all(peer_ids(n) == ids for n in nodes))
            on_a, on_c = measure(a, nodes[2], args.posts)
        finally:
            stop(nodes)
    added = [c - a for a, c in zip(on_a, on_c, strict=True)]
    print(f"blackboard post on A -> live feed, {args.posts} posts one at a time, 3 `up --client` nodes, loopback:")
    print(f"  A's own feed (no network)  {quantiles(on_a)}")
    print(f"  C's feed (through gossip)  {quantiles(on_c)}")
    print(f"  added by the mesh, C - A   {quantiles(added)}")
    p99 = statistics.quantiles(on_c, n=100, method="inclusive")[98]
    print(f"  target p99 on C <= {TARGET_P99_S:.1f} s: {'met' if p99 <= TARGET_P99_S else 'NOT met'}")


if __name__ == "__main__":
    main()
