"""Restarts heal: a node killed and started again with its identity is usable within seconds, ten times in a row.

Real `meshp2p up` processes on loopback with the tiny model; the official `openai` client on an API-only node C.
Two servers (A, D) of one model; A is SIGKILLed mid-stream and restarted with the same MESHP2P_HOME (same
PeerID) ten times. Every stream C reads completes, and after each restart a request C routes to A (a session that
sticks to A) is answered *by A* within RESTART_USABLE_S of A's API being ready: membership is proved again on the
new connection (p2p/join.py), not after C's next look at the mesh.
"""

from __future__ import annotations

import signal
import time

import httpx
from helpers.processes import NODE_STOP_TIMEOUT_S, wait_for

from meshp2p.mesh.routing import rendezvous_weight

from .test_mesh_routing import ROUTING_TIMEOUT_S, _serving, client_for, start_mesh

RESTARTS = 10
RESTART_USABLE_S = 5.0
MAX_TOKENS = 1500


def _servers(node) -> int:
    models = httpx.get(node.base_url + "/models", timeout=10).json()["data"]
    return len(models[0]["meshp2p"]["nodes"]) if models else 0


def _session_for(peer_id: str, other: str) -> str:
    """A session key whose first choice (rendezvous hashing, mesh/routing.py) is `peer_id`."""
    return next(key for key in (f"user-{i}" for i in range(1000))
                if rendezvous_weight(key, peer_id) > rendezvous_weight(key, other))


def _served_by(node, model: str) -> int:
    return _serving((node,), model)[node]


def _answered_by(victim, client, session: str, deadline: float) -> float:
    """Seconds until a request from `client` in `session` is answered by `victim` (fails at `deadline`)."""
    start = time.monotonic()
    before = _served_by(victim, "tiny-dense")
    while time.monotonic() < deadline:
        client_for(client).completions.create(model="tiny-dense", prompt="x", max_tokens=2, user=session)
        if _served_by(victim, "tiny-dense") > before:
            return time.monotonic() - start
    raise AssertionError(f"{victim.home.name} answered nothing routed to it within {RESTART_USABLE_S} s of ready")


def test_a_server_killed_mid_stream_and_restarted_ten_times(node_factory, tiny_models, bootstrap):
    a, d, c = start_mesh(node_factory, bootstrap, "heal-server",
                         ("a", ("--model", str(tiny_models.dense))),
                         ("d", ("--model", str(tiny_models.dense))),
                         ("c", ("--client",)))
    wait_for(lambda: _servers(c) == 2, ROUTING_TIMEOUT_S, "C to see both servers of tiny-dense")
    session = _session_for(a.status()["mesh"]["peer_id"], d.status()["mesh"]["peer_id"])
    usable_after = []
    for round_ in range(RESTARTS):
        before = _served_by(a, "tiny-dense")
        stream = client_for(c).completions.create(model="tiny-dense", prompt="Once", max_tokens=MAX_TOKENS,
                                                  temperature=0, stream=True, user=session)
        chunks = []
        for chunk in stream:
            chunks.append(chunk)
            if len(chunks) == 20:
                assert _served_by(a, "tiny-dense") == before + 1, f"round {round_}: the stream is not on A"
                a.process.send_signal(signal.SIGKILL)
                a.process.wait(NODE_STOP_TIMEOUT_S)
        assert len({ch.id for ch in chunks}) == 1, f"round {round_}: the client saw more than one stream"
        assert chunks[-1].choices[0].finish_reason == "length", f"round {round_}: the stream did not complete"
        assert sum(1 for ch in chunks if ch.choices and ch.choices[0].text) == MAX_TOKENS

        a._start(a.api_port, a.console_port)
        a.wait_ready()
        usable_after.append(_answered_by(a, c, session, time.monotonic() + RESTART_USABLE_S))
    assert len(usable_after) == RESTARTS
    print(f"A answered a routed request {max(usable_after):.2f} s after ready at worst ({RESTARTS} restarts)")


def _routes(client, deadline: float) -> float:
    """Seconds until `client` answers a completion for tiny-dense through the mesh (fails at `deadline`)."""
    start = time.monotonic()
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            answer = client_for(client).completions.create(model="tiny-dense", prompt="x", max_tokens=2)
            if answer.choices and answer.choices[0].finish_reason:
                return time.monotonic() - start
        except Exception as exc:  # 503 while the view fills: try again until the deadline
            last = exc
    raise AssertionError(f"{client.home.name} routed nothing within {RESTART_USABLE_S} s of ready: {last}")


def test_a_client_killed_and_restarted_ten_times_routes_again_at_once(node_factory, tiny_models, bootstrap):
    a, c = start_mesh(node_factory, bootstrap, "heal-client",
                      ("a", ("--model", str(tiny_models.dense))),
                      ("c", ("--client",)))
    wait_for(lambda: _servers(c) == 1, ROUTING_TIMEOUT_S, "C to see A serve tiny-dense")
    routed_after = []
    for _ in range(RESTARTS):
        c.process.send_signal(signal.SIGKILL)
        c.process.wait(NODE_STOP_TIMEOUT_S)
        c._start(c.api_port, c.console_port)
        c.wait_ready()
        routed_after.append(_routes(c, time.monotonic() + RESTART_USABLE_S))
    assert _served_by(a, "tiny-dense") >= RESTARTS
    print(f"C routed {max(routed_after):.2f} s after ready at worst ({RESTARTS} restarts)")
