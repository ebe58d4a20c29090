"""A bootstrap overlay (`relay_hop=True`) is a working circuit-relay v2 hop: a peer reserves a slot on it and
another peer reaches that one through it."""

from __future__ import annotations

from contextlib import AsyncExitStack

import multiaddr
import trio
from libp2p import new_host
from libp2p.custom_types import TProtocol
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


async def _relay_client(stack: AsyncExitStack):
    host = new_host(connection_config=ConnectionConfig(max_connections_per_peer=1))
    await stack.enter_async_context(host.run(LOOPBACK))
    protocol = CircuitV2Protocol(host, limits=RELAY_LIMITS, allow_hop=False)
    transport = CircuitV2Transport(host, protocol, RelayConfig(roles=RelayRole.STOP | RelayRole.CLIENT,
                                                               limits=RELAY_LIMITS))
    await stack.enter_async_context(background_trio_service(protocol))
    return host, transport


async def test_peers_reach_each_other_through_the_bootstrap_relay():
    bootstrap = Overlay(Identity.generate(), OverlayConfig(relay_hop=True))
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        await nursery.start(bootstrap.run)
        relay_addr = multiaddr.Multiaddr(bootstrap.addrs()[0])
        hidden, hidden_transport = await _relay_client(stack)
        outside, outside_transport = await _relay_client(stack)

        async def echo(stream):
            await stream.write(b"echo:" + await stream.read(64))
            await stream.close()

        hidden.set_stream_handler(ECHO, echo)
        with trio.fail_after(20):
            await hidden.connect(info_from_p2p_addr(relay_addr))
            reservation = await hidden.new_stream(bootstrap.peer_id, [HOP_PROTOCOL])
            assert await hidden_transport.reserve(reservation, bootstrap.peer_id, nursery)
            circuit = multiaddr.Multiaddr(f"{bootstrap.addrs()[0]}/p2p-circuit/p2p/{hidden.get_id()}")
            await outside_transport.dial(circuit)
            stream = await outside.new_stream(hidden.get_id(), [ECHO])
            await stream.write(b"hello")
            assert await stream.read(64) == b"echo:hello"
            await stream.close()
        nursery.cancel_scope.cancel()
