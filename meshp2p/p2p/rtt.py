"""Round-trip times to peers, measured on the overlay itself (`/meshp2p/ping/1.0.0`).

libp2p's own ping reports whole milliseconds, too coarse to rank loopback or LAN peers; this echoes a
32-byte payload over one reused stream per peer and times it with trio's clock. The planner (80 ms cap) and
the router use these figures; they are gossiped in the status message. Only members are answered
(protocols/ping.md): an outsider's stream is closed unread and counted as `ping:not_member`, so a peer without the
secret cannot even learn how fast a member answers.
"""

from __future__ import annotations

import logging
import os
import statistics
from collections.abc import Callable
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from meshp2p.p2p.overlay import Overlay
from meshp2p.p2p.streams import reset_quietly

log = logging.getLogger(__name__)

PING_PROTOCOL = TProtocol("/meshp2p/ping/1.0.0")
PING_BYTES = 32
PINGS_PER_PROBE = 3
PROBE_TIMEOUT_S = 5.0
#: A ping stream idle this long is closed by the answering side.
PING_IDLE_S = 120.0


class RttProbe:
    def __init__(self, overlay: Overlay, *, is_member: Callable[[ID], bool]) -> None:
        self.overlay = overlay
        self.is_member = is_member
        self._streams: dict[ID, Any] = {}

    def install(self) -> None:
        self.overlay.serve(PING_PROTOCOL, self._echo)

    async def measure(self, peer: ID) -> float | None:
        """Median RTT in ms over a few echoes, or None when the peer does not answer in time."""
        samples: list[float] = []
        with trio.move_on_after(PROBE_TIMEOUT_S):
            try:
                stream = self._streams.get(peer)
                if stream is None:
                    stream = await self.overlay.host.new_stream(peer, [PING_PROTOCOL])
                    self._streams[peer] = stream
                for _ in range(PINGS_PER_PROBE):
                    payload = os.urandom(PING_BYTES)
                    start = trio.current_time()
                    await stream.write(payload)
                    echoed = b""
                    while len(echoed) < PING_BYTES:
                        echoed += await stream.read(PING_BYTES - len(echoed))
                    if echoed != payload:
                        raise ValueError("the peer echoed something else")
                    samples.append((trio.current_time() - start) * 1000)
            except Exception as exc:
                log.debug("ping %s failed: %s", peer, exc)
                await self._forget(peer)
                return None
        if len(samples) < PINGS_PER_PROBE:
            await self._forget(peer)
            return None
        return statistics.median(samples)

    async def _forget(self, peer: ID) -> None:
        stream = self._streams.pop(peer, None)
        if stream is not None:
            await reset_quietly(stream)

    async def _echo(self, stream: Any) -> None:
        """Echo a member's pings until it leaves (then Overlay.serve resets) or idles; an outsider's stream is
        closed unread."""
        remote: ID = stream.muxed_conn.peer_id
        if not self.is_member(remote):
            self.overlay.rejects.add("ping", "not_member")
            log.info("refused a ping from %s: not a member of the mesh", remote)
            return
        while True:
            with trio.move_on_after(PING_IDLE_S) as idle:
                data = await stream.read(PING_BYTES)
            if idle.cancelled_caught or not data:
                return
            await stream.write(data)
