"""How members leave the view, and come back: on connections, not in gossip silence.

Every member keeps a connection to every member of its view (`_keep_connected`); when the last one to a member
closes and a redial within REDIAL_TIMEOUT_S fails, the member leaves the view at once (mesh/view.py has the whole
rule, p2p/liveness.py the kernel's side). A member that left that way is kept PEER_TIMEOUT_S with its last status:
one we connect to again (it dials us, or our retries reach it) is back in the view at once, and proves membership
again on the new connection (it may have restarted: p2p/join.py). Silence still counts too: a member
whose status stops for PEER_TIMEOUT_S expires (`_expire`), which catches one we cannot connect to at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import trio

from meshp2p.mesh.liveness import RedialSchedule
from meshp2p.mesh.view import EXPIRE_CHECK_S, PEER_TIMEOUT_S, MeshView
from meshp2p.p2p import PeerID
from meshp2p.p2p.join import Membership
from meshp2p.p2p.overlay import DIAL_TIMEOUT_S, Overlay
from meshp2p.wire.status import StatusBody

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

#: After a member's last connection closed: how long a redial may take before the member counts as gone.
#: A closed process refuses at once; a vanished machine takes the whole time.
REDIAL_TIMEOUT_S = 2.0
#: Addresses tried at once in a redial (a status lists up to 16).
MAX_REDIAL_ADDRS = 8
#: Connection losses waiting to be looked at; more at once (a whole LAN gone) fall back to status expiry.
_LOST_QUEUE = 256


class Returning(Protocol):
    """Who hears of members coming and going here (the gossip part: app/mesh_gossip.py)."""

    def welcome_back(self, peer_id: str) -> None: ...

    def forget(self, peer_id: str) -> None: ...


class Remeasured(Protocol):
    """Who measures members again once they are back on a new connection (app/mesh_rtt.py)."""

    def forget(self, peer_id: str) -> None: ...


@dataclass(frozen=True)
class _Lost:
    """A member that left the view on a lost connection: when (trio clock), and what it last said."""

    at: float
    status: StatusBody


class MeshLiveness:
    """Connection watch, redials and expiry for one mesh view."""

    def __init__(self, overlay: Overlay, view: MeshView, membership: Membership, *, returning: Returning,
                 rtts: Remeasured, clock: Callable[[], float]) -> None:
        self.overlay = overlay
        self.view = view
        self.membership = membership
        self.returning = returning
        self.rtts = rtts
        self.clock = clock
        self._lost_send, self._lost_receive = trio.open_memory_channel[PeerID](_LOST_QUEUE)
        #: Members that left because their connection was lost, with when (trio clock) and their last status.
        #: Kept PEER_TIMEOUT_S: one we connect to again (it dials us, or our retries reach it) is back in the
        #: view at once; a late status of theirs brings them back only if we can connect to them again.
        self._lost: dict[str, _Lost] = {}

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Hear of the overlay's connections (opened, last one lost) while the block runs."""
        connections = self.overlay.connections
        connections.on_peer_lost.append(self._peer_lost)
        connections.on_peer_connected.append(self._peer_connected)
        try:
            yield
        finally:
            connections.on_peer_lost.remove(self._peer_lost)
            connections.on_peer_connected.remove(self._peer_connected)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Within `watching()`: expiry, the look into each lost connection, and the redials."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._expire)
            nursery.start_soon(self._watch_connections)
            nursery.start_soon(self._keep_connected)
            task_status.started()

    async def _expire(self) -> None:
        while True:
            await trio.sleep(EXPIRE_CHECK_S)
            for peer_id in self.view.expire(self.clock()):
                log.info("peer %s left the mesh view (silent for too long)", peer_id)
                self.returning.forget(peer_id)
            forget_before = trio.current_time() - PEER_TIMEOUT_S
            for peer_id in [p for p, lost in self._lost.items() if lost.at < forget_before]:
                del self._lost[peer_id]

    # -- connections: how departures are seen ------------------------------------------------------------

    def _peer_lost(self, peer: PeerID) -> None:
        """Overlay callback (synchronous, inside py-libp2p's cleanup): our last connection to `peer` closed."""
        if str(peer) in self.view.peers:
            try:
                self._lost_send.send_nowait(peer)
            except trio.WouldBlock:
                log.debug("too many connection losses at once; %s is left to status expiry", peer)

    def _peer_connected(self, peer: PeerID) -> None:
        """Overlay callback: a connection to `peer` opened. A member we counted as gone is back, and a member of
        the view proves membership again on the new connection (it may have restarted: p2p/join.py)."""
        if str(peer) in self.view.peers or str(peer) in self._lost:
            self.membership.renew(peer)
        lost = self._lost.pop(str(peer), None)
        if lost is not None and str(peer) not in self.view.peers:
            self.view.update(str(peer), lost.status, self.clock())
            log.info("peer %s is back in the mesh view (connected again)", peer)
            self.returning.welcome_back(str(peer))
            self.rtts.forget(str(peer))  # a new connection, perhaps a new process: measured again at once

    async def _watch_connections(self) -> None:
        """A member's last connection closed: redial it; if that fails, it left (the rule in mesh/view.py).
        A redial that failed only because this machine was too busy heals itself: `_keep_connected` keeps
        trying the lost, and `_peer_connected` puts them back."""

        async def confirm_gone(peer_id: str) -> None:
            if await self._redial(peer_id, REDIAL_TIMEOUT_S):
                return
            peer = self.view.peers.get(peer_id)
            if peer is not None and self.view.remove(peer_id):
                self._lost[peer_id] = _Lost(trio.current_time(), peer.status)
                log.info("peer %s left the mesh view (connection lost)", peer_id)

        async with trio.open_nursery() as nursery:
            async for peer in self._lost_receive:
                nursery.start_soon(confirm_gone, str(peer))

    async def _keep_connected(self) -> None:
        """Hold a connection to every member of the view (that is how we see it leave), and retry those that
        left on a lost connection for a while: dial those we are not connected to, with backoff while they
        fail. A member that left on a lost connection and came back in a late status message leaves again if
        it cannot be dialed."""
        schedule = RedialSchedule(trio.current_time())

        async def dial(peer_id: str) -> None:
            if await self._redial(peer_id, DIAL_TIMEOUT_S):
                schedule.reached(peer_id)
                return
            if peer_id in self._lost and self.view.remove(peer_id):
                log.info("peer %s left the mesh view again (gone, but a late status named it)", peer_id)
            schedule.failed(peer_id, trio.current_time())

        def connected(peer_id: str) -> bool:
            return self.overlay.is_connected(PeerID.from_base58(peer_id))

        while True:
            await trio.sleep_until(schedule.next_at())
            wanted = (set(self.view.peers) | set(self._lost)) - {self.view.self_id}
            due = schedule.due(wanted, connected, trio.current_time())
            async with trio.open_nursery() as nursery:
                for peer_id in due:
                    nursery.start_soon(dial, peer_id)

    async def _redial(self, peer_id: str, timeout_s: float) -> bool:
        """Connected to `peer_id` again (or still): by its own dial in the meantime, or ours to the addresses
        its status gave and those the peerstore knows."""
        peer_key = PeerID.from_base58(peer_id)
        if self.overlay.is_connected(peer_key):
            return True
        peer = self.view.peers.get(peer_id) or self._lost.get(peer_id)
        addrs = list(dict.fromkeys([*(peer.status.addrs if peer is not None else ()),
                                    *self.overlay.known_addrs(peer_key)]))
        if not addrs:
            return False
        reached = await self.overlay.connect_many(addrs[:MAX_REDIAL_ADDRS], refresh=False, timeout_s=timeout_s)
        return bool(reached) or self.overlay.is_connected(peer_key)
