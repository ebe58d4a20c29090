"""A bootstrap overlay (`relay_hop=True`) is a working circuit-relay v2 hop: a peer reserves a slot on it and
another peer reaches that one through it. Every host the test starts is closed on the way out, pass or fail, and
its port checked free."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import multiaddr
import trio
from helpers.network import CLOSE_S, port_is_free, stop_system_tasks
from libp2p import new_host
from libp2p.custom_types import TProtocol
from libp2p.host.basic_host import BasicHost
from libp2p.network.config import ConnectionConfig
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.tools.anyio_service import background_trio_service

from meshp2p.p2p.overlay import RELAY_LIMITS, Overlay, OverlayConfig
from meshp2p.wire.identity import Identity

ECHO = TProtocol("/meshp2p-test/echo/1.0.0")
LOOPBACK = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
TEST_S = 20.0


def tcp_ports(addrs: list[Any]) -> list[int]:
    return [int(str(addr).split("/tcp/")[1].split("/")[0]) for addr in addrs]


@asynccontextmanager
async def relay_client(ports: list[int]) -> AsyncIterator[tuple[Any, CircuitV2Transport]]:
    """A bare py-libp2p host speaking circuit relay v2 as a client; its listener and py-libp2p's system tasks
    (which outlive `host.run`) are closed on the way out, and its ports added to `ports` to be checked."""
    host = new_host(connection_config=ConnectionConfig(max_connections_per_peer=1))
    assert isinstance(host, BasicHost)
    try:
        async with host.run(LOOPBACK):
            ports += tcp_ports(host.get_addrs())
            protocol = CircuitV2Protocol(host, limits=RELAY_LIMITS, allow_hop=False)
            transport = CircuitV2Transport(host, protocol, RelayConfig(roles=RelayRole.STOP | RelayRole.CLIENT,
                                                                       limits=RELAY_LIMITS))
            async with background_trio_service(protocol):
                yield host, transport
    finally:
        with trio.move_on_after(CLOSE_S) as scope:
            scope.shield = True  # runs even when the test is being cancelled
            await stop_system_tasks(host)


async def test_peers_reach_each_other_through_the_bootstrap_relay() -> None:
    bootstrap = Overlay(Identity.generate(), OverlayConfig(relay_hop=True))
    ports: list[int] = []
    with trio.fail_after(TEST_S):
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(bootstrap.run)
                ports += tcp_ports(bootstrap.addrs())
                relay_addr = multiaddr.Multiaddr(bootstrap.addrs()[0])
                async with relay_client(ports) as (hidden, hidden_transport), \
                        relay_client(ports) as (outside, outside_transport):

                    async def echo(stream: Any) -> None:
                        await stream.write(b"echo:" + await stream.read(64))
                        await stream.close()

                    hidden.set_stream_handler(ECHO, echo)
                    await hidden.connect(info_from_p2p_addr(relay_addr))
                    reservation = await hidden.new_stream(bootstrap.peer_id, [HOP_PROTOCOL])
                    assert await hidden_transport.reserve(reservation, bootstrap.peer_id, nursery)
                    circuit = multiaddr.Multiaddr(f"{bootstrap.addrs()[0]}/p2p-circuit/p2p/{hidden.get_id()}")
                    await outside_transport.dial(circuit)
                    stream = await outside.new_stream(hidden.get_id(), [ECHO])
                    await stream.write(b"hello")
                    assert await stream.read(64) == b"echo:hello"
                    await stream.close()
            finally:
                # The bootstrap overlay and the reservation's refresh task run in this nursery: stop them too.
                nursery.cancel_scope.cancel()
    assert len(ports) == 3
    busy = [port for port in ports if not port_is_free(port)]
    assert not busy, f"ports still listening after the test: {busy}"
