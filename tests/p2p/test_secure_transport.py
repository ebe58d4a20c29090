"""An Overlay speaks Noise only: peers offering plaintext or secio get no connection, in either direction.

py-libp2p's default host also accepts `/plaintext/2.0.0` and secio (probe s9 in shared/notes); the overlay must
not, or a man in the middle could downgrade every connection to cleartext.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import multiaddr
import pytest
import trio
from helpers.network import network, stop_system_tasks
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.security.secio.transport import ID as SECIO_PROTOCOL_ID
from libp2p.security.secio.transport import Transport as SecioTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

LOOPBACK = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
#: A refused security negotiation ends in milliseconds on loopback; this only bounds a hang.
DIAL_S = 10.0

Security = Callable[[KeyPair], dict[TProtocol, Any]]


def plaintext(key_pair: KeyPair) -> dict[TProtocol, Any]:
    return {TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(key_pair)}


def secio(key_pair: KeyPair) -> dict[TProtocol, Any]:
    return {TProtocol(SECIO_PROTOCOL_ID): SecioTransport(key_pair)}


def noise(key_pair: KeyPair) -> dict[TProtocol, Any]:
    return {NOISE_PROTOCOL_ID: NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)}


@asynccontextmanager
async def peer_host(security: Security) -> AsyncIterator[Any]:
    """A bare libp2p host (not an Overlay) offering only `security`, with yamux like the overlay."""
    key_pair = create_new_key_pair()
    host = new_host(key_pair=key_pair, sec_opt=security(key_pair), muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
                    connection_config=ConnectionConfig(max_connections_per_peer=1))
    # A refused negotiation is final; retrying it (3 times by default) only slows the test.
    host.get_network().retry_config = RetryConfig(max_retries=0)
    try:
        async with host.run([LOOPBACK]):
            yield host
    finally:
        with trio.move_on_after(DIAL_S, shield=True):
            await stop_system_tasks(host)


async def dial(host: Any, addr: str) -> str | None:
    """None if `host` got a connection to `addr`, else why not; a refusal must come back, not hang."""
    with trio.fail_after(DIAL_S):
        try:
            await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(addr)))
        except Exception as exc:
            return f"{exc!r} caused by {exc.__cause__!r}"
    return None


@pytest.mark.parametrize("security", [plaintext, secio], ids=lambda s: s.__name__)
async def test_a_peer_without_noise_cannot_connect_to_an_overlay(security: Security):
    async with network() as net:
        overlay = (await net.start_overlay()).overlay
        async with peer_host(security) as peer:
            refused = await dial(peer, overlay.addrs()[0])
            assert refused is not None and "failed to negotiate the secure protocol" in refused, refused
            assert overlay.peer_id not in peer.get_connected_peers()
            assert peer.get_id() not in overlay.connected_peers()
            # Nor does the overlay talk down to the peer when it dials out itself.
            assert await overlay.connect(str(peer.get_addrs()[0])) is None
            assert peer.get_id() not in overlay.connected_peers()


async def test_noise_peers_connect_both_ways_and_open_streams():
    async with network() as net:
        overlay = (await net.start_overlay()).overlay
        async with peer_host(noise) as dialer, peer_host(noise) as listener:
            assert await dial(dialer, overlay.addrs()[0]) is None
            assert dialer.get_id() in overlay.connected_peers()
            assert await overlay.connect(str(listener.get_addrs()[0])) is not None
            assert overlay.peer_id in listener.get_connected_peers()
            # The connection is usable end to end: identify answers over it.
            with trio.fail_after(DIAL_S):
                stream = await dialer.new_stream(overlay.peer_id, [TProtocol("/ipfs/id/1.0.0")])
                assert await stream.read(65536)
                await stream.close()
