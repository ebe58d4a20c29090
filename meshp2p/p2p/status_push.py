"""A status message straight to one peer: `/meshp2p/status/1.0.0` (protocols/gossip.md, "Direct status").

A member that just appeared must learn every other member's status. Each member broadcasting its status on the
gossip topic whenever someone new appears would cost every member a copy of each of those N messages: N² copies
per join, N³ for a mesh that grows to N one node at a time (at 50 members on one 2-core machine, minutes of
saturated CPU). Instead each member sends its status to the newcomer alone, over one short stream: N messages
per join, each handled by two nodes.

The stream carries one frame (4-byte length, then exactly the bytes a status gossip message would carry) and
is closed. The receiver checks it like gossip and also that the stream's peer signed it: nobody forwards
another's status here. This module only moves bytes; checking and applying is the caller's (`on_status`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from meshp2p.p2p.overlay import Overlay
from meshp2p.p2p.streams import read_one_frame
from meshp2p.wire.framing import SingleFrameReader, frame_bytes
from meshp2p.wire.gossip import MAX_GOSSIP_BYTES

log = logging.getLogger(__name__)

STATUS_PUSH_PROTOCOL = TProtocol("/meshp2p/status/1.0.0")
#: Opening the stream, writing (or reading) one frame: a peer that stalls longer is dropped.
PUSH_TIMEOUT_S = 5.0


class StatusPush:
    """Send our status to one peer; hand each status received this way to `on_status(sender, data)`."""

    def __init__(self, overlay: Overlay, on_status: Callable[[ID, bytes], None]) -> None:
        self.overlay = overlay
        self.on_status = on_status

    def install(self) -> None:
        self.overlay.serve(STATUS_PUSH_PROTOCOL, self._receive, rejects_as="status_push")

    async def send(self, peer: ID, data: bytes) -> bool:
        """True once the frame is written; False (logged) if the peer could not be reached in time."""
        try:
            with trio.fail_after(PUSH_TIMEOUT_S):
                stream = await self.overlay.host.new_stream(peer, [STATUS_PUSH_PROTOCOL])
                try:
                    await stream.write(frame_bytes(data, max_bytes=MAX_GOSSIP_BYTES))
                finally:
                    await stream.close()
        except Exception as exc:
            log.debug("status push to %s failed: %s", peer, exc)
            return False
        return True

    async def _receive(self, stream: Any) -> None:
        """One frame, handed on; a bad frame (counted by Overlay.serve) or a stall (counted here) ends in a reset."""
        try:
            with trio.fail_after(PUSH_TIMEOUT_S):
                payload = await read_one_frame(stream, SingleFrameReader(max_bytes=MAX_GOSSIP_BYTES))
        except trio.TooSlowError:
            self.overlay.rejects.add("status_push", "timeout")
            raise
        self.on_status(stream.muxed_conn.peer_id, payload)
