"""Knowing at once, and for free, when a peer's connection dies.

A mesh view used to learn that a member vanished only from the silence of its status gossip: a keepalive every
3 s, dropped after 7 s. Each gossip message costs every member ~2 ms of CPU in py-libp2p (receive, verify, forward
~D copies), so that keepalive was most of an idle node's CPU, growing with the mesh. Members hold a direct
connection to each other anyway (tunnels, RTT probes), so the connection itself is the better signal:

- a peer whose process exits or is killed: its kernel closes the socket and we see the connection close at once;
- a peer whose machine or network vanishes: the kernel's TCP keepalive probes go unanswered (or sent data stays
  unacknowledged) and the kernel gives up after about DEAD_AFTER_S. The probes cost no Python CPU at all.

`ConnectionWatcher` sets those socket options on every new connection and tells its listeners the peer ID of
every peer whose last connection closed. What follows from a closed connection (redial, leave the view) is the
mesh's business (meshp2p/app/mesh_liveness.py).

The price of DEAD_AFTER_S being short: a network blackout longer than that (a Wi-Fi roam) drops the connection,
and the peer leaves views until its next status or a redial brings it back.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import weakref
from collections.abc import Callable
from typing import Any

import trio
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.peer.id import ID
from multiaddr import Multiaddr

log = logging.getLogger(__name__)

#: Idle seconds before the first keepalive probe, seconds between probes, unanswered probes before giving up.
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES = 2, 1, 3
#: How long sent data may stay unacknowledged (or probes unanswered) before the kernel drops the connection.
DEAD_AFTER_S = 5
#: How deep to look through py-libp2p's connection layers (swarm conn -> yamux -> noise -> raw -> TCP stream).
_MAX_LAYERS = 8
_LAYER_ATTRS = ("muxed_conn", "secured_conn", "conn", "stream")


def tcp_socket_of(conn: object) -> Any | None:
    """The trio socket under a libp2p connection, or None (a relayed connection has no socket of its own)."""
    layer: object | None = conn
    for _ in range(_MAX_LAYERS):
        if isinstance(layer, trio.SocketStream):
            return layer.socket
        layer = next((getattr(layer, a) for a in _LAYER_ATTRS if getattr(layer, a, None) is not None), None)
        if layer is None:
            return None
    return None


def enable_keepalive(sock: Any) -> bool:
    """Turn on fast TCP keepalive and a user timeout; False where the platform lacks the options (then only a
    closed socket or status silence tells that a peer vanished)."""
    options = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        # TCP_KEEPIDLE is Linux's name; macOS calls the same option TCP_KEEPALIVE.
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None)),
         KEEPALIVE_IDLE_S),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), KEEPALIVE_INTERVAL_S),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), KEEPALIVE_PROBES),
        # Linux only: bounds both unacknowledged data and unanswered probes.
        (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", None), DEAD_AFTER_S * 1000),
    ]
    applied = True
    for level, option, value in options:
        if option is None:
            applied = False
            continue
        try:
            sock.setsockopt(level, option, value)
        except OSError as exc:
            log.debug("setsockopt(%s, %s) failed: %s", level, option, exc)
            applied = False
    return applied


class ConnectionWatcher(INotifee):
    """A py-libp2p notifee: keepalive on every new connection; `on_peer_connected` callbacks for every new
    connection, `on_peer_lost` ones when a peer's last connection closes (called synchronously: listeners hand
    any work to their own tasks)."""

    def __init__(self, network: INetwork) -> None:
        self._network = network
        self.on_peer_connected: list[Callable[[ID], None]] = []
        self.on_peer_lost: list[Callable[[ID], None]] = []
        self._sockets: weakref.WeakSet[Any] = weakref.WeakSet()

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        sock = tcp_socket_of(conn)
        if sock is not None:
            enable_keepalive(sock)
            self._sockets.add(sock)
        _call(self.on_peer_connected, conn.muxed_conn.peer_id)

    def close_sockets(self) -> int:
        """Close every socket of a connection we were told about that is still open; returns how many.

        For a stopping overlay, after closing its connections: py-libp2p can lose track of one (a simultaneous
        dial from both ends, deduplicated differently on each side) and would leave its socket open, the peer
        then holding a live connection to a stopped node. A process that exits closes them anyway."""
        still_open = [s for s in self._sockets if s.fileno() != -1]
        for sock in still_open:
            sock.close()
        return len(still_open)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        peer_id = conn.muxed_conn.peer_id
        remaining = [c for c in self._network.get_connections(peer_id) if c is not conn and not _closed(c)]
        if not remaining:
            _call(self.on_peer_lost, peer_id)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None


def _call(listeners: list[Callable[[ID], None]], peer_id: ID) -> None:
    for listener in list(listeners):
        try:
            listener(peer_id)
        except Exception:  # a listener's bug must not break py-libp2p's connection handling
            log.exception("connection listener failed")


def _closed(conn: Any) -> bool:
    with contextlib.suppress(Exception):
        return bool(conn.muxed_conn.is_closed)
    return False
