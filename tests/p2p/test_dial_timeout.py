"""Dials that lookups make are bounded (LOOKUP_DIAL_TIMEOUT_S, p2p/_libp2p_patches.py): a peer that never finishes
the handshake (a tarpit here; on the internet a departed address that swallows SYNs) fails the dial instead of
stalling it."""

from __future__ import annotations

import pytest
import trio
from helpers.network import network
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL_ID
from libp2p.network.exceptions import SwarmException
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from meshp2p.p2p._libp2p_patches import dial_timeout
from meshp2p.wire.identity import Identity

#: The test's own bound, so it fails fast; py-libp2p's own upgrade timeout (10 s) would end the dial much later.
TEST_DIAL_TIMEOUT_S = 0.5
#: Deadline for the whole check: well under py-libp2p's 10 s, well over the bound.
DEADLINE_S = 5.0


async def tarpit(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Accept TCP connections and never say a word."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    held: list[trio.SocketStream] = []

    async def hold(stream: trio.SocketStream) -> None:
        held.append(stream)
        await trio.sleep_forever()

    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(hold, listeners)


async def test_a_lookup_dial_to_a_silent_peer_is_cut_short():
    async with network() as net:
        node = await net.start_overlay()
        port = await net.nursery.start(tarpit)
        peer = ID.from_base58(Identity.generate().peer_id)
        node.overlay.host.get_peerstore().add_addrs(peer, [Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")], 60)
        with dial_timeout(TEST_DIAL_TIMEOUT_S), trio.fail_after(DEADLINE_S), \
                pytest.raises(SwarmException, match="timed out"):
            await node.overlay.host.new_stream(peer, [KAD_PROTOCOL_ID])
