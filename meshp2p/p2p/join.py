"""`/meshp2p/join/1.0.0` over libp2p streams: the I/O around wire/join.py's handshake machines.

A peer is a *member* once a join handshake succeeded in either direction; mesh protocols (tunnels, sync)
ask `Membership.is_member` before serving anyone. Failed handshakes are counted, never fatal.

Membership lasts as long as the connection it was proved on. A peer that restarts (same identity, new process)
has forgotten everyone, so a proof made to its previous process means nothing to it: when our last connection to
a member closes it stops being a member, and when a connection to a peer that proved membership before (or that
the mesh view names: `renew`) opens again, we run the handshake again at once. The handshake is mutual, so one
successful run makes both ends members of each other, whichever of them restarted. A tunnel or RPC open that a
peer still refuses as `not_member` (the two events raced) makes the caller `ensure` membership and retry once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from meshp2p.p2p.overlay import Overlay
from meshp2p.p2p.streams import read_some
from meshp2p.wire.errors import WireError
from meshp2p.wire.gossip import TOPIC_NAMES, topic_name
from meshp2p.wire.join import JOIN_PROTOCOL_ID, FrameReader, JoinDialer, JoinListener, frame, rejection

log = logging.getLogger(__name__)

JOIN_PROTOCOL = TProtocol(JOIN_PROTOCOL_ID)
JOIN_TIMEOUT_S = 10.0
_READ_BYTES = 4096
#: Renewals waiting for their handshake; more at once are left to the retry on `not_member`.
_RENEW_QUEUE = 256


class Membership:
    """Who proved membership of our mesh, and the handshake in both directions."""

    def __init__(self, overlay: Overlay, mesh_id: bytes, secret: bytes) -> None:
        self.overlay = overlay
        self.mesh_id = mesh_id
        self.secret = secret
        self.members: set[ID] = set()
        #: Peers that proved membership at some time: a new connection to one of them renews it.
        self.known: set[ID] = set()
        self._renew_send, self._renew_receive = trio.open_memory_channel[ID](_RENEW_QUEUE)
        #: Renewals queued or running: a peer both known and in the view is asked for twice, joined once.
        self._renewing: set[ID] = set()

    @property
    def meshes(self) -> Mapping[bytes, bytes]:
        return {self.mesh_id: self.secret}

    def is_member(self, peer_id: ID) -> bool:
        return peer_id in self.members

    def install(self) -> None:
        if self.secret:  # named meshes have none, and their topics are open to anyone who knows the name
            # A private mesh's gossip reaches members only (protocols/gossip.md, "Members only").
            topics = frozenset(topic_name(self.mesh_id, name, self.secret) for name in TOPIC_NAMES)
            self.overlay.gossip_gate.guard(topics, self.is_member)
        self.overlay.serve(JOIN_PROTOCOL, self._handle, timeout_s=JOIN_TIMEOUT_S)
        self.overlay.connections.on_peer_connected.append(self._connected)
        self.overlay.connections.on_peer_lost.append(self._lost)

    def uninstall(self) -> None:
        self.overlay.connections.on_peer_connected.remove(self._connected)
        self.overlay.connections.on_peer_lost.remove(self._lost)

    def renew(self, peer_id: ID) -> None:
        """Prove membership to `peer_id` again soon (from `run_renewals`), unless it is a member already."""
        if peer_id in self.members or peer_id in self._renewing:
            return
        try:
            self._renew_send.send_nowait(peer_id)
            self._renewing.add(peer_id)
        except trio.WouldBlock:
            log.debug("too many renewals at once; %s is renewed on its first refusal", peer_id)

    async def ensure(self, peer_id: ID) -> bool:
        """A member now, by a handshake if need be (after a `not_member` refusal: its side forgot us)."""
        self.members.discard(peer_id)
        return await self.join(peer_id)

    async def run_renewals(self) -> None:
        """The handshakes `renew` asked for, each in its own task (a slow peer delays no other)."""

        async def renew_one(peer_id: ID) -> None:
            try:
                if peer_id not in self.members:
                    await self.join(peer_id)
            finally:
                self._renewing.discard(peer_id)

        async with trio.open_nursery() as nursery:
            async for peer_id in self._renew_receive:
                nursery.start_soon(renew_one, peer_id)

    def _connected(self, peer_id: ID) -> None:
        """Overlay callback: a connection opened. A peer that was a member may have restarted and forgotten us."""
        if peer_id in self.known:
            self.renew(peer_id)

    def _lost(self, peer_id: ID) -> None:
        """Overlay callback: our last connection to the peer closed; what was proved on it is gone with it."""
        self.members.discard(peer_id)

    async def join(self, peer_id: ID) -> bool:
        """Prove our membership to `peer_id` (and check theirs); True when both sides agree."""
        local, remote = self.overlay.peer_id.to_bytes(), peer_id.to_bytes()
        dialer = JoinDialer(self.mesh_id, self.secret, local_peer_id=local, remote_peer_id=remote)
        try:
            with trio.fail_after(JOIN_TIMEOUT_S):
                stream = await self.overlay.host.new_stream(peer_id, [JOIN_PROTOCOL])
                try:
                    reader = FrameReader()
                    reply: dict[str, Any] | None = dialer.hello()
                    while reply is not None:
                        await stream.write(frame(reply))
                        reply = dialer.receive(await _read_message(stream, reader))
                finally:
                    await stream.close()
        except WireError as exc:
            self.overlay.rejects.add("join", exc.reason)
            log.warning("peer %s refused or failed the join handshake: %s", peer_id, exc.message)
            return False
        except Exception as exc:
            log.debug("join handshake with %s failed: %s", peer_id, exc)
            return False
        self._admit(peer_id)
        return True

    def _admit(self, peer_id: ID) -> None:
        new = peer_id not in self.members
        self.members.add(peer_id)
        self.known.add(peer_id)
        if new:
            self.overlay.pubsub.admit(peer_id)

    async def _handle(self, stream: Any) -> None:
        remote: ID = stream.muxed_conn.peer_id
        listener = JoinListener(self.meshes, local_peer_id=self.overlay.peer_id.to_bytes(),
                                remote_peer_id=remote.to_bytes())
        reader = FrameReader()
        try:
            while not listener.joined:
                await stream.write(frame(listener.receive(await _read_message(stream, reader))))
        except WireError as exc:  # answered with the reason (protocols/join.md), then closed by Overlay.serve
            self.overlay.rejects.add("join", exc.reason)
            log.info("refused a join from %s: %s", remote, exc.message)
            await stream.write(frame(rejection(exc.reason)))
            return
        self._admit(remote)


async def _read_message(stream: Any, reader: FrameReader) -> dict[str, Any]:
    """The next framed message; a hang-up before it is a malformed handshake."""
    pending: list[dict[str, Any]] = []
    while not pending:
        data = await read_some(stream, _READ_BYTES)
        if not data:
            raise WireError("truncated", "the peer closed the stream mid-handshake")
        pending = reader.feed(data)
    if len(pending) > 1:
        raise WireError("malformed", "unexpected extra message in the handshake")
    return pending[0]
