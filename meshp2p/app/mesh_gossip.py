"""Status and demand on the mesh's gossip topics: what this node sends, and what it takes in.

- Sending: status goes out when it changes, repeated only while the node is young, plus a rare keepalive; demand
  only while there is some (mesh/cadence.py has the rules and their timings). Each gossip message costs every
  member CPU, so an idle mesh stays quiet.
- A member that appears (or comes back) gets our status straight, not through gossip (p2p/status_push.py says why):
  `welcome`, and for one back on a new connection `welcome_back`, which pushes again on its first status (it may
  have restarted, and found no handler for the first push).
- Receiving: every message was verified by the topic (p2p/gossip.py); here each sender's `seq` goes through the
  topic's ReplayGuard (shared by gossiped and pushed status), then into the view or the demand map. Our own
  messages are skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol, TypeVar

import trio

from meshp2p.mesh.cadence import DemandCadence, StatusCadence
from meshp2p.mesh.demand import DemandMap
from meshp2p.mesh.view import MeshView
from meshp2p.p2p import PeerID
from meshp2p.p2p.gossip import GossipTopic
from meshp2p.p2p.overlay import Overlay
from meshp2p.p2p.status_push import StatusPush
from meshp2p.wire.demand import DEMAND_TYPE, demand_from_body, demand_to_body
from meshp2p.wire.errors import WireError
from meshp2p.wire.gossip import GossipMessage, ReplayGuard, SequenceCounter, topic_name
from meshp2p.wire.status import STATUS_TYPE, StatusBody, status_from_body, status_to_body

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Newcomers waiting for our status; more at once hear it at the next keepalive.
_NEWCOMER_QUEUE = 256


class StatusSource(Protocol):
    """This node's status as it gossips it, built afresh on each call."""

    def __call__(self) -> StatusBody: ...


class DemandSource(Protocol):
    """This node's own request rates per model (requests per minute over the last minute), on each call."""

    def __call__(self) -> Mapping[str, float]: ...


def _status_key(status: StatusBody) -> StatusBody:
    """What of a status is worth an early send: all but the figures that drift between keepalives."""
    return replace(status, rtt_ms={}, load=0.0)


def _nothing() -> None:
    """Nobody to tell of a change."""


def _parse_status(msg: GossipMessage) -> StatusBody:
    return status_from_body(msg.body)


def _parse_demand(msg: GossipMessage) -> dict[str, float]:
    return demand_from_body(msg.body)


class MeshGossip:
    """The status and demand topics of one mesh, for one node."""

    def __init__(self, overlay: Overlay, view: MeshView, demand: DemandMap, sequence: SequenceCounter, *,
                 mesh_id: bytes, secret: bytes | None, status: StatusSource, local_demand: DemandSource,
                 clock: Callable[[], float], on_change: Callable[[], None] = _nothing) -> None:
        """`on_change`: called when a member's status or demand comes in (the console diffs its view then)."""
        self.overlay = overlay
        self.on_change = on_change
        self.view = view
        self.demand = demand
        self.status = status
        self.local_demand = local_demand
        self.clock = clock
        self.status_topic = topic_name(mesh_id, "status", secret)
        self.demand_topic = topic_name(mesh_id, "demand", secret)

        def gossip_reject(reason: str) -> None:
            overlay.rejects.add("gossip", reason)

        self.status_gossip = GossipTopic(overlay, mesh_id=mesh_id, secret=secret, topic=self.status_topic,
                                         parse=_parse_status, reject=gossip_reject, sequence=sequence, clock=clock)
        self.demand_gossip = GossipTopic(overlay, mesh_id=mesh_id, secret=secret, topic=self.demand_topic,
                                         parse=_parse_demand, reject=gossip_reject, sequence=sequence, clock=clock)
        self.status_push = StatusPush(overlay, self._apply_pushed_status)
        #: Highest `seq` accepted per sender, per topic: shared by gossip and direct status.
        self._replays = {self.status_topic: ReplayGuard(), self.demand_topic: ReplayGuard()}
        self._announce = trio.Event()
        #: Members that appeared (or came back) and get our status straight away (p2p/status_push.py).
        self._newcomers_send, self._newcomers_receive = trio.open_memory_channel[str](_NEWCOMER_QUEUE)
        #: Members back in the view on a new connection whose next status has not come yet (`_apply_status`).
        self._returned: set[str] = set()

    # -- what the other parts of the mesh service call ----------------------------------------------------

    def announce_now(self) -> None:
        """Send our status at once instead of at the next heartbeat (we just changed what we serve)."""
        self._announce.set()

    def welcome(self, peer_id: str) -> None:
        """Send our status straight to a member that just appeared in the view."""
        try:
            self._newcomers_send.send_nowait(peer_id)
        except trio.WouldBlock:
            log.debug("too many newcomers at once; %s hears our status at the next keepalive", peer_id)

    def welcome_back(self, peer_id: str) -> None:
        """A member back in the view on a new connection: our status now, and again on its first status."""
        self.welcome(peer_id)  # it may have restarted, and forgotten us
        self._returned.add(peer_id)

    def forget(self, peer_id: str) -> None:
        """A member left the view."""
        self._returned.discard(peer_id)

    # -- running ---------------------------------------------------------------------------------------

    def install(self) -> None:
        self.status_push.install()

    async def subscribe(self) -> None:
        await self.status_gossip.subscribe()
        await self.demand_gossip.subscribe()

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Subscribe first (`subscribe`); this runs the receive loops and the senders."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._receive, self.status_gossip, self._apply_status)
            nursery.start_soon(self._receive, self.demand_gossip, self._apply_demand)
            nursery.start_soon(self._heartbeat)
            nursery.start_soon(self._push_status_to_newcomers)
            nursery.start_soon(self._gossip_demand)
            task_status.started()

    # -- receiving -------------------------------------------------------------------------------------

    async def _receive(self, topic: GossipTopic[T], apply: Callable[[str, T], None]) -> None:
        """Feed verified messages of one topic to `apply(sender, parsed body)`, once each, never our own."""
        replays = self._replays[topic.topic]
        while True:
            entry = await topic.receive()
            sender = entry.message.sender
            if sender == self.view.self_id:
                continue
            try:
                replays.accept(sender, entry.message.seq)
            except WireError as exc:
                topic.reject(exc.reason)
                continue
            apply(sender, entry.value)

    def _apply_status(self, sender: str, status: StatusBody) -> None:
        self.on_change()
        if self.view.update(sender, status, self.clock()):
            log.info("peer %s joined the mesh view", sender)
            self.welcome(sender)
        elif sender in self._returned:
            # Its first status since it came back: if it restarted, its service runs now (the push made when its
            # connection opened may have found no handler yet, and our next keepalive is up to 20 s away).
            self._returned.discard(sender)
            self.welcome(sender)

    def _apply_pushed_status(self, remote: PeerID, data: bytes) -> None:
        """A status sent straight to us (p2p/status_push.py): checked like gossip, and signed by the sender."""
        try:
            entry = self.status_gossip.check(data, remote.to_bytes())
        except WireError as exc:
            self.overlay.rejects.add("status_push", exc.reason)
            return
        sender = entry.message.sender
        try:
            self._replays[self.status_topic].accept(sender, entry.message.seq)
        except WireError:
            # Gossip brought a newer status first: nothing hostile, nothing to do.
            log.debug("a pushed status of %s was older than one we had", sender)
            return
        self._apply_status(sender, entry.value)

    def _apply_demand(self, sender: str, rates: dict[str, float]) -> None:
        self.demand.apply(sender, rates, self.clock())
        self.on_change()

    # -- sending ---------------------------------------------------------------------------------------

    async def _push_status_to_newcomers(self) -> None:
        """Our current status, signed now, straight to each member that appeared in our view."""
        async with trio.open_nursery() as nursery:
            async for peer_id in self._newcomers_receive:
                data = self.status_gossip.sign(STATUS_TYPE, status_to_body(self.status()))
                nursery.start_soon(self.status_push.send, PeerID.from_base58(peer_id), data)

    async def _heartbeat(self) -> None:
        """Our status, as mesh/cadence.StatusCadence says: at start, on a change or `announce_now`, repeated while
        young, and the keepalive. (A member that appears gets it straight, from `_push_status_to_newcomers`.)"""
        cadence = StatusCadence(trio.current_time())
        while True:
            status = self.status()
            self.view.update(self.view.self_id, status, self.clock())
            cadence.observe(_status_key(status), trio.current_time())
            if cadence.due(trio.current_time()):
                await self.status_gossip.publish(STATUS_TYPE, status_to_body(status))
                cadence.sent(_status_key(status), trio.current_time())
            with trio.move_on_at(cadence.next_at(trio.current_time())):
                await self._announce.wait()
            if self._announce.is_set():
                self._announce = trio.Event()
                cadence.announce(trio.current_time())

    async def _gossip_demand(self) -> None:
        """Our request rates, as mesh/cadence.DemandCadence says."""
        cadence = DemandCadence(trio.current_time())
        while True:
            rates = self.local_demand()
            self.demand.apply(self.view.self_id, rates, self.clock())
            if cadence.report(bool(rates), trio.current_time()):
                await self.demand_gossip.publish(DEMAND_TYPE, demand_to_body(rates))
            await trio.sleep_until(cadence.next_at())
