"""Departures seen on connections (p2p/liveness.py, MeshService's connection watch).

- every connection gets the TCP keepalive options, read back from the kernel;
- a member whose connection closes but who is still there is redialed and stays in the view;
- a machine whose network vanishes (no FIN, no RST: its link goes down inside a network namespace) leaves the
  other's view within 10 s, long before any status keepalive could tell.
A killed node (connections closed by its exit) is tests/app/test_view_expiry.py's case.
"""

from __future__ import annotations

import os
import socket
import time

from helpers.netns import mesh_peers, node_logs, nodes_on, status_in, two_namespace_lan, wait_for_two_node_mesh
from helpers.network import Network, Node, connect_all, network, wait_for
from libp2p.peer.id import ID

from meshp2p.app.mesh_service import MeshSettings
from meshp2p.mesh.view import PEER_TIMEOUT_S
from meshp2p.p2p.liveness import DEAD_AFTER_S, KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES, tcp_socket_of
from meshp2p.wire.mesh_id import named_mesh_id

VANISH_LIMIT_S = 10.0
#: Generous for a loaded 2-core machine; the mesh forms ~2 s after both nodes are up.
MESH_WAIT_S = 60.0


async def two_members(net: Network) -> tuple[Node, Node]:
    """Two members of a fresh named mesh, the second joined through the first."""
    name = f"liveness-{os.urandom(4).hex()}"
    nodes: list[Node] = []
    for _ in range(2):
        join = tuple(addr for n in nodes for addr in n.overlay.addrs())
        nodes.append(await net.start_member(MeshSettings(mesh_id=named_mesh_id(name), secret=b"", name=name,
                                                         join_addrs=join)))
    return nodes[0], nodes[1]


async def test_every_connection_gets_tcp_keepalive():
    async with network() as net:
        nodes = [await net.start_overlay() for _ in range(2)]
        await connect_all(nodes)
        for node, other in (nodes, nodes[::-1]):
            conns = node.overlay.host.get_network().get_connections(other.overlay.peer_id)
            assert conns
            for conn in conns:
                sock = tcp_socket_of(conn)
                assert sock is not None
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE_S
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == KEEPALIVE_INTERVAL_S
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == KEEPALIVE_PROBES
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == DEAD_AFTER_S * 1000


async def test_a_member_whose_connection_closes_but_is_still_there_stays_in_the_view():
    async with network() as net:
        a, b = await two_members(net)
        assert a.service is not None and b.service is not None
        await wait_for(lambda: set(a.service.view.peers) == set(b.service.view.peers) == {a.peer_id, b.peer_id},
                       "both nodes in both views")
        b_id = ID.from_base58(b.peer_id)
        closed = list(a.overlay.host.get_network().get_connections(b_id))
        for conn in closed:
            await conn.close()
        await wait_for(lambda: not any(c in a.overlay.host.get_network().get_connections(b_id) for c in closed)
                       and a.overlay.is_connected(b_id) and b.overlay.is_connected(a.overlay.peer_id),
                       "A and B to be connected again, over a new connection")
        # The loss was looked into and the redial worked: nobody counted the other as gone.
        assert not a.service.liveness._lost and not b.service.liveness._lost
        assert set(a.service.view.peers) == set(b.service.view.peers) == {a.peer_id, b.peer_id}


def test_a_machine_whose_network_vanishes_leaves_the_view_within_10_s(tmp_path):
    assert VANISH_LIMIT_S < PEER_TIMEOUT_S, "status silence alone would be too slow: the connection must tell"
    with two_namespace_lan() as lan, nodes_on(lan, tmp_path, "--client", "--mdns", "--mesh-name", "cut") as procs:
        wait_for_two_node_mesh(lan, procs, tmp_path, MESH_WAIT_S)

        cut_at = time.monotonic()
        lan.cut(1)
        # Only an answer with no peers counts: a console that does not answer (None) says nothing about the view.
        while (status := status_in(lan.namespaces[0])) is None or mesh_peers(status):
            assert procs[0].poll() is None, f"the node that stayed exited\n{node_logs(tmp_path)}"
            assert time.monotonic() - cut_at < 3 * VANISH_LIMIT_S, \
                ("its console did not answer" if status is None else "the vanished machine is still in the view") \
                + f"\n{node_logs(tmp_path)}"
            time.sleep(0.2)
        took_s = time.monotonic() - cut_at
        assert took_s < VANISH_LIMIT_S, f"took {took_s:.1f} s\n{node_logs(tmp_path)}"
        assert procs[0].poll() is None


async def test_a_member_dropped_by_a_failed_redial_comes_back_when_connected_again():
    """A redial can fail on a machine too busy to finish it in REDIAL_TIMEOUT_S: the member leaves the view,
    and returns (with its last status) as soon as a connection to it opens again."""
    async with network() as net:
        a, b = await two_members(net)
        assert a.service is not None and b.service is not None
        await wait_for(lambda: set(a.service.view.peers) == {a.peer_id, b.peer_id}, "B in A's view")
        b_status = a.service.view.peers[b.peer_id].status

        removed: list[str] = []
        remove, redial = a.service.view.remove, a.service.liveness._redial
        redials_failed = 0

        def recording_remove(peer_id: str) -> bool:
            removed.append(peer_id)
            return remove(peer_id)

        async def first_redial_fails(peer_id: str, timeout_s: float) -> bool:
            nonlocal redials_failed
            if redials_failed == 0:
                redials_failed += 1
                return False
            return await redial(peer_id, timeout_s)

        a.service.view.remove = recording_remove  # type: ignore[method-assign]
        a.service.liveness._redial = first_redial_fails  # type: ignore[method-assign]
        b_id = ID.from_base58(b.peer_id)
        for conn in list(a.overlay.host.get_network().get_connections(b_id)):
            await conn.close()
        await wait_for(lambda: removed == [b.peer_id], "A to count B as gone after the failed redial")
        await wait_for(lambda: b.peer_id in a.service.view.peers and a.overlay.is_connected(b_id),
                       "B back in A's view, connected")
        assert a.service.view.peers[b.peer_id].status == b_status
        assert not a.service.liveness._lost
